"""The dashboard app, thin: its bindings, its screens, one stylesheet, and the command palette's entries."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen

from pwgroup.tui.screens.dashboard import DashboardScreen
from pwgroup.tui.screens.help import HelpScreen
from pwgroup.tui.state import Source, now_text


class PwgroupApp(App[None]):
    CSS_PATH = "pwgroup.tcss"
    TITLE = "pwgroup"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
    ]

    def __init__(self, source: Source, clock: Callable[[], str] = now_text) -> None:
        super().__init__()
        self.source = source
        self.clock = clock

    def get_default_screen(self) -> Screen[None]:
        return DashboardScreen()

    async def on_unmount(self) -> None:
        await self.source.close()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:  # type: ignore[type-arg]
        yield from super().get_system_commands(screen)
        if not isinstance(screen, DashboardScreen):
            return
        yield SystemCommand("New group", "a group from the marked speakers", screen.action_new_group)
        yield SystemCommand("Connect speaker", "the one under the cursor", lambda: screen.action_bluetooth("connect"))
        yield SystemCommand(
            "Disconnect speaker", "the one under the cursor", lambda: screen.action_bluetooth("disconnect")
        )
        yield SystemCommand("Trust speaker", "the one under the cursor", lambda: screen.action_bluetooth("trust"))
        yield SystemCommand("Untrust speaker", "the one under the cursor", lambda: screen.action_bluetooth("untrust"))
        yield SystemCommand("Scan for speakers", "discover, then pair, trust and connect one", screen.action_scan)
        yield SystemCommand("Trim +1 ms", "the member under the cursor", lambda: screen.action_trim(1.0))
        yield SystemCommand("Trim -1 ms", "the member under the cursor", lambda: screen.action_trim(-1.0))
        yield SystemCommand("Trim +10 ms", "the member under the cursor", lambda: screen.action_trim(10.0))
        yield SystemCommand("Trim -10 ms", "the member under the cursor", lambda: screen.action_trim(-10.0))
        for g in screen.snapshot.groups if screen.snapshot else ():
            yield SystemCommand(f"Delete group {g.name}", "and everything it made", _bind(screen, g.name))
        yield SystemCommand("Help", "every key of the dashboard", self.action_help)


def _bind(screen: DashboardScreen, name: str) -> Callable[[], None]:
    return lambda: screen.action_delete_group(name)


def run(env: dict[str, str] | None = None) -> int:
    """`pwgroup` with no command: the dashboard on the session's sound server."""
    import os

    from pwgroup.tui.state import LiveSource

    PwgroupApp(LiveSource(os.environ if env is None else env)).run()
    return 0
