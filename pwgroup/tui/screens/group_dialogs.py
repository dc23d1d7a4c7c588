"""Dialogs for editing a group: its description (what apps show) and which group a speaker joins."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from pwgroup.model import UserError
from pwgroup.text import safe_text


class DescriptionDialog(ModalScreen[str | None]):
    """Asks for a group's new description (free text: it is what apps show); Enter accepts, Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, group: str, current: str) -> None:
        super().__init__()
        self.group = group
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(f"Rename group {safe_text(self.group, 48)}: what should apps call it?"))
            # The value of an Input is plain text, never markup; control characters (from a sink made by hand)
            # are shown, and kept, as visible escapes.
            yield Input(value=safe_text(self.current, 256), id="description")
            yield Label(
                Text("the group's name (and its sink pwgroup.NAME) stays; Enter to rename, Escape to cancel"),
                classes="hint",
            )

    def on_input_submitted(self, event: Input.Submitted) -> None:
        from pwgroup.edits import check_description

        try:
            self.dismiss(check_description(event.value))
        except UserError as err:
            self.query_one(".hint", Label).update(Text(err.message))


class GroupChoiceDialog(ModalScreen[str | None]):
    """Asks which group a speaker joins; Enter picks, Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, prompt: str, groups: list[str], preferred: str | None = None) -> None:
        super().__init__()
        self.prompt = prompt
        self.groups = groups
        self.preferred = preferred

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(self.prompt))
            # A name read from the graph (a group made by hand) is shown literally, like everywhere else.
            yield OptionList(*(Option(Text(safe_text(g, 48)), id=g) for g in self.groups), id="groups-choice")
            yield Label(Text("Enter to add, Escape to cancel"), classes="hint")

    def on_mount(self) -> None:
        choice = self.query_one(OptionList)
        if self.preferred in self.groups:
            choice.highlighted = self.groups.index(self.preferred)
        choice.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)
