"""A one-line banner over the dashboard while the sound server is lost; hidden otherwise."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class Banner(Static):
    def show_problem(self, text: str | None) -> None:
        self.set_class(text is not None, "-shown")
        self.update(Text(text or ""))
