"""The member strip under the groups panel: the member under the groups cursor, and buttons a mouse can click to
trim its delay (-10/-1/+1/+10 ms, while it plays), change its volume and cycle its channel role. The buttons run
the same actions as the keys; they never take the focus from the table."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, Label

from pwgroup.text import safe_text
from pwgroup.tui.view import MemberRow

# (label, action on the screen, id): trim first, the reason the strip exists (the mouse trim).
BUTTONS = (
    ("-10", "screen.trim(-10)", "trim-minus-10"),
    ("-1", "screen.trim(-1)", "trim-minus-1"),
    ("+1", "screen.trim(1)", "trim-plus-1"),
    ("+10", "screen.trim(10)", "trim-plus-10"),
    ("vol-", "screen.volume(-0.05)", "volume-down"),
    ("vol+", "screen.volume(0.05)", "volume-up"),
    ("role", "screen.cycle_role", "role"),
)
IDLE = "trim: pick a member"


def strip_text(member: MemberRow | None) -> Text:
    """What the strip says about the member under the cursor: its name (literally) and its trim."""
    if member is None:
        return Text(IDLE, style="dim")
    trim = "-" if member.trim_ms is None else f"{member.trim_ms:+.1f} ms"
    return Text(safe_text(member.name, 20)) + Text(f" trim {trim}", style="dim")


class MemberStrip(Horizontal):
    def compose(self) -> ComposeResult:
        yield Label(strip_text(None), id="member-name")
        for label, action, ident in BUTTONS:
            button = Button(label, action=action, id=ident, compact=True)
            button.can_focus = False  # a click acts; the keyboard stays in the table
            yield button

    def show(self, member: MemberRow | None) -> None:
        self.query_one("#member-name", Label).update(strip_text(member))
