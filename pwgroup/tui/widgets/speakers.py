"""The speakers table: every speaker PipeWire or BlueZ knows, with its group membership; space marks speakers
for a new group. Names come from the air: they are Text objects, never markup."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from pwgroup.text import safe_text
from pwgroup.tui.view import SpeakerRow, pairing_text

# The most wanted first: at 80 columns the table scrolls sideways to the rest. REPORTED is BlueZ's Delay, MEASURED
# the calibrated latency (config.toml), DELAY the one applied to its member element.
COLUMNS = (
    "",
    "NAME",
    "ADDRESS",
    "STATE",
    "BATTERY",
    "PAIRING",
    "GROUP",
    "REPORTED",
    "MEASURED",
    "DELAY",
    "CODEC",
)


def _ms(value: float | None) -> Text:
    return Text("-" if value is None else f"{value:.1f} ms", justify="right")


def speaker_cells(row: SpeakerRow, marked: bool) -> list[Text]:
    state = row.connection if row.present or row.connection != "unknown" else "absent"
    style = "green" if row.present else "dim"
    return [
        Text("*" if marked else " ", style="bold"),
        Text(safe_text(row.name, 28)),
        Text(row.address or "-"),
        Text(safe_text(state, 30), style=style),
        _battery(row.battery),
        Text(pairing_text(row.paired, row.trusted)),
        Text(safe_text(", ".join(row.groups) or "-", 24)),
        _ms(row.reported_ms),
        _ms(row.measured_ms),
        _ms(row.delay_ms),
        Text(safe_text(row.codec or "-", 10)),
    ]


def _battery(percent: int | None) -> Text:
    if percent is None:
        return Text("-", justify="right")
    return Text(f"{percent} %", justify="right", style="red" if percent <= 15 else "")


class SpeakersTable(DataTable[Text]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("space", "toggle_mark", "Mark")]

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]
        self.marked: set[str] = set()
        self.rows_shown: dict[str, SpeakerRow] = {}

    def on_mount(self) -> None:
        self.add_columns(*COLUMNS)

    def show(self, speakers: tuple[SpeakerRow, ...]) -> None:
        """Replace the rows, keeping the cursor on the same speaker and marks on speakers still listed."""
        current = self.current_key()
        self.rows_shown = {s.key: s for s in speakers}
        self.marked &= set(self.rows_shown)
        self.clear()
        for s in speakers:
            self.add_row(*speaker_cells(s, s.key in self.marked), key=s.key)
        if current in self.rows_shown:
            self.move_cursor(row=self.get_row_index(current))

    def current_key(self) -> str | None:
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return str(key) if key is not None else None

    def current_row(self) -> SpeakerRow | None:
        key = self.current_key()
        return self.rows_shown.get(key) if key is not None else None

    def action_toggle_mark(self) -> None:
        key = self.current_key()
        if key is None:
            return
        self.marked ^= {key}
        self.update_cell(key, self.ordered_columns[0].key, Text("*" if key in self.marked else " ", style="bold"))
        self.move_cursor(row=self.cursor_row + 1)

    def chosen(self) -> list[str]:
        """The marked speakers in table order, or the one under the cursor when none is marked."""
        if self.marked:
            return [k for k in self.rows_shown if k in self.marked]
        key = self.current_key()
        return [key] if key else []
