"""The calibration screen's pieces: the impulse-response plot, the verdict line, and its keys against fixed data
(apply and cancel reach the source; a failed measurement offers no apply)."""

from __future__ import annotations

import asyncio
import dataclasses

from tui_app import calibration_report, make_app

from pwgroup.calibrate.estimator import TRACE_FLOOR_DB
from pwgroup.tui.screens.calibrate import CalibrationScreen, verdict
from pwgroup.tui.screens.dashboard import DashboardScreen
from pwgroup.tui.state import FixedSource
from pwgroup.tui.widgets.trace import ASCII, BLOCKS, axis, plot_rows


def test_plot_rows_scale_from_floor_to_peak() -> None:
    trace = [-TRACE_FLOOR_DB, 0.0, -TRACE_FLOOR_DB / 2, -TRACE_FLOOR_DB / 6]
    rows = plot_rows(trace, rows=3)
    assert rows == [" " + BLOCKS[-1] + " " + BLOCKS[4], " " + BLOCKS[-1] + BLOCKS[4] + BLOCKS[-1], " ███"]
    assert all(set(line) <= set(ASCII) for line in plot_rows(trace, ascii_only=True))
    assert plot_rows(trace, rows=1, ascii_only=True) == [" @" + ASCII[4] + ASCII[7]]


def test_axis_marks_the_arrival_and_every_ten_ms() -> None:
    line = axis(60)
    assert line[5] == "▲" and line[15:18] == "+10" and line[55:58] == "+50" and len(line) == 60
    assert axis(60, ascii_only=True)[5] == "^" and axis(60, ascii_only=True).isascii()


def test_verdict_says_whether_the_result_can_be_kept() -> None:
    report = calibration_report()
    text, ok = verdict(report)
    assert ok and "within 0.010 ms" in text and "1 member(s) kept their delay" in text
    failed = dataclasses.replace(report, applied=False)
    text, ok = verdict(failed)
    assert not ok and "verification failed" in text


def test_keys_apply_and_cancel_reach_the_source() -> None:
    async def run(key: str) -> list[tuple[object, ...]]:
        app = make_app()
        source = app.source
        assert isinstance(source, FixedSource)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("k")
            await pilot.pause()
            assert isinstance(app.screen, CalibrationScreen) and app.screen.report is not None
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, DashboardScreen)
        return source.edits

    assert asyncio.run(run("a")) == [("calibrate", "living-room", None), ("end calibration", "living-room", True)]
    assert asyncio.run(run("escape")) == [("calibrate", "living-room", None), ("end calibration", "living-room", False)]


def test_a_failed_measurement_says_why_and_offers_no_apply() -> None:
    async def run() -> None:
        app = make_app()
        assert isinstance(app.source, FixedSource)
        app.source.report = None  # the fixed source then says: no microphone found
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("k")
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, CalibrationScreen)
            assert "no microphone found" in str(screen.query_one("#cal-status").render())
            assert screen.check_action("keep", ()) is None  # shown disabled in the footer
            await pilot.press("a")
            await pilot.pause()
            assert app.screen is screen  # nothing to apply: still here
            await pilot.press("escape")
            await pilot.pause()
            assert isinstance(app.screen, DashboardScreen)

    asyncio.run(run())


def test_ascii_mode_follows_the_locale_unless_told() -> None:
    from pwgroup.tui.app import wants_ascii

    assert not wants_ascii({"LANG": "en_US.UTF-8"}) and not wants_ascii({"LC_ALL": "de_DE.utf8", "LANG": "C"})
    assert wants_ascii({"LANG": "C"}) and wants_ascii({}) and wants_ascii({"LC_CTYPE": "en_US.ISO-8859-1"})
    assert wants_ascii({"LANG": "en_US.UTF-8", "PWGROUP_ASCII": "1"})
    assert not wants_ascii({"LANG": "C", "PWGROUP_ASCII": "0"})
