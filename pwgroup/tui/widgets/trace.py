"""A member's measured impulse response, drawn in a few rows of the terminal: the direct sound near the left
edge (marked), then what the room adds. Block characters, or plain ASCII where the terminal has no Unicode."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widget import Widget

from pwgroup.calibrate.estimator import TRACE_BEFORE_MS, TRACE_BIN_MS, TRACE_FLOOR_DB

BLOCKS = " ▁▂▃▄▅▆▇█"
ASCII = " .:-=+*#@"
ROWS = 3


def plot_rows(trace: Sequence[float], rows: int = ROWS, ascii_only: bool = False) -> list[str]:
    """`trace` (dB under the peak, floored at -TRACE_FLOOR_DB) as `rows` lines of bars, top line first. Pure."""
    ramp = ASCII if ascii_only else BLOCKS
    steps = len(ramp) - 1
    heights = [round(max(0.0, 1.0 + v / TRACE_FLOOR_DB) * rows * steps) for v in trace]
    lines = []
    for row in range(rows - 1, -1, -1):
        lines.append("".join(ramp[min(steps, max(0, h - row * steps))] for h in heights))
    return lines


def axis(width: int, ascii_only: bool = False) -> str:
    """The line under the plot: the arrival marked, then a tick every 10 ms after it."""
    line = [" "] * width
    at = round(TRACE_BEFORE_MS / TRACE_BIN_MS)
    if at < width:
        line[at] = "^" if ascii_only else "▲"
    for ms in range(10, 1000, 10):
        i = at + round(ms / TRACE_BIN_MS)
        label = f"+{ms}"
        if i + len(label) > width:
            break
        line[i : i + len(label)] = label
    return "".join(line)


class TracePlot(Widget):
    DEFAULT_CSS = """
    TracePlot {
        height: 4;
        width: auto;
    }
    """

    def __init__(self, trace: Sequence[float], ascii_only: bool = False, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.trace = tuple(trace)
        self.ascii_only = ascii_only

    def get_content_width(self, container: object, viewport: object) -> int:  # type: ignore[override]
        return max(1, len(self.trace))

    def render(self) -> Text:
        if not self.trace:
            return Text("not heard: nothing to plot", style="dim")
        out = Text()
        for line in plot_rows(self.trace, ascii_only=self.ascii_only):
            out.append(line + "\n", style="green")
        out.append(axis(len(self.trace), self.ascii_only), style="dim")
        return out
