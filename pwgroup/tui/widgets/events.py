"""The event log: members going and returning, edits made, errors. Lines are Text, never markup."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.widgets import RichLog

from pwgroup.text import safe_text

MAX_LINES = 500
LEVEL_STYLE = {"info": "", "warning": "yellow", "error": "bold red"}


class EventLog(RichLog):
    def __init__(self, clock: Callable[[], str], **kwargs: object) -> None:
        super().__init__(wrap=True, markup=False, max_lines=MAX_LINES, **kwargs)  # type: ignore[arg-type]
        self.clock = clock
        self.lines_text: list[str] = []  # what was logged, plain: for tests and the help of a bug report

    def add(self, level: str, text: str) -> None:
        shown = safe_text(text)
        self.lines_text = [*self.lines_text[-(MAX_LINES - 1) :], shown]
        line = Text(f"{self.clock()} ", style="dim") + Text(shown, style=LEVEL_STYLE.get(level, ""))
        # The log's own width once known: measured against the console alone, a line wraps at its width, which
        # under a test harness (and some terminals at start) is not the widget's.
        self.write(line, width=self.scrollable_content_region.width or None)
