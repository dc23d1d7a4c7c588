"""The dashboard app, thin: its bindings, its screens, one stylesheet, and the command palette's entries."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.color import Color
from textual.content import Content
from textual.filter import LineFilter
from textual.screen import Screen
from textual.widgets import Header

from pwgroup.tui.screens.dashboard import DashboardScreen
from pwgroup.tui.screens.help import HelpScreen
from pwgroup.tui.source import Source
from pwgroup.tui.view import now_text


class PwgroupApp(App[None]):
    CSS_PATH = "pwgroup.tcss"
    TITLE = "pwgroup"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
    ]

    def __init__(self, source: Source, clock: Callable[[], str] = now_text, ascii_only: bool = False) -> None:
        super().__init__()
        self.source = source
        self.clock = clock
        self.ascii_only = ascii_only  # plain ASCII for terminals without Unicode: see wants_ascii

        if ascii_only:
            self._filters.append(AsciiOnly())  # Textual's post-render line filters: the last word on every cell

    def on_mount(self) -> None:
        self.set_class(self.ascii_only, "-ascii")

    def header(self) -> Header:
        """The screens' header, its icon plain in ASCII mode."""
        return Header(icon="*" if self.ascii_only else None)

    def get_default_screen(self) -> Screen[None]:
        return DashboardScreen()

    async def on_unmount(self) -> None:
        await self.source.close()

    def format_title(self, title: str, sub_title: str) -> Content:
        return (
            Content.assemble(title, (" - ", "dim"), Content(sub_title).stylize("dim")) if sub_title else Content(title)
        )

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
            for method, how in CALIBRATION_METHODS:
                yield SystemCommand(f"Calibrate group {g.name} ({method})", how, _calibrate(screen, g.name, method))
        yield from _group_commands(screen)
        yield SystemCommand("Help", "every key of the dashboard", self.action_help)


def _bind(screen: DashboardScreen, name: str) -> Callable[[], None]:
    return lambda: screen.action_delete_group(name)


CALIBRATION_METHODS = (
    ("sweep", "one sweep through the group, heard by the microphone"),
    ("fast", "every member at once, each with its own probe"),
    ("reported", "no microphone: what BlueZ or PipeWire report, a guess"),
)


def _calibrate(screen: DashboardScreen, name: str, method: str) -> Callable[[], None]:
    return lambda: screen.action_calibrate(name, method)


def wants_ascii(env: Mapping[str, str]) -> bool:
    """PWGROUP_ASCII=1 or 0 decides; else plain ASCII unless the locale's character set is UTF-8."""
    said = env.get("PWGROUP_ASCII", "").strip().lower()
    if said in ("1", "yes", "true", "on"):
        return True
    if said in ("0", "no", "false", "off"):
        return False
    locale = env.get("LC_ALL") or env.get("LC_CTYPE") or env.get("LANG") or ""
    return "utf-8" not in locale.lower() and "utf8" not in locale.lower()


class _Ascii(dict[int, str]):
    """A str.translate table: box drawing and blocks to their ASCII look-alikes, anything else non-ASCII to as
    many '?' as the cells it takes (so every line keeps its width)."""

    LOOKS: ClassVar[dict[str, str]] = {
        "-": "─━═╌╍┄┅┈┉╴╶╸╺—–‒",
        "|": "│┃║╎╏┆┇┊┋╵╷╹╻▏▕",
        "+": "┌┐└┘├┤┬┴┼╭╮╰╯┏┓┗┛┣┫┳┻╋╔╗╚╝╠╣╦╩╬",
        "#": "█▉▊▋▌▍▎▐▀▄▆▇▅▃▂▁▔▖▗▘▝▚▞▙▛▜▟■▪",
        "~": "…",
        ".": "·•",
        "^": "▲↑",
        "v": "▼↓",
        "<": "◀←",
        ">": "▶→",
        "o": "⭘○●",
        " ": "\xa0",
    }

    def __init__(self) -> None:
        super().__init__({ord(c): plain for plain, chars in self.LOOKS.items() for c in chars})

    def __missing__(self, code: int) -> str:
        if code < 0x80:
            return chr(code)
        self[code] = "?" * cell_len(chr(code))
        return self[code]


class AsciiOnly(LineFilter):
    """Every cell the dashboard draws in plain ASCII, whoever drew it (our widgets, Textual's, a name)."""

    table = _Ascii()

    def apply(self, segments: list[Segment], background: Color) -> list[Segment]:
        return [
            s if s.control or s.text.isascii() else Segment(s.text.translate(self.table), s.style, s.control)
            for s in segments
        ]


def run(env: Mapping[str, str] | None = None, ascii_only: bool | None = None) -> int:
    """`pwgroup` with no command: the dashboard on the session's sound server."""
    import os

    from pwgroup.tui.live import LiveSource

    env = os.environ if env is None else env
    PwgroupApp(LiveSource(env), ascii_only=wants_ascii(env) if ascii_only is None else ascii_only).run()
    return 0


def _group_commands(screen: DashboardScreen) -> Iterable[SystemCommand]:
    """The palette's group editing entries: volume, role, members; mute and rename for each group."""
    under = "the member under the cursor, or the group's sink on a group row"
    yield SystemCommand("Volume +5%", under, lambda: screen.action_volume(0.05))
    yield SystemCommand("Volume -5%", under, lambda: screen.action_volume(-0.05))
    yield SystemCommand("Channel role", "the next of both, left, right, mono", screen.action_cycle_role)
    yield SystemCommand("Add speaker to group", "the one under the cursor", screen.action_add_to_group)
    yield SystemCommand("Remove member", "the one under the cursor, from its group", screen.action_remove_member)
    for g in screen.snapshot.groups if screen.snapshot else ():
        name = g.name
        yield SystemCommand(
            f"Mute or unmute group {name}", "its sink: every member", _act(screen.action_mute_group, name)
        )
        yield SystemCommand(f"Rename group {name}", "what apps show", _act(screen.action_rename_group, name))


def _act(action: Callable[[str], None], name: str) -> Callable[[], None]:
    return lambda: action(name)
