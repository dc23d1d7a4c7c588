"""The groups panel: each group and under it its members, with their state, applied delay, volume and channel
role; the member under the cursor is what the delay, volume and role keys change, a group row's volume is the
group sink's own."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from pwgroup.text import safe_text
from pwgroup.tui.view import GroupRow, MemberRow

# Most important first: at 80 columns the table scrolls sideways to the rest.
COLUMNS = ("GROUP / MEMBER", "STATE", "DELAY", "TRIM", "VOLUME", "ROLE", "HEALTH")
STATE_STYLE = {"playing": "green", "absent": "red", "unlinked": "yellow", "not built": "yellow"}


def _ms(value: float | None, signed: bool = False) -> Text:
    if value is None:
        return Text("-", justify="right")
    return Text(f"{value:+.1f} ms" if signed else f"{value:.1f} ms", justify="right")


def _percent(value: float | None) -> Text:
    return Text("-" if value is None else f"{value * 100:.0f}%", justify="right")


def group_volume_text(g: GroupRow) -> Text:
    """The group sink's own volume, or "muted" (its monitor, and so every member, is silent)."""
    if g.muted:
        return Text("muted", style="bold yellow", justify="right")
    return _percent(g.volume)


def group_note(g: GroupRow) -> Text:
    """What apps call the group, and the description waiting for the sink to be built again."""
    note = Text(f'apps see "{safe_text(g.description, 40)}"' if g.built else "")
    if g.wanted_description is not None:
        note += Text(f' ("{safe_text(g.wanted_description, 40)}" once rebuilt)', style="yellow")
    return note


def group_cells(g: GroupRow) -> list[Text]:
    state = "built" if g.built else "not built"
    if not g.in_config:
        state += ", not in config"
    # A name read from the graph (a group made by hand) is not checked like the config's: shown literally too.
    return [
        Text(safe_text(g.name, 48), style="bold"),
        Text(state, style="" if g.built else "yellow"),
        Text(""),
        Text(""),
        group_volume_text(g),
        Text(""),
        group_note(g),
    ]


def member_cells(m: MemberRow) -> list[Text]:
    return [
        Text("  ") + Text(safe_text(m.name, 28)),
        Text(m.state, style=STATE_STYLE.get(m.state, "")),
        _ms(m.delay_ms),
        _ms(m.trim_ms, signed=True),
        _percent(m.volume),
        Text(m.channels or "-"),
        Text(m.health, style="yellow" if m.health else ""),
    ]


def row_key(group: str, speaker: str | None = None) -> str:
    return f"g\0{group}" if speaker is None else f"m\0{group}\0{speaker}"


class GroupsTable(DataTable[Text]):
    # Here, not on the screen: the table's own left/right would come first.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("plus,equals_sign,right", "screen.trim(1)", "Trim +1 ms", key_display="+"),
        Binding("minus,left", "screen.trim(-1)", "Trim -1 ms", key_display="-"),
        Binding("shift+right", "screen.trim(10)", "+10 ms", show=False),
        Binding("shift+left", "screen.trim(-10)", "-10 ms", show=False),
        Binding("right_square_bracket", "screen.volume(0.05)", "Volume +5%", show=False, key_display="]"),
        Binding("left_square_bracket", "screen.volume(-0.05)", "Volume -5%", show=False, key_display="["),
        Binding("o", "screen.cycle_role", "Channel role", show=False),
        Binding("delete", "screen.remove_member", "Remove member", show=False),
    ]

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", **kwargs)  # type: ignore[arg-type]

    def on_mount(self) -> None:
        self.add_columns(*COLUMNS)

    def show(self, groups: tuple[GroupRow, ...]) -> None:
        current = self.current()
        self.clear()
        keys = []
        for g in groups:
            keys.append(row_key(g.name))
            self.add_row(*group_cells(g), key=keys[-1])
            for m in g.members:
                keys.append(row_key(g.name, m.speaker))
                self.add_row(*member_cells(m), key=keys[-1])
        if current is not None and row_key(*current) in keys:
            self.move_cursor(row=keys.index(row_key(*current)))

    def current(self) -> tuple[str, str | None] | None:
        """(group, member key or None) under the cursor."""
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        if key is None:
            return None
        kind, group, *rest = str(key).split("\0")
        return group, (rest[0] if kind == "m" else None)
