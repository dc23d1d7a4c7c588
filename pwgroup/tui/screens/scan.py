"""The scan view: BlueZ discovers while it is open and devices are listed as they are heard; Enter pairs, trusts and
connects the one under the cursor (`pwgroup pair`, then `pwgroup connect`). Names are Text, never markup."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from pwgroup.model import PwgroupError
from pwgroup.text import safe_text
from pwgroup.tui.view import FoundRow, pairing_text
from pwgroup.tui.widgets.events import EventLog

if TYPE_CHECKING:
    from pwgroup.tui.app import PwgroupApp

# At 80 columns NAME, ADDRESS, RSSI, KIND and PAIRING fit; LINK scrolls into view.
COLUMNS = ("NAME", "ADDRESS", "RSSI", "KIND", "PAIRING", "LINK")
HINT = "Discovering: devices appear as BlueZ hears them. Enter pairs, trusts and connects; Escape stops and closes."


def found_cells(row: FoundRow) -> list[Text]:
    return [
        Text(safe_text(row.name or "(no name)", 24)),
        Text(row.address),
        Text("-" if row.rssi is None else str(row.rssi), justify="right"),
        Text("speaker" if row.audio_sink else "other", style="" if row.audio_sink else "dim"),
        Text(pairing_text(row.paired, row.trusted), style="" if row.paired else "bold"),
        Text("connected" if row.connected else "-", style="green" if row.connected else ""),
    ]


class Found(Message):
    """What the scan hears now: every row, in order."""

    def __init__(self, rows: tuple[FoundRow, ...]) -> None:
        super().__init__()
        self.rows = rows


class FoundTable(DataTable[Text]):
    # Enter pairs (the table's own Enter would only select the row); a mouse click on a row still selects it.
    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "screen.pair", "Pair, trust, connect")]

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]
        self.rows_shown: dict[str, FoundRow] = {}

    def on_mount(self) -> None:
        self.add_columns(*COLUMNS)

    def show(self, rows: tuple[FoundRow, ...]) -> None:
        """Replace the rows, keeping the cursor on the same device."""
        current = self.current_row()
        self.rows_shown = {r.address: r for r in rows}
        self.clear()
        for r in rows:
            self.add_row(*found_cells(r), key=r.address)
        if current is not None and current.address in self.rows_shown:
            self.move_cursor(row=self.get_row_index(current.address))

    def current_row(self) -> FoundRow | None:
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return self.rows_shown.get(str(key)) if key is not None else None


class ScanScreen(Screen[None]):
    """`pair(address, name)` starts the pairing (it outlives this screen); `log(level, text)` writes the
    dashboard's event log, whose lines this screen shows too while it is open."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Stop and close")]

    def __init__(self, pair: Callable[[str, str], None], log: Callable[[str, str], None]) -> None:
        super().__init__()
        self._pair = pair
        self._log = log

    @property
    def pw_app(self) -> PwgroupApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield self.pw_app.header()
        yield Static(Text(HINT), id="scan-hint", classes="hint")
        found = FoundTable(id="found")
        found.border_title = "Found"
        yield found
        log = EventLog(self.pw_app.clock, id="scan-events")
        log.border_title = "Events"
        yield log
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "scan"
        self.query_one(FoundTable).focus()
        self._log("info", "discovering: put the speaker in pairing mode")
        self.run_worker(self._scan(), group="scan", exit_on_error=False)

    async def _scan(self) -> None:
        try:
            await self.pw_app.source.scan(self._publish)
        except PwgroupError as err:
            self._log("error", f"scan: {err.message}")
        except Exception as err:  # the dashboard stays up; the log says what broke
            self._log("error", f"scan: {type(err).__name__}: {err}")

    def _publish(self, rows: tuple[FoundRow, ...]) -> None:
        self.post_message(Found(rows))

    def on_found(self, message: Found) -> None:
        self.query_one(FoundTable).show(message.rows)

    def log_line(self, level: str, text: str) -> None:
        for log in self.query(EventLog):  # none yet while the screen is being composed
            log.add(level, text)

    def action_pair(self) -> None:
        row = self.query_one(FoundTable).current_row()
        if row is None:
            self._log("warning", "nothing found yet: put the speaker in pairing mode and wait for it here")
            return
        self._pair(row.address, row.name)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_pair()  # a click on the row under the cursor

    def action_close(self) -> None:
        self.workers.cancel_group(self, "scan")  # the scan's own cleanup stops discovery
        self._log("info", "discovery stopped")
        self.dismiss()
