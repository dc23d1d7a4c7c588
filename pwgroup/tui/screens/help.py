"""The `?` screen: every key of the dashboard (kept beside the bindings by hand; the footer shows the rest)."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = [
    ("space", "mark or unmark the speaker under the cursor"),
    ("n", "new group from the marked speakers (or the one under the cursor)"),
    ("d", "delete the group under the cursor in the groups panel"),
    ("c / x", "connect / disconnect the speaker under the cursor (through BlueZ)"),
    ("k", "calibrate the group under the cursor with the microphone (then a: apply, escape: cancel)"),
    ("t / u", "trust / untrust the speaker under the cursor (a trusted one may connect by itself)"),
    ("s", "scan: find speakers nearby; Enter pairs, trusts and connects one; Escape stops and closes"),
    ("+ / -", "trim the member under the cursor by 1 ms, while it plays"),
    ("right / left", "the same"),
    ("shift+right / shift+left", "trim by 10 ms"),
    ("tab / shift+tab", "move between the speakers table and the groups panel"),
    ("[ / ]", "volume -5% / +5%: of the member under the cursor, or of the group's sink on a group row"),
    ("m", "mute or unmute the group under the cursor (its sink: every member)"),
    ("o", "channel role of the member under the cursor: both, left, right, mono"),
    ("r", "rename the group under the cursor (what apps show; its name stays)"),
    ("a", "add the speaker under the cursor in the speakers table to a group"),
    ("delete", "remove the member under the cursor from its group (asks first)"),
    ("mouse", "click a row, then the strip under the groups: -10 -1 +1 +10 ms trim, vol- vol+, role"),
    ("ctrl+p", "command palette: every action by name"),
    ("?", "this help"),
    ("q", "quit (the groups stay as they are)"),
]


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        for key, text in HELP:
            table.add_row(key, text)
        with VerticalScroll(classes="dialog", id="help"):
            yield Static("pwgroup dashboard: keys", classes="title")
            yield Static(table)
            yield Static(
                "Edits go to config.toml, like the CLI's; the daemon applies them when it runs, else the dashboard "
                "does. Escape closes this.",
                classes="hint",
            )
