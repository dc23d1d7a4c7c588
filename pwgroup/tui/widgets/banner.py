"""A banner over the dashboard while something is lost (the sound server, BlueZ) or wrong (the config), one line
per problem; hidden otherwise."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class Banner(Static):
    def show_problem(self, text: str | None) -> None:
        self.set_class(text is not None, "-shown")
        self.update(Text(text or ""))

    def show_lines(self, lines: list[str]) -> None:
        self.set_class(bool(lines), "-shown")
        self.update(Text("\n".join(lines)))
