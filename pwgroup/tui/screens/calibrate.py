"""The calibration screen: a group measured through its microphone while the screen shows the progress, then
each member's result (latency, delay, confidence, the verification residual) and its impulse response; `a`
keeps the result, Escape puts the delays back as they were."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, ProgressBar, Static

from pwgroup.model import PwgroupError
from pwgroup.text import safe_text
from pwgroup.tui.widgets.trace import TracePlot

if TYPE_CHECKING:
    from pwgroup.tui.app import PwgroupApp

COLUMNS = ("SPEAKER", "STATUS", "LATENCY", "DELAY", "CONF.", "RESIDUAL")
STATUS_STYLE = {"ok": "green", "not-heard": "red", "clipped": "red", "absent": "yellow", "reported": "yellow"}


def _num(value: float | None, unit: str, fmt: str = ".2f") -> Text:
    if value is None or not math.isfinite(value):
        return Text("-", justify="right")
    return Text(f"{value:{fmt}} {unit}", justify="right")


def result_cells(member: Any, name: str) -> list[Text]:
    return [
        Text(safe_text(name, 20)),
        Text(member.status, style=STATUS_STYLE.get(member.status, "")),
        _num(member.latency_ms, "ms"),
        _num(member.delay_ms, "ms"),
        _num(member.snr_db, "dB", ".0f"),
        _num(member.residual_ms, "ms", "+.3f"),
    ]


def verdict(report: Any) -> tuple[str, bool]:
    """What the result comes to, in one line, and whether it can be kept."""
    worst = report.worst_residual_ms
    if report.method == "reported":
        return "delays set from reported latencies: a guess, not measured (often 100 ms off)", True
    if not report.applied:
        spread = "could not be measured" if worst is None else f"are still {worst:.1f} ms apart"
        return f"verification failed: the speakers {spread}; check the microphone's placement and measure again", False
    skipped = sum(1 for m in report.members if m.status != "ok")
    tail = f"; {skipped} member(s) kept their delay" if skipped else ""
    return f"measured after alignment: speakers within {worst:.3f} ms of each other{tail}", True


class CalibrationScreen(Screen[str | None]):
    """Dismissed with a line for the event log (what was kept or put back), or None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "keep", "Apply"),
        Binding("r", "again", "Measure again"),
        Binding("escape", "discard", "Cancel"),
    ]

    def __init__(self, group: str, names: Mapping[str, str], method: str | None = None) -> None:
        super().__init__()
        self.group = group
        self.names = dict(names)
        self.method = method
        self.report: Any = None
        self.measuring = False
        self.ending = False
        self._worker: Any = None

    @property
    def pw_app(self) -> PwgroupApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield self.pw_app.header()
        with VerticalScroll(id="calibration"):
            yield Static(Text(f"Calibrating group {safe_text(self.group, 48)}", style="bold"), id="cal-title")
            yield ProgressBar(total=1.0, show_bar=not self.pw_app.ascii_only, show_eta=False, id="cal-progress")
            yield Label(Text("starting"), id="cal-status")
            table: DataTable[Text] = DataTable(cursor_type="row", id="cal-results")
            table.border_title = "Results"
            yield table
            yield Label(Text(""), id="cal-verdict")
            yield VerticalScroll(id="cal-plots")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*COLUMNS)
        self.query_one("#cal-plots", VerticalScroll).border_title = "Impulse responses (1 ms per column)"
        self._worker = self.measure()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "keep":
            return None if self.measuring or self.report is None or self.ending else True
        if action == "again":
            return None if self.measuring or self.ending else True
        return True

    def _progress(self, what: str, done: float) -> None:
        self.query_one(ProgressBar).update(progress=done)
        self.query_one("#cal-status", Label).update(Text(what))

    @work(exclusive=True, group="calibrate", exit_on_error=False)
    async def measure(self) -> None:
        self.measuring, self.report = True, None
        self.refresh_bindings()
        self._progress("preparing: the group is held from the daemon while it is measured", 0.0)
        try:
            report = await self.pw_app.source.calibrate(self.group, self._progress, self.method)
        except PwgroupError as err:
            self._progress(f"not measured: {err.message}", 0.0)
            self.query_one("#cal-status", Label).add_class("-error")
            return
        except Exception as err:  # the screen stays; the line says what broke
            self._progress(f"not measured: {type(err).__name__}: {err}", 0.0)
            return
        finally:
            self.measuring = False
            self.refresh_bindings()
        self.report = report
        self._show(report)
        self.refresh_bindings()

    def _show(self, report: Any) -> None:
        self._progress(f"measured with {safe_text(report.microphone or '-', 60)} in {report.seconds:.1f} s", 1.0)
        table = self.query_one(DataTable)
        table.clear()
        plots = self.query_one("#cal-plots", VerticalScroll)
        plots.remove_children()
        ascii_only = self.pw_app.ascii_only
        for m in report.members:
            name = self.names.get(m.speaker, m.speaker)
            table.add_row(*result_cells(m, name), key=m.speaker)
            if m.status in ("ok", "clipped", "not-heard"):
                plots.mount(Label(Text(safe_text(name, 60), style="bold")))
                plots.mount(TracePlot(m.trace, ascii_only=ascii_only))
        text, ok = verdict(report)
        line = self.query_one("#cal-verdict", Label)
        line.update(Text(text))
        line.set_class(not ok, "-error")

    async def _end(self, keep: bool) -> None:
        self.ending = True
        self.refresh_bindings()
        what = "kept" if keep else "put back"
        try:
            await self.pw_app.source.end_calibration(self.group, keep)
        except PwgroupError as err:
            self.dismiss(f"calibration of {self.group}: delays not {what}: {err.message}")
            return
        report = self.report
        if keep and report is not None:
            self.dismiss(f"group {self.group} calibrated: {verdict(report)[0]}")
        else:
            self.dismiss(f"calibration of {self.group} cancelled: the delays are as they were")

    def action_keep(self) -> None:
        if self.report is not None and verdict(self.report)[1]:
            self.run_worker(self._end(True), group="end", exclusive=True)

    def action_again(self) -> None:
        self._worker = self.measure()

    def action_discard(self) -> None:
        if self.ending:
            return
        self.ending = True

        async def cancel() -> None:
            # A measurement cut short puts the old delays back itself; wait for that before ending.
            if self._worker is not None and self.measuring:
                self._worker.cancel()
                with contextlib.suppress(Exception):
                    await self._worker.wait()
            await self._end(False)

        self.run_worker(cancel(), group="end", exclusive=True)
