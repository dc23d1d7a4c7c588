"""The dashboard photographed (SVG) from fixed data with hostile speaker names, at 80x24 and 160x48, and its keys
driven with Pilot against the same fixed data: every edit reaches the source with the right arguments."""

from __future__ import annotations

import asyncio
import html
import re

from textual.command import CommandInput
from tui_app import HOSTILE, make_app

from pwgroup.text import safe_text
from pwgroup.tui.screens.scan import ScanScreen
from pwgroup.tui.state import FixedSource
from pwgroup.tui.widgets.groups import GroupsTable, row_key


def test_dashboard_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(), terminal_size=(80, 24))


def test_dashboard_160x48(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(), terminal_size=(160, 48))


def test_lost_server_banner_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(lost="cannot reach PipeWire: start it"), terminal_size=(80, 24))


def test_help_screen_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(), press=["question_mark"], terminal_size=(80, 24))


def test_calibration_screen_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(), press=["k"], terminal_size=(80, 24))


def test_calibration_screen_160x48(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(), press=["k"], terminal_size=(160, 48))


def test_hostile_names_are_shown_literally() -> None:
    async def main() -> str:
        app = make_app()
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause()
            return app.export_screenshot()

    svg = asyncio.run(main())
    text = screen_text(svg)
    assert "[bold red]Kitchen[/] \\x1b[3…" in text  # cut at 28 characters in the table
    assert f"{HOSTILE[2].replace(chr(92), chr(92) * 2)} went away" in text  # whole in the event log
    assert "Bath\\u202eroom\\u202c" in text
    assert "Patio :smile: [$accent]$x\\\\n" in text
    assert "\x1b" not in svg and "\u202e" not in svg
    assert HOSTILE[3] in text


def screen_text(svg: str) -> str:
    """The screen's lines from an SVG screenshot: its text runs joined line by line, entities decoded."""
    lines: dict[int, list[str]] = {}
    for line, run in re.findall(r'<text [^>]*clip-path="url\(#terminal-(?:\d+-)?line-(\d+)\)">([^<]*)</text>', svg):
        lines.setdefault(int(line), []).append(html.unescape(run).replace("\xa0", " "))
    return "\n".join("".join(lines[n]) for n in sorted(lines))


async def palette(pilot, words: str) -> None:  # type: ignore[no-untyped-def]
    """Run the command palette's entry named `words`."""
    await pilot.press("ctrl+p")
    await pilot.pause(0.2)
    # Typed in one go, as a paste: a key at a time re-searches and redraws the palette for every letter.
    pilot.app.screen.query_one(CommandInput).value = words
    await pilot.pause(0.5)  # the palette searches in the background
    await pilot.press("enter")
    await pilot.pause(0.2)


def test_keys_reach_the_source() -> None:
    async def main() -> FixedSource:
        app = make_app()
        source = app.source
        assert isinstance(source, FixedSource)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            await pilot.press("space", "space", "n", *"den", "enter")
            await pilot.press("x", "c")  # the cursor is on the third speaker now
            groups = app.screen.query_one(GroupsTable)
            groups.focus()
            groups.move_cursor(row=groups.get_row_index(row_key("living-room", "AA:BB:CC:00:00:02")))
            await pilot.press("plus", "minus", "shift+right", "shift+left", "right")
            await pilot.press("d", "y")
            await pilot.pause()
        return source

    source = asyncio.run(main())
    assert source.edits == [
        ("create", "den", ("AA:BB:CC:00:00:01", "AA:BB:CC:00:00:02")),
        ("disconnect", "AA:BB:CC:00:00:03"),
        ("connect", "AA:BB:CC:00:00:03"),
        ("trim", "living-room", "AA:BB:CC:00:00:02", 1.0),
        ("trim", "living-room", "AA:BB:CC:00:00:02", -1.0),
        ("trim", "living-room", "AA:BB:CC:00:00:02", 10.0),
        ("trim", "living-room", "AA:BB:CC:00:00:02", -10.0),
        ("trim", "living-room", "AA:BB:CC:00:00:02", 1.0),
        ("delete", "living-room"),
    ]


def test_palette_runs_the_actions() -> None:
    async def main() -> FixedSource:
        app = make_app()
        source = app.source
        assert isinstance(source, FixedSource)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            groups = app.screen.query_one(GroupsTable)
            groups.move_cursor(row=groups.get_row_index(row_key("living-room", "AA:BB:CC:00:00:01")))
            for words in ("Trim -10 ms", "Delete group living-room"):
                await palette(pilot, words)
            await pilot.press("y")
            await pilot.pause()
        return source

    source = asyncio.run(main())
    assert source.edits == [("trim", "living-room", "AA:BB:CC:00:00:01", -10.0), ("delete", "living-room")]


def test_ascii_mode_draws_nothing_but_ascii() -> None:
    """--ascii (or a locale that is not UTF-8): every screen is drawn with plain ASCII, names included."""
    from tui_app import calibration_report, snapshot

    from pwgroup.tui.app import PwgroupApp
    from pwgroup.tui.state import FixedSource

    async def run() -> list[str]:
        shots = []
        for size in ((80, 24), (160, 48)):
            for keys in ([], ["question_mark"], ["n"], ["k"], ["s"]):  # dashboard, help, a dialog, calibration, scan
                app = PwgroupApp(FixedSource(snapshot(), report=calibration_report()), ascii_only=True)
                async with app.run_test(size=size) as pilot:
                    await pilot.pause()  # the fixed snapshot shown
                    await pilot.press(*keys)
                    await pilot.pause()
                    shots.append(screen_text(app.export_screenshot()))
        return shots

    shots = asyncio.run(run())
    for shot in shots:
        odd = sorted({c for c in shot if not c.isascii()})
        assert not odd, odd
    assert any("Impulse responses" in s and "@" in s for s in shots)  # the calibration plot, in ASCII
    assert any("Kitchen" in s for s in shots)


def test_group_editing_keys_and_clicks_reach_the_source() -> None:
    """Volume, role, mute, rename, add and remove by key, and the member strip's buttons by mouse."""
    member = ("living-room", "AA:BB:CC:00:00:02")

    async def main() -> tuple[FixedSource, str]:
        app = make_app()
        source = app.source
        assert isinstance(source, FixedSource)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("down", "down", "down", "a")  # the fourth speaker, to the only group
            groups = app.screen.query_one(GroupsTable)
            groups.focus()
            groups.move_cursor(row=groups.get_row_index(row_key(*member)))
            await pilot.pause()
            strip = str(app.screen.query_one("#member-name").render())
            await pilot.press("right_square_bracket", "left_square_bracket", "o")
            await pilot.click("#trim-minus-10")
            await pilot.click("#trim-plus-1")
            await pilot.click("#volume-up")
            await pilot.click("#role")
            assert groups.has_focus  # a click acts; the keyboard stays in the table
            await pilot.press("delete", "y")
            groups.move_cursor(row=groups.get_row_index(row_key("living-room")))
            await pilot.press("right_square_bracket", "m", "r", *"Den", "enter")  # typing replaces the old one
            await pilot.pause()
        return source, strip

    source, strip = asyncio.run(main())
    assert strip == "Bath\\u202eroom\\u202… trim +0.0 ms"  # the name escaped, cut at 20 characters
    assert source.edits == [
        ("add", "living-room", "AA:BB:CC:00:00:04"),
        ("volume", *member, 0.05),
        ("volume", *member, -0.05),
        ("channels", *member),
        ("trim", *member, -10.0),
        ("trim", *member, 1.0),
        ("volume", *member, 0.05),
        ("channels", *member),
        ("remove", *member),
        ("group-volume", "living-room", 0.05),
        ("mute", "living-room"),
        ("rename", "living-room", "Den"),
    ]


def test_palette_runs_the_group_editing_actions() -> None:
    member = ("living-room", "AA:BB:CC:00:00:01")

    async def main() -> FixedSource:
        app = make_app()
        source = app.source
        assert isinstance(source, FixedSource)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            groups = app.screen.query_one(GroupsTable)
            groups.move_cursor(row=groups.get_row_index(row_key(*member)))
            commands = [
                ("Volume +5%", ()),
                ("Channel role", ()),
                ("Mute or unmute group living-room", ()),
                ("Rename group living-room", ("D", "e", "n", "enter")),
                ("Add speaker to group", ()),
                ("Remove member", ("y",)),
            ]
            for words, then in commands:
                await palette(pilot, words)
                if then:
                    await pilot.press(*then)
                    await pilot.pause(0.1)
            await pilot.pause()
        return source

    source = asyncio.run(main())
    assert source.edits == [
        ("volume", *member, 0.05),
        ("channels", *member),
        ("mute", "living-room"),
        ("rename", "living-room", "Den"),
        ("add", "living-room", "AA:BB:CC:00:00:01"),  # the speaker under the speakers table's cursor
        ("remove", *member),
    ]


# ---------------------------------------------------------------- the Bluetooth side: scan view, trust, banners


def test_scan_screen_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(), press=["s"], terminal_size=(80, 24))


def test_lost_server_and_bluetooth_banner_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    # Two problems, two lines: neither hides the other.
    assert snap_compare(make_app(lost="cannot reach PipeWire: start it", bluetooth_lost=True), terminal_size=(80, 24))


def test_scan_names_are_shown_literally() -> None:
    async def main() -> str:
        app = make_app()
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.press("s")
            await pilot.pause()
            return app.export_screenshot()

    text = screen_text(asyncio.run(main()))
    assert "[bold red]Kitchen[/] \\x…" in text  # cut at 24 characters in the scan table
    assert "Bath\\u202eroom\\u202c [l…" in text
    assert "Someone's phone [i]x[/i]" in text and "(no name)" in text
    assert "AA:BB:CC:10:00:01" in text and "-52" in text


def test_bluetooth_keys_and_palette_reach_the_source() -> None:
    async def main() -> tuple[FixedSource, str]:
        app = make_app()
        source = app.source
        assert isinstance(source, FixedSource)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            await pilot.press("down", "t", "u")  # the second speaker
            for words in ("Untrust speaker", "Trust speaker", "Scan for speakers"):
                await palette(pilot, words)
            assert isinstance(app.screen, ScanScreen)  # opened by the palette
            await pilot.press("escape", "s")
            await pilot.pause()
            await pilot.press("down", "enter")  # the second device found: pair it
            await pilot.pause()
            shown = "\n".join(app.screen.query_one("#scan-events").lines_text)  # type: ignore[attr-defined]
            await pilot.press("escape")
            await pilot.pause()
            log = "\n".join(app.screen.query_one("#events").lines_text)  # type: ignore[attr-defined]
        return source, shown + "\n--\n" + log

    source, text = asyncio.run(main())
    assert source.edits == [
        ("trust", "AA:BB:CC:00:00:02"),
        ("untrust", "AA:BB:CC:00:00:02"),
        ("untrust", "AA:BB:CC:00:00:02"),
        ("trust", "AA:BB:CC:00:00:02"),
        ("scan",),
        ("scan",),
        ("pair", "AA:BB:CC:00:00:02"),
    ]
    scan_log, dash_log = text.split("\n--\n")
    done = f"{safe_text(HOSTILE[1])} paired, trusted and connected"
    assert done in scan_log  # seen where the user is
    assert done in dash_log and "discovery stopped" in dash_log
