"""The dashboard's Bluetooth side driven by Pilot against the virtual room and its fake org.bluez, reached through
the room's own env (never this process's): battery, pairing and measured latency in the speakers table, trust and
untrust, the scan view pairing a new speaker, and the banner while BlueZ is away."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_integration_tui import cell, dash, log_text, until
from test_tui_snapshots import screen_text

from pwgroup.bluez.client import BluezClient
from pwgroup.config import ConfigFile, config_path, with_member_values
from pwgroup.sim.fakebluez import STRANGERS, battery_of, reported_delay_tenths
from pwgroup.text import safe_text
from pwgroup.tui.app import PwgroupApp
from pwgroup.tui.screens.dashboard import DashboardScreen
from pwgroup.tui.screens.scan import COLUMNS as FOUND_COLUMNS
from pwgroup.tui.screens.scan import FoundTable, ScanScreen
from pwgroup.tui.state import LiveSource
from pwgroup.tui.widgets.banner import Banner
from pwgroup.tui.widgets.events import EventLog
from pwgroup.tui.widgets.speakers import COLUMNS, SpeakersTable

pytestmark = pytest.mark.integration

NEW_SPEAKER, PHONE = STRANGERS[0][0], STRANGERS[1][0]
HOSTILE = "[bold red]Party[/] \x1b[31m\u202eX [link=http://x]y[/link]"
STATE, BATTERY, PAIRING = COLUMNS.index("STATE"), COLUMNS.index("BATTERY"), COLUMNS.index("PAIRING")
REPORTED, MEASURED = COLUMNS.index("REPORTED"), COLUMNS.index("MEASURED")


def app_for(room) -> PwgroupApp:  # type: ignore[no-untyped-def]
    # Bluetooth asked on the room's system bus, found through the env given to the dashboard: no monkeypatch.
    return PwgroupApp(LiveSource(room.env, bluetooth=True))


async def fake_bluez(room, address: str) -> tuple[Any, bool]:  # type: ignore[no-untyped-def]
    """(the device as the fake BlueZ has it, or None; whether its adapter discovers), read over the bus."""
    async with await BluezClient.open(env=room.env) as bt:
        return bt.device(address), bt.adapters()[0].discovering


async def bluez_ready(pilot, app: PwgroupApp, address: str) -> SpeakersTable:  # type: ignore[no-untyped-def]
    table = dash(app).query_one(SpeakersTable)
    await until(pilot, lambda: address in table.rows_shown and cell(table, address, STATE) == "connected", "BlueZ")
    return table


def scan_log(app: PwgroupApp) -> str:
    return "\n".join(app.screen.query_one("#scan-events", EventLog).lines_text)


def shown(app: PwgroupApp) -> str:
    return screen_text(app.export_screenshot())


# ---------------------------------------------------------------- the speakers table, trust and untrust


def test_table_shows_bluez_and_config_and_trust_untrust(room, cli, group: str) -> None:  # type: ignore[no-untyped-def]
    room.start_bluez()
    spk = room.speakers[2]
    cfg = ConfigFile.open(config_path(room.env))
    current = cfg.group(group)
    assert current is not None
    cfg.set_group(with_member_values(current, spk.address, latency_ms=171.5))  # as calibrate writes it
    cfg.save()
    try:
        asyncio.run(_trust(room, spk))
    finally:
        code, _, err = cli("trust", spk.address)
        assert code == 0, err


async def _trust(room, spk) -> None:  # type: ignore[no-untyped-def]
    address = spk.address
    app = app_for(room)
    async with app.run_test(size=(160, 48)) as pilot:
        table = await bluez_ready(pilot, app, address)
        await until(pilot, lambda: cell(table, address, MEASURED) == "171.5 ms", "the measured latency")
        assert cell(table, address, BATTERY) == f"{battery_of(spk)} %"
        assert cell(table, address, REPORTED) == f"{reported_delay_tenths(spk) / 10:.1f} ms"
        assert cell(table, address, PAIRING) == "paired, trusted"
        table.focus()
        table.move_cursor(row=table.get_row_index(address))
        await pilot.press("u")
        await until(pilot, lambda: cell(table, address, PAIRING) == "paired", "untrusted shown")
        dev, _ = await fake_bluez(room, address)
        assert dev is not None and dev.paired and not dev.trusted
        assert f"{safe_text(spk.description)} untrusted" in log_text(app)
        await pilot.press("t")
        await until(pilot, lambda: cell(table, address, PAIRING) == "paired, trusted", "trusted shown")
        dev, _ = await fake_bluez(room, address)
        assert dev is not None and dev.trusted
        assert f"{safe_text(spk.description)} trusted" in log_text(app)
        assert "171.5 ms" in shown(app)


# ---------------------------------------------------------------- the scan view


def test_scan_view_lists_the_room_and_pairs_a_new_speaker(room) -> None:  # type: ignore[no-untyped-def]
    room.start_bluez()
    try:
        asyncio.run(_scan(room))
    finally:

        async def forget() -> None:
            async with await BluezClient.open(env=room.env) as bt:
                if bt.device(NEW_SPEAKER) is not None:
                    await bt.remove(NEW_SPEAKER)
                    assert await bt.wait_until(lambda: bt.device(NEW_SPEAKER) is None, 5)

        asyncio.run(forget())


async def _scan(room) -> None:  # type: ignore[no-untyped-def]
    own = {s.address for s in room.speakers[:4]}
    name_col, rssi_col = FOUND_COLUMNS.index("NAME"), FOUND_COLUMNS.index("RSSI")
    kind_col, pairing_col, link_col = (FOUND_COLUMNS.index(c) for c in ("KIND", "PAIRING", "LINK"))
    app = app_for(room)
    async with app.run_test(size=(160, 48)) as pilot:
        speakers = await bluez_ready(pilot, app, room.speakers[0].address)
        assert NEW_SPEAKER not in speakers.rows_shown  # not paired: not a speaker yet
        await pilot.press("s")
        scan = app.screen
        assert isinstance(scan, ScanScreen)
        found = scan.query_one(FoundTable)
        await until(pilot, lambda: {NEW_SPEAKER, PHONE} | own <= set(found.rows_shown), "the room heard")
        assert (await fake_bluez(room, NEW_SPEAKER))[1]  # the adapter discovers while the view is open
        assert cell(found, NEW_SPEAKER, name_col) == "Party Speaker (unpaired)"
        assert cell(found, NEW_SPEAKER, rssi_col) == str(STRANGERS[0][4])
        assert cell(found, NEW_SPEAKER, kind_col) == "speaker" and cell(found, PHONE, kind_col) == "other"
        assert cell(found, NEW_SPEAKER, pairing_col) == "new"
        assert all(cell(found, a, pairing_col) == "paired, trusted" for a in own)
        # Drawn, not only listed: with the session room's many speakers a row may sit below the fold until the
        # cursor brings it into view.
        for address, name in ((NEW_SPEAKER, "Party Speaker (unpaired)"), (PHONE, "Someone's phone")):
            found.move_cursor(row=found.get_row_index(address))
            await until(pilot, lambda n=name: n in shown(app), f"{name} drawn")  # type: ignore[misc]
        # The speaker announces a hostile name while listed: shown literally, cut to the column.
        await asyncio.to_thread(room.bluez_control, "SetAlias", NEW_SPEAKER, HOSTILE)
        await until(pilot, lambda: cell(found, NEW_SPEAKER, name_col) == safe_text(HOSTILE, 24), "the new name")
        svg = app.export_screenshot()
        assert safe_text(HOSTILE, 24) in screen_text(svg) and "\x1b" not in svg and "\u202e" not in svg

        found.move_cursor(row=found.get_row_index(NEW_SPEAKER))
        await pilot.press("enter")
        await until(pilot, lambda: cell(found, NEW_SPEAKER, pairing_col) == "paired, trusted", "paired", timeout=30)
        await until(pilot, lambda: cell(found, NEW_SPEAKER, link_col) == "connected", "connected", timeout=30)
        await until(pilot, lambda: "paired, trusted and connected" in shown(app), "the outcome on the scan view")
        dev, _ = await fake_bluez(room, NEW_SPEAKER)
        assert dev is not None and dev.paired and dev.trusted and dev.connected

        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)
        await until(pilot, lambda: "discovery stopped" in log_text(app), "the scan closed")
        for _ in range(100):
            if not (await fake_bluez(room, NEW_SPEAKER))[1]:
                break
            await pilot.pause(0.05)
        assert not (await fake_bluez(room, NEW_SPEAKER))[1], "discovery still on after Escape"
        assert f"{safe_text(HOSTILE)} paired, trusted and connected" in log_text(app)
        # Now a speaker: paired, an audio sink. BlueZ connected it; the fake has no audio node for a stranger.
        await until(pilot, lambda: NEW_SPEAKER in speakers.rows_shown, "the new speaker in the table")
        assert cell(speakers, NEW_SPEAKER, STATE) == "connected, no audio node yet"
        assert cell(speakers, NEW_SPEAKER, PAIRING) == "paired, trusted"


def test_scan_pairing_failure_is_one_line_in_the_log(room) -> None:  # type: ignore[no-untyped-def]
    room.start_bluez()
    room.bluez_control("SetFault", PHONE, "auth")
    try:
        asyncio.run(_scan_fails(room))
    finally:
        room.bluez_control("SetFault", PHONE, "")


async def _scan_fails(room) -> None:  # type: ignore[no-untyped-def]
    app = app_for(room)
    async with app.run_test(size=(160, 48)) as pilot:
        await bluez_ready(pilot, app, room.speakers[0].address)
        await pilot.press("s")
        found = app.screen.query_one(FoundTable)
        await until(pilot, lambda: PHONE in found.rows_shown, "the phone heard")
        found.move_cursor(row=found.get_row_index(PHONE))
        await pilot.press("enter")
        await until(pilot, lambda: "authentication failed" in scan_log(app), "the failure shown", timeout=30)
        line = next(x for x in scan_log(app).splitlines() if "authentication failed" in x)
        assert line.startswith("pair Someone's phone: ") and "Traceback" not in scan_log(app)
        dev, _ = await fake_bluez(room, PHONE)
        assert dev is not None and not dev.paired
        await pilot.press("escape")
        assert line in log_text(app).splitlines()  # the dashboard's log has it too


# ---------------------------------------------------------------- BlueZ lost and back


def test_bluetooth_lost_banner_comes_and_goes_with_bluez(room) -> None:  # type: ignore[no-untyped-def]
    room.start_bluez()
    try:
        asyncio.run(_bluez_lost(room))
    finally:
        room.start_bluez()


async def _bluez_lost(room) -> None:  # type: ignore[no-untyped-def]
    address = room.speakers[0].address
    app = app_for(room)
    async with app.run_test(size=(120, 40)) as pilot:
        table = await bluez_ready(pilot, app, address)
        banner = dash(app).query_one(Banner)
        assert not banner.has_class("-shown") and "Bluetooth lost" not in shown(app)
        await asyncio.to_thread(room.stop_bluez)
        await until(pilot, lambda: banner.has_class("-shown"), "the banner")
        assert "Bluetooth lost: BlueZ (org.bluez) is not running" in shown(app)
        # The sound server's view stays: the speaker plays on, its node the witness.
        assert cell(table, address, STATE) == "audio present" and cell(table, address, PAIRING) == "-"
        assert "BlueZ (org.bluez) is not running" in log_text(app)
        await asyncio.to_thread(room.start_bluez)
        await until(pilot, lambda: not banner.has_class("-shown"), "the banner gone")
        assert "Bluetooth lost" not in shown(app)
        await until(pilot, lambda: cell(table, address, STATE) == "connected", "BlueZ's view again")
        assert "Bluetooth back" in log_text(app)


def test_scan_view_discovers_again_after_a_bluez_restart(room) -> None:  # type: ignore[no-untyped-def]
    room.start_bluez()
    try:
        asyncio.run(_scan_restart(room))
    finally:
        room.start_bluez()


async def _scan_restart(room) -> None:  # type: ignore[no-untyped-def]
    app = app_for(room)
    async with app.run_test(size=(160, 48)) as pilot:
        await bluez_ready(pilot, app, room.speakers[0].address)
        await pilot.press("s")
        found = app.screen.query_one(FoundTable)
        await until(pilot, lambda: PHONE in found.rows_shown, "the phone heard")
        await asyncio.to_thread(room.stop_bluez)
        await until(pilot, lambda: not found.rows_shown, "nothing listed while BlueZ is away")
        await asyncio.to_thread(room.start_bluez)
        # A new bluetoothd knows no strangers: they come back only because the view asked it to discover again.
        await until(pilot, lambda: PHONE in found.rows_shown, "the phone heard again")
        assert (await fake_bluez(room, PHONE))[1]
        await pilot.press("escape")
        await until(pilot, lambda: "discovery stopped" in log_text(app), "the scan closed")


def test_without_a_system_bus_bluetooth_actions_say_why_in_one_line(room, tmp_path) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(_no_bus(room, tmp_path))


async def _no_bus(room, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = dict(room.env, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={tmp_path / 'no-bus-here'}")
    address = room.speakers[0].address
    app = PwgroupApp(LiveSource(env, bluetooth=True))
    async with app.run_test(size=(160, 48)) as pilot:
        table = dash(app).query_one(SpeakersTable)
        await until(pilot, lambda: address in table.rows_shown, "the speakers")
        assert cell(table, address, STATE) == "audio present" and cell(table, address, PAIRING) == "-"
        await until(pilot, lambda: "cannot reach the system bus" in log_text(app), "the reason logged once")
        # Never reached in this session: said in the log, not a banner of something lost.
        assert not dash(app).query_one(Banner).has_class("-shown")
        table.focus()
        table.move_cursor(row=table.get_row_index(address))
        await pilot.press("u")
        await until(pilot, lambda: "untrust" in log_text(app).splitlines()[-1], "the refusal")
        name = safe_text(table.rows_shown[address].name)
        refusal = log_text(app).splitlines()[-1]
        assert refusal.startswith(f"untrust {name}: Bluetooth control unavailable: cannot reach the system bus at ")
        await pilot.press("s")
        await until(pilot, lambda: "scan: Bluetooth control unavailable" in scan_log(app), "the scan's refusal")
        assert "Traceback" not in scan_log(app)
        await pilot.press("escape")
        assert "Traceback" not in log_text(app)
