"""The dashboard: speakers, groups and the event log, kept current by the data layer's messages."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer

from pwgroup.model import PwgroupError
from pwgroup.text import safe_text
from pwgroup.tui.messages import DataUpdate
from pwgroup.tui.screens.dialogs import ConfirmDialog, NameDialog
from pwgroup.tui.screens.scan import ScanScreen
from pwgroup.tui.source import LogLine, ServerLost, StateUpdate, Update
from pwgroup.tui.view import Snapshot, banner_lines, events_between
from pwgroup.tui.widgets.banner import Banner
from pwgroup.tui.widgets.events import EventLog
from pwgroup.tui.widgets.groups import GroupsTable
from pwgroup.tui.widgets.member import MemberStrip
from pwgroup.tui.widgets.speakers import SpeakersTable

if TYPE_CHECKING:
    from pwgroup.tui.app import PwgroupApp


class DashboardScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "new_group", "New group"),
        Binding("d", "delete_group", "Delete group"),
        Binding("c", "bluetooth('connect')", "Connect", show=False),  # in ? and the palette: 80 columns
        Binding("x", "bluetooth('disconnect')", "Disconnect", show=False),
        Binding("k", "calibrate", "Calibrate"),
        Binding("a", "add_to_group", "Add to group", show=False),
        Binding("m", "mute_group", "Mute group", show=False),
        Binding("r", "rename_group", "Rename group", show=False),
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
        yield self.pw_app.header()
        yield Banner(id="banner")
        speakers = SpeakersTable(id="speakers")
        speakers.border_title = "Speakers"
        yield speakers
        groups = GroupsTable(id="groups")
        groups.border_title = "Groups"
        yield groups
        yield MemberStrip(id="member-strip")
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
        if snap.daemon is None:
            daemon = "no daemon: edits applied here"
        elif snap.daemon == os.getpid():
            daemon = "no daemon: this dashboard keeps the groups while it is open"
        else:
            daemon = f"daemon pid {snap.daemon} applies edits"
        self.sub_title = f"{snap.backend}: {daemon}"
        self.query_one(SpeakersTable).show(snap.speakers)
        self.query_one(GroupsTable).show(snap.groups)
        self._show_member()

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
        name = self._group_here(name, "delete it")
        if name is None:
            return
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

    def action_calibrate(self, name: str | None = None, method: str | None = None) -> None:
        """Open the calibration screen for the group under the cursor (or `name`)."""
        from pwgroup.tui.screens.calibrate import CalibrationScreen

        name = self._group_here(name, "calibrate it")
        if name is None:
            return
        group = self.snapshot.group(name) if self.snapshot else None
        names = {m.speaker: m.name for m in group.members} if group else {}

        def ended(line: str | None) -> None:
            if line:
                self.log_line("info", line)

        self.app.push_screen(CalibrationScreen(name, names, method), ended)

    # ------------------------------------------------------------ group editing: volume, role, mute, name, members
    def _member_here(self, what: str) -> tuple[str, str, str] | None:
        """(group, member key, name) under the groups cursor, or None with a word in the log."""
        where = self.query_one(GroupsTable).current()
        if where is None or where[1] is None:
            self.log_line("warning", f"move the cursor to a group member to {what}")
            return None
        member = self.snapshot.member(where[0], where[1]) if self.snapshot else None
        return where[0], where[1], member.name if member else where[1]

    def _group_here(self, name: str | None, what: str) -> str | None:
        if name is not None:
            return name
        where = self.query_one(GroupsTable).current()
        if where is None:
            self.log_line("warning", f"no group under the cursor: move to one in the groups panel to {what}")
            return None
        return where[0]

    def _show_member(self) -> None:
        where = self.query_one(GroupsTable).current()
        member = None
        if where is not None and where[1] is not None and self.snapshot is not None:
            member = self.snapshot.member(where[0], where[1])
        self.query_one(MemberStrip).show(member)

    def on_data_table_row_highlighted(self, event: GroupsTable.RowHighlighted) -> None:
        if isinstance(event.data_table, GroupsTable):
            self._show_member()

    def action_volume(self, delta: float) -> None:
        """Volume of the member under the groups cursor (config.toml), or of the group's sink on a group row."""
        where = self.query_one(GroupsTable).current()
        if where is None:
            self.log_line("warning", "move the cursor to a group or a member to change its volume")
            return
        group, speaker = where
        if speaker is None:
            self._edit(
                f"group {group} volume",
                lambda: self.pw_app.source.group_volume(group, delta),
                lambda v: None if v is None else f"group {group}: volume {v * 100:.0f}%",
            )
            return
        member = self.snapshot.member(group, speaker) if self.snapshot else None
        name = member.name if member else speaker
        self._edit(
            f"volume of {name}",
            lambda: self.pw_app.source.member_volume(group, speaker, delta),
            lambda v: None if v is None else f"group {group}: {name} volume {v * 100:.0f}%",
        )

    def action_cycle_role(self) -> None:
        here = self._member_here("change its channel role")
        if here is None:
            return
        group, speaker, name = here
        self._edit(
            f"channel role of {name}",
            lambda: self.pw_app.source.cycle_channels(group, speaker),
            lambda role: None if role is None else f"group {group}: {name} plays {role}",
        )

    def action_mute_group(self, name: str | None = None) -> None:
        group = self._group_here(name, "mute it")
        if group is None:
            return
        self._edit(
            f"mute group {group}",
            lambda: self.pw_app.source.group_mute(group),
            lambda muted: None if muted is None else f"group {group} " + ("muted" if muted else "unmuted"),
        )

    def action_rename_group(self, name: str | None = None) -> None:
        from pwgroup.tui.screens.group_dialogs import DescriptionDialog

        group = self._group_here(name, "rename it")
        if group is None:
            return
        row = self.snapshot.group(group) if self.snapshot else None
        current = (row.wanted_description or row.description) if row else group

        def rename(description: str | None) -> None:
            if not description:
                return

            def done(now: bool) -> str:
                if now:
                    return f"group {group}: apps now see it as {description!r}"
                return (
                    f"group {group}: {description!r} saved; apps see it once the group's sink is built again "
                    "(apps play to it now: re-creating it would cut them)"
                )

            self._edit(f"rename group {group}", lambda: self.pw_app.source.rename_group(group, description), done)

        self.app.push_screen(DescriptionDialog(group, current), rename)

    def action_add_to_group(self) -> None:
        """Add the speaker under the cursor in the speakers table to a group (asked for when there are several)."""
        from pwgroup.tui.screens.group_dialogs import GroupChoiceDialog

        row = self.query_one(SpeakersTable).current_row()
        if row is None:
            self.log_line("warning", "move the cursor to a speaker in the speakers table to add it to a group")
            return
        names = [g.name for g in self.snapshot.groups] if self.snapshot else []
        if not names:
            self.log_line("warning", "no group yet: mark speakers with space and press n to make one")
            return
        key, name = row.key, row.name

        def add(group: str | None) -> None:
            if group:
                self._edit(
                    f"add {name} to group {group}",
                    lambda: self.pw_app.source.add_member(group, key),
                    lambda _: f"{name} added to group {group}",
                )

        if len(names) == 1:
            add(names[0])
            return
        where = self.query_one(GroupsTable).current()
        self.app.push_screen(
            GroupChoiceDialog(f"Add {safe_text(name, 28)} to which group?", names, where[0] if where else None), add
        )

    def action_remove_member(self) -> None:
        here = self._member_here("remove it from its group")
        if here is None:
            return
        group, speaker, name = here

        def remove(yes: bool | None) -> None:
            if yes:
                self._edit(
                    f"remove {name} from group {group}",
                    lambda: self.pw_app.source.remove_member(group, speaker),
                    lambda _: f"{name} removed from group {group}",
                )

        self.app.push_screen(ConfirmDialog(f"Remove {safe_text(name, 28)} from group {safe_text(group, 48)}?"), remove)

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
