"""The data layer's updates as Textual messages: the screen never polls, it is told."""

from __future__ import annotations

from textual.message import Message

from pwgroup.tui.source import Update


class DataUpdate(Message):
    """A snapshot, a lost sound server, or a line for the event log."""

    def __init__(self, update: Update) -> None:
        super().__init__()
        self.update = update
