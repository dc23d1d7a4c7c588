"""Small modal dialogs: ask for a group name, confirm a deletion."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

from pwgroup.model import GROUP_NAME_RE


class NameDialog(ModalScreen[str | None]):
    """Asks for a new group's name; Enter accepts a valid one, Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, prompt: str) -> None:
        super().__init__()
        self.prompt = prompt

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(self.prompt))
            yield Input(placeholder="living-room", id="name")
            yield Label(Text("letters, digits, '-' or '_'; Enter to create, Escape to cancel"), classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if GROUP_NAME_RE.match(event.value):
            self.dismiss(event.value)
        else:
            self.query_one(".hint", Label).update(Text("not a valid group name: use 1-48 letters, digits, - or _"))


class ConfirmDialog(ModalScreen[bool]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "dismiss(True)", "Yes"),
        Binding("n,escape", "dismiss(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(self.question))
            yield Label(Text("y: yes   n: no"), classes="hint")
