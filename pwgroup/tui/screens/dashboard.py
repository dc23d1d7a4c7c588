"""The dashboard: speakers, groups and the event log, kept current by the data layer's messages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Header

from pwgroup.model import PwgroupError
from pwgroup.tui.messages import DataUpdate
from pwgroup.tui.screens.dialogs import ConfirmDialog, NameDialog
from pwgroup.tui.screens.scan import ScanScreen
from pwgroup.tui.state import LogLine, ServerLost, Snapshot, StateUpdate, Update, banner_lines, events_between
from pwgroup.tui.widgets.banner import Banner
from pwgroup.tui.widgets.events import EventLog
from pwgroup.tui.widgets.groups import GroupsTable
from pwgroup.tui.widgets.speakers import SpeakersTable

if TYPE_CHECKING:
    from pwgroup.tui.app import PwgroupApp


class DashboardScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "new_group", "New group"),
        Binding("d", "delete_group", "Delete group"),
        Binding("c", "bluetooth('connect')", "Connect", show=False),  # in ? and the palette: 80 columns
        Binding("x", "bluetooth('disconnect')", "Disconnect", show=False),
        Binding("t", "bluetooth('trust')", "Trust", show=False),
        Binding("u", "bluetooth('untrust')", "Untrust", show=False),
        Binding("s", "scan", "Scan"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.snapshot: Snapshot | None = None
        self.server_lost: str | None = None  # why the sound server is lost, while it is

    @property
    def pw_app(self) -> PwgroupApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Banner(id="banner")
        speakers = SpeakersTable(id="speakers")
        speakers.border_title = "Speakers"
        yield speakers
        groups = GroupsTable(id="groups")
        groups.border_title = "Groups"
        yield groups
        log = EventLog(self.pw_app.clock, id="events")
        log.border_title = "Events"
        yield log
        yield Footer()

    def on_mount(self) -> None:
        self.run_worker(self.pw_app.source.run(self._publish), group="observe", exit_on_error=False)

    def _publish(self, update: Update) -> None:
        self.post_message(DataUpdate(update))

    # ------------------------------------------------------------ updates
    def on_data_update(self, message: DataUpdate) -> None:
        update = message.update
        if isinstance(update, StateUpdate):
            self._show(update.snapshot)
        elif isinstance(update, ServerLost):
            self.server_lost = update.reason
            self.query_one(Banner).show_lines(banner_lines(self.server_lost, self.snapshot))
            self.log_line("error", f"sound server lost: {update.reason}")
        elif isinstance(update, LogLine):
            self.log_line(update.level, update.text)

    def _show(self, snap: Snapshot) -> None:
        if snap == self.snapshot and not self.query_one(Banner).has_class("-shown"):
            return  # an idle poll: nothing to redraw
        for level, text in events_between(self.snapshot, snap):
            self.log_line(level, text)
        # A snapshot means the server answers: the banner goes, or says what is wrong with the config or BlueZ.
        self.server_lost = None
        self.query_one(Banner).show_lines(banner_lines(None, snap))
        if (self.snapshot is None or self.snapshot.bluetooth != snap.bluetooth) and snap.bluetooth:
            self.log_line("warning", f"{snap.bluetooth}; showing the sound server's view only")
        elif self.snapshot is not None and self.snapshot.bluetooth and not snap.bluetooth:
            self.log_line("info", "Bluetooth back: BlueZ answers")
        self.snapshot = snap
        daemon = f"daemon pid {snap.daemon} applies edits" if snap.daemon else "no daemon: edits applied here"
        self.sub_title = f"{snap.backend} · {daemon}"
        self.query_one(SpeakersTable).show(snap.speakers)
        self.query_one(GroupsTable).show(snap.groups)

    def log_line(self, level: str, text: str) -> None:
        self.query_one(EventLog).add(level, text)
        for screen in self.app.screen_stack:
            if isinstance(screen, ScanScreen):  # its outcomes are read there while it is open
                screen.log_line(level, text)

    # ------------------------------------------------------------ actions
    def _edit(self, what: str, run: Callable[[], Awaitable[Any]], done: Callable[[Any], str | None]) -> None:
        """Run an edit in a worker: the screen stays live while the graph converges; the outcome is logged."""

        async def go() -> None:
            try:
                result = await run()
            except PwgroupError as err:
                self.log_line("error", f"{what}: {err.message}")
            except Exception as err:  # the dashboard stays up; the log says what broke
                self.log_line("error", f"{what}: {type(err).__name__}: {err}")
            else:
                text = done(result)
                if text:
                    self.log_line("info", text)

        self.run_worker(go(), group="edit", exit_on_error=False)

    def action_new_group(self) -> None:
        keys = self.query_one(SpeakersTable).chosen()
        if not keys:
            self.log_line("warning", "no speakers: mark some with space first")
            return

        def create(name: str | None) -> None:
            if not name:
                return
            self._edit(
                f"create group {name}",
                lambda: self.pw_app.source.create_group(name, keys),
                lambda _: f"group {name} created from {len(keys)} speaker(s): play to 'pwgroup.{name}'",
            )
            self.query_one(SpeakersTable).marked.clear()

        self.app.push_screen(NameDialog(f"New group from {len(keys)} speaker(s): name?"), create)

    def action_delete_group(self, name: str | None = None) -> None:
        if name is None:
            where = self.query_one(GroupsTable).current()
            if where is None:
                self.log_line("warning", "no group under the cursor: move to one in the groups panel")
                return
            name = where[0]
        chosen = name

        def delete(yes: bool | None) -> None:
            if yes:
                self._edit(
                    f"delete group {chosen}",
                    lambda: self.pw_app.source.delete_group(chosen),
                    lambda _: None,  # the next snapshot logs "group NAME deleted"
                )

        self.app.push_screen(ConfirmDialog(f"Delete group {chosen} and everything it made?"), delete)

    def action_bluetooth(self, action: str) -> None:
        """Connect or disconnect the speaker under the cursor in the speakers table."""
        row = self.query_one(SpeakersTable).current_row()
        if row is None or row.address is None:
            self.log_line("warning", f"{action}: move the cursor to a Bluetooth speaker (one with an address)")
            return
        address, name = row.address, row.name
        self._edit(
            f"{action} {name}",
            lambda: self.pw_app.source.bluetooth(action, address),
            lambda _: f"{name} {action}ed",
        )

    def action_trim(self, delta: float) -> None:
        where = self.query_one(GroupsTable).current()
        if where is None or where[1] is None:
            self.log_line("warning", "move the cursor to a group member to trim its delay")
            return
        group, speaker = where[0], where[1]
        member = self.snapshot.member(group, speaker) if self.snapshot else None
        name = member.name if member else speaker

        def done(trim: float | None) -> str | None:
            return None if trim is None else f"group {group}: {name} trim {trim:+.1f} ms"

        self._edit(
            f"trim {name}",
            lambda: self.pw_app.source.trim(group, speaker, delta),
            done,
        )

    # ------------------------------------------------------------ Bluetooth: scan and pair
    def action_scan(self) -> None:
        if not any(isinstance(s, ScanScreen) for s in self.app.screen_stack):
            self.app.push_screen(ScanScreen(self.pair_found, self.log_line))

    def pair_found(self, address: str, name: str) -> None:
        """Pair, trust and connect a device the scan found, in a worker of this screen: it goes on if the scan
        view closes."""
        self.log_line("info", f"pairing {name} ({address})...")
        self._edit(
            f"pair {name}",
            lambda: self.pw_app.source.pair(address),
            lambda _: f"{name} paired, trusted and connected",
        )
