"""The dashboard driven by Textual's Pilot against the virtual room: what it lists, the edits it makes (read back
from the graph and heard on the room's truth channels), a speaker pulled and returned, alone and with the daemon,
PipeWire killed under it, BlueZ connect and disconnect; and the real command in a real terminal under tmux."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import pytest
from test_integration_daemon import Daemon
from test_integration_delays import arrivals

from pwgroup.graph import layout
from pwgroup.model import speakers_in
from pwgroup.sim.room import RATE
from pwgroup.tui.app import PwgroupApp
from pwgroup.tui.screens.dashboard import DashboardScreen
from pwgroup.tui.state import LiveSource
from pwgroup.tui.widgets.events import EventLog
from pwgroup.tui.widgets.groups import GroupsTable, row_key
from pwgroup.tui.widgets.speakers import SpeakersTable

pytestmark = pytest.mark.integration

GROUP = "tui-test"


def app_for(room) -> PwgroupApp:  # type: ignore[no-untyped-def]
    # PipeWire's view only: the Bluetooth side has tests of its own (test_integration_tui_bluetooth).
    return PwgroupApp(LiveSource(room.env, bluetooth=False))


async def until(pilot, check: Callable[[], object], what: str, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def present(room) -> set[str]:  # type: ignore[no-untyped-def]
    """The speakers with a node in the graph now (other tests add speakers, and leave some without a node)."""
    return {s.key for s in speakers_in(room.dump())}


def dash(app: PwgroupApp) -> DashboardScreen:
    screen = app.screen
    assert isinstance(screen, DashboardScreen)
    return screen


def cell(table, key: str, column: int) -> str:  # type: ignore[no-untyped-def]
    return str(table.get_row(key)[column])


def member_shown(app: PwgroupApp, group: str, speaker: str) -> tuple[str, str] | None:
    """(state, delay) as the groups panel shows them, or None when the row is not there."""
    table = dash(app).query_one(GroupsTable)
    key = row_key(group, speaker)
    if key not in table.rows:
        return None
    return cell(table, key, 1), cell(table, key, 2)


async def create_by_keys(pilot, app: PwgroupApp, name: str, keys: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Mark `keys` with space in the speakers table, press n, type the name: the group is made and plays."""
    table = dash(app).query_one(SpeakersTable)
    await until(pilot, lambda: set(keys) <= set(table.rows_shown), "the speakers")
    for key in keys:
        table.move_cursor(row=table.get_row_index(key))
        await pilot.press("space")  # marks it (and moves down to the next)
    await pilot.press("n", *name, "enter")
    await until(
        pilot,
        lambda: all((member_shown(app, name, k) or ("",))[0] == "playing" for k in keys),
        "the new group playing",
        timeout=30,
    )


def log_text(app: PwgroupApp) -> str:
    return "\n".join(dash(app).query_one(EventLog).lines_text)


def noise(seconds: float) -> np.ndarray:
    x = np.random.default_rng(1).standard_normal(int(RATE * seconds)) * 0.1
    return np.stack([x, x], axis=1)


def test_dashboard_lists_the_rooms_speakers(room) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(_lists(room))


async def _lists(room) -> None:  # type: ignore[no-untyped-def]
    app = app_for(room)
    async with app.run_test(size=(160, 48)) as pilot:
        table = dash(app).query_one(SpeakersTable)
        here = present(room)
        assert {s.address for s in room.speakers[:4]} <= here  # the session's own four
        await until(pilot, lambda: here <= set(table.rows_shown), "the speakers")
        for key in here:
            assert cell(table, key, 2) == key
            assert cell(table, key, 3) == "audio present"  # BlueZ not asked: the node is the witness
        assert "pipewire" in app.screen.sub_title


def test_create_trim_while_playing_and_delete(room, cli) -> None:  # type: ignore[no-untyped-def]
    try:
        asyncio.run(_create_trim_delete(room))
    finally:
        cli("group", "delete", GROUP)


async def _create_trim_delete(room) -> None:  # type: ignore[no-untyped-def]
    first, second = room.speakers[0].address, room.speakers[1].address
    app = app_for(room)
    async with app.run_test(size=(160, 48)) as pilot:
        await create_by_keys(pilot, app, GROUP, [first, second])
        state = layout.observe_group(room.dump(), GROUP)
        assert state.sink is not None
        assert {m.speaker for m in state.members if m.linked} == {first, second}
        await until(pilot, lambda: f"group {GROUP} created" in log_text(app), "the edit's outcome logged")

        # Trim the first member while audio plays through the group: +1 three times, +10 once, -1 once.
        player = room.play(GROUP, noise(8.0)).start()
        groups = dash(app).query_one(GroupsTable)
        groups.focus()
        groups.move_cursor(row=groups.get_row_index(row_key(GROUP, first)))
        await pilot.press("plus", "plus", "plus", "shift+right", "minus")
        # Presses made while an edit converges fold into the next edit: 1, then 12 (or 1, 3, 13, 12...).
        await until(pilot, lambda: "trim +12.0 ms" in log_text(app), "the last edit", timeout=30)
        await until(pilot, lambda: member_shown(app, GROUP, first) == ("playing", "12.0 ms"), "12 ms shown")
        applied = layout.observe_group(room.dump(), GROUP).member(first)
        assert applied is not None and applied.linked
        assert applied.delay_ms == pytest.approx(12.0, abs=1000 / RATE)
        player.wait()
        # Heard: the first speaker now arrives 12 ms later than its hidden latency, the second unchanged.
        hidden = [room.hidden_latency_samples(k) for k in (first, second)]
        assert arrivals(room, GROUP, 2) == [hidden[0] + round(0.012 * RATE), hidden[1]]

        await pilot.press("d", "y")
        await until(pilot, lambda: dash(app).snapshot and dash(app).snapshot.group(GROUP) is None, "deletion")
        assert layout.observe_group(room.dump(), GROUP).sink is None
        await until(pilot, lambda: f"group {GROUP} deleted" in log_text(app), "the deletion logged")
        await pilot.press("q")


CAL_GROUP = "tui-cal"


def test_create_from_two_and_calibrate_then_cancel(room, cli) -> None:  # type: ignore[no-untyped-def]
    try:
        asyncio.run(_create_and_calibrate(room))
    finally:
        cli("group", "delete", CAL_GROUP)


async def _create_and_calibrate(room) -> None:  # type: ignore[no-untyped-def]
    from pwgroup.config import config_path
    from pwgroup.config import load as load_config
    from pwgroup.tui.screens.calibrate import CalibrationScreen
    from pwgroup.tui.widgets.trace import TracePlot

    first, second = room.speakers[0].address, room.speakers[1].address
    app = app_for(room)
    async with app.run_test(size=(120, 40)) as pilot:
        await create_by_keys(pilot, app, CAL_GROUP, [first, second])
        groups = dash(app).query_one(GroupsTable)
        groups.focus()
        groups.move_cursor(row=groups.get_row_index(row_key(CAL_GROUP)))
        await pilot.press("k")
        screen = app.screen
        assert isinstance(screen, CalibrationScreen)
        await until(pilot, lambda: screen.report is not None, "the measurement", timeout=90)
        results = screen.query_one("#cal-results")
        shown = {k: [str(c) for c in results.get_row(k)] for k in (first, second)}  # type: ignore[attr-defined]
        assert all(row[1] == "ok" for row in shown.values()), shown
        verdict = str(screen.query_one("#cal-verdict").render())
        assert "within" in verdict, verdict
        plots = list(screen.query(TracePlot))
        assert len(plots) == 2 and all(len(p.trace) == 60 and max(p.trace) == 0.0 for p in plots)
        # The hidden latencies differ by 50 ms, and the screen shows the delay that makes up for it.
        report = {m.speaker: m for m in screen.report.members}
        assert report[first].delay_ms - report[second].delay_ms == pytest.approx(
            (room.hidden_latency_samples(second) - room.hidden_latency_samples(first)) * 1000 / RATE, abs=0.05
        )
        assert shown[first][3] == f"{report[first].delay_ms:.2f} ms"
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen), "back on the dashboard", timeout=30)
        await until(pilot, lambda: f"group {CAL_GROUP} calibrated" in log_text(app), "the result logged")
        saved = load_config(config_path(room.env)).groups[CAL_GROUP]
        for key in (first, second):
            member = saved.member(key)
            assert member is not None and member.calibrated is not None
            assert member.delay_ms == pytest.approx(report[key].delay_ms, abs=0.001)
        lags = arrivals(room, CAL_GROUP, 2)
        assert max(lags) - min(lags) <= 2, lags  # heard together on the truth channels

        # Trim the first by 10 ms, measure again and cancel: the measurement takes the trim out again, and
        # cancelling puts the configured delays (trim included) back in the graph, the config unchanged.
        groups.move_cursor(row=groups.get_row_index(row_key(CAL_GROUP, first)))
        await pilot.press("shift+right")
        await until(pilot, lambda: "trim +10.0 ms" in log_text(app), "the trim")
        trimmed = load_config(config_path(room.env)).groups[CAL_GROUP]

        def applied() -> dict[str, float | None]:
            state = layout.observe_group(room.dump(), CAL_GROUP)
            return {m.speaker: m.delay_ms for m in state.members}

        before = applied()
        assert before[first] == pytest.approx(report[first].delay_ms + 10.0, abs=1000 / RATE)
        await pilot.press("k")
        screen = app.screen
        assert isinstance(screen, CalibrationScreen)
        await until(pilot, lambda: screen.report is not None, "the second measurement", timeout=90)
        # What the second measurement applied (the trim taken out again: about 10 ms less) is not what the
        # config has; cancelling must bring the config's back.
        assert abs(applied()[first] - before[first]) > 5.0  # type: ignore[operator]
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen), "back on the dashboard", timeout=30)
        await until(pilot, lambda: "cancelled" in log_text(app), "the cancel logged")
        assert applied() == pytest.approx(before, abs=1000 / RATE)
        assert load_config(config_path(room.env)).groups[CAL_GROUP] == trimmed
        await pilot.press("q")


def test_pulled_speaker_shows_absent_then_returns(room, group: str) -> None:  # type: ignore[no-untyped-def]
    from pwgroup.supervisor.session import daemon_pid

    asyncio.run(_pulled(room, group))
    assert daemon_pid(room.env) is None  # the dashboard let go of the session when it closed


def test_cli_edits_reach_the_dashboard_keeping_the_groups(room, cli, group: str) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(_cli_edit(room, cli, group))


async def _cli_edit(room, cli, group: str) -> None:  # type: ignore[no-untyped-def]
    """The CLI finds the dashboard by the session's lock, signals it like the daemon, and waits for it."""
    import os

    from pwgroup.supervisor.session import daemon_pid

    spk = room.speakers[0].address
    app = app_for(room)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: daemon_pid(room.env) == os.getpid(), "the dashboard keeping the groups")
        code, _out, err = await asyncio.to_thread(cli, "delay", "set", group, spk, "25")
        assert code == 0, err
        await until(pilot, lambda: member_shown(app, group, spk) == ("playing", "25.0 ms"), "the new delay shown")
        applied = layout.observe_group(room.dump(), group).member(spk)
        assert applied is not None and applied.delay_ms == pytest.approx(25.0, abs=1000 / RATE)
        await pilot.press("q")


async def _pulled(room, group: str) -> None:  # type: ignore[no-untyped-def]
    pulled = room.speakers[1].address
    app = app_for(room)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: (member_shown(app, group, pulled) or ("",))[0] == "playing", "the member")
        room.disconnect(pulled)
        try:
            await until(pilot, lambda: (member_shown(app, group, pulled) or ("",))[0] == "absent", "absent")
            assert "went away" in log_text(app)
            speakers = dash(app).query_one(SpeakersTable)
            assert cell(speakers, pulled, 3) == "absent" and cell(speakers, pulled, 6) == group
        finally:
            room.connect(pulled)
        # No daemon runs: the dashboard keeps the groups while it is open, so it relinks the member itself.
        await until(pilot, lambda: (member_shown(app, group, pulled) or ("",))[0] == "playing", "relinked")
        assert "returned" in log_text(app)
        assert "this dashboard keeps the groups" in app.screen.sub_title
        seen = layout.observe_group(room.dump(), group).member(pulled)
        assert seen is not None and seen.linked


def test_real_terminal_under_tmux(room, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`pwgroup` with no command in a real terminal: it draws the room's speakers and `q` quits it cleanly."""
    if not shutil.which("tmux"):
        pytest.fail("tmux is not installed: run 'make setup' (see README)")
    sock = str(tmp_path / "tmux.sock")  # a server of its own, its socket gone with tmp_path
    status = tmp_path / "status"
    env = {k: v for k, v in room.env.items() if k != "TMUX"}
    env["TERM"] = "xterm-256color"
    command = f"{shlex.quote(sys.executable)} -m pwgroup; echo $? > {shlex.quote(str(status))}"

    def tmux(*args: str) -> str:
        done = subprocess.run(["tmux", "-S", sock, "-f", "/dev/null", *args], env=env, capture_output=True, text=True)
        return done.stdout

    tmux("new-session", "-d", "-s", "dash", "-x", "120", "-y", "40", command)
    try:
        deadline = time.monotonic() + 20
        screen = ""
        wanted = [s.address for s in room.speakers[:4]]  # the session's own four, at the top (sorted by address)
        while not all(a in screen for a in wanted):
            assert time.monotonic() < deadline, f"the dashboard did not list the room's speakers:\n{screen}"
            time.sleep(0.2)
            screen = tmux("capture-pane", "-p", "-t", "dash")
        assert "Speakers" in screen and "q Quit" in screen
        tmux("send-keys", "-t", "dash", "q")
        deadline = time.monotonic() + 10
        while not status.exists():
            assert time.monotonic() < deadline, "q did not quit the dashboard"
            time.sleep(0.1)
        assert status.read_text().strip() == "0"
    finally:
        tmux("kill-server")


@pytest.fixture
def own_room(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A room of its own: its PipeWire is killed, which the session's shared room must never have."""
    from pwgroup.sim.room import Room

    r = Room(tmp_path_factory.mktemp("tui-crash-room"))
    r.up(speakers=2, latencies_ms=[100.0, 150.0])
    yield r
    r.down()


def test_lost_sound_server_shows_a_banner_and_recovers(own_room) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(_lost_and_back(own_room))


async def _lost_and_back(room) -> None:  # type: ignore[no-untyped-def]
    from pwgroup.tui.widgets.banner import Banner

    app = app_for(room)
    async with app.run_test(size=(120, 40)) as pilot:
        table = dash(app).query_one(SpeakersTable)
        banner = dash(app).query_one(Banner)
        here = present(room)
        await until(pilot, lambda: here <= set(table.rows_shown), "the speakers")
        assert not banner.has_class("-shown")
        # In a thread: the dashboard's loop runs on while PipeWire is killed and started again.
        crash = asyncio.ensure_future(asyncio.to_thread(room.crash_server))
        await until(pilot, lambda: "sound server lost" in log_text(app), "the loss noticed", timeout=60)
        await crash
        await until(pilot, lambda: "sound server back" in log_text(app), "the server back")
        await until(pilot, lambda: not banner.has_class("-shown"), "the banner gone")
        await until(pilot, lambda: present(room) == here <= set(table.rows_shown), "the speakers again", timeout=20)


def test_attached_to_a_running_daemon(room, group: str) -> None:  # type: ignore[no-untyped-def]
    """With the daemon running, the dashboard's edits go through it (config, SIGHUP) and a pulled speaker comes
    back relinked, by the daemon, while the dashboard watches."""
    daemon = Daemon(room.env, "--keep")  # the group fixture deletes the group itself
    try:
        asyncio.run(_attached(room, group, daemon))
    finally:
        assert daemon.stop() == 0, daemon.log()


async def _attached(room, group: str, daemon: Daemon) -> None:  # type: ignore[no-untyped-def]
    first, pulled = room.speakers[0].address, room.speakers[2].address
    app = app_for(room)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: (member_shown(app, group, first) or ("",))[0] == "playing", "the group")
        assert f"daemon pid {daemon.proc.pid}" in app.screen.sub_title
        groups = dash(app).query_one(GroupsTable)
        groups.focus()
        groups.move_cursor(row=groups.get_row_index(row_key(group, first)))
        await pilot.press("shift+right")
        await until(pilot, lambda: "trim +10.0 ms" in log_text(app), "the trim applied by the daemon")
        daemon.wait_log("configuration reloaded", 5)
        applied = layout.observe_group(room.dump(), group).member(first)
        assert applied is not None and applied.delay_ms == pytest.approx(10.0, abs=1000 / RATE)

        room.disconnect(pulled)
        try:
            await until(pilot, lambda: (member_shown(app, group, pulled) or ("",))[0] == "absent", "absent")
        finally:
            room.connect(pulled)
        await until(pilot, lambda: (member_shown(app, group, pulled) or ("",))[0] == "playing", "relinked")
        assert "went away" in log_text(app) and "returned" in log_text(app)


def test_disconnect_and_connect_through_bluez(room, cli) -> None:  # type: ignore[no-untyped-def]
    """With the room's fake BlueZ on its system bus: x disconnects the speaker under the cursor (its node goes),
    c connects it again (its node is back); the table shows BlueZ's word for each."""
    room.start_bluez()  # the dashboard reaches it on the room's system bus, from the env it is given
    spk = room.speakers[3]
    try:
        asyncio.run(_bluetooth(room, spk.address))
    finally:
        if spk.address not in present(room):
            cli("connect", spk.address)


async def _bluetooth(room, address: str) -> None:  # type: ignore[no-untyped-def]
    app = PwgroupApp(LiveSource(room.env, bluetooth=True))
    async with app.run_test(size=(160, 48)) as pilot:
        table = dash(app).query_one(SpeakersTable)
        await until(pilot, lambda: address in table.rows_shown and cell(table, address, 3) == "connected", "BlueZ")
        table.focus()
        table.move_cursor(row=table.get_row_index(address))
        await pilot.press("x")
        await until(pilot, lambda: cell(table, address, 3) == "disconnected", "disconnected")
        assert address not in present(room)
        await pilot.press("c")
        await until(pilot, lambda: cell(table, address, 3) == "connected", "connected again")
        await until(pilot, lambda: address in present(room), "its node back")
        assert "disconnected" in log_text(app) and "connected" in log_text(app)


def test_keeping_the_groups_runs_one_watcher_and_one_bus_connection(room, group: str) -> None:  # type: ignore[no-untyped-def]
    """The dashboard hosting the reconciler shares its backend and BlueZ client with it (supervisor.shared): one
    `pw-dump -m` child and one system-bus connection in this process, even once the reconciler needs BlueZ."""
    room.start_bluez()
    asyncio.run(_one_of_each(room, group))


def pw_dump_watchers() -> int:
    """This process's children that are `pw-dump -m`."""
    import os
    from pathlib import Path

    count = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if ppid == os.getpid() and argv[0].endswith(b"pw-dump") and b"-m" in argv:
            count += 1
    return count


async def bus_connections(address: str, pid: int) -> int:
    """How many connections process `pid` holds to the bus at `address` (this count's own left out)."""
    from dbus_fast import Message
    from dbus_fast.aio import MessageBus

    bus = await MessageBus(bus_address=address).connect()
    try:

        async def call(member: str, signature: str = "", body: list[object] | None = None):  # type: ignore[no-untyped-def]
            msg = Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member=member,
                signature=signature,
                body=body or [],
            )
            return (await bus.call(msg)).body  # type: ignore[union-attr]

        (names,) = await call("ListNames")
        count = 0
        for name in names:
            if name.startswith(":") and name != bus.unique_name:
                (owner,) = await call("GetConnectionUnixProcessID", "s", [name])
                count += owner == pid
        return count
    finally:
        bus.disconnect()


async def _one_of_each(room, group: str) -> None:  # type: ignore[no-untyped-def]
    import os

    from pwgroup.supervisor.session import daemon_pid

    source = LiveSource(room.env, bluetooth=True)
    app = PwgroupApp(source)
    pulled = room.speakers[1].address
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: daemon_pid(room.env) == os.getpid(), "the dashboard keeping the groups")
        await until(pilot, lambda: (member_shown(app, group, pulled) or ("",))[0] == "playing", "the member")
        await until(pilot, lambda: source.bt.client is not None, "the dashboard's BlueZ client")
        room.disconnect(pulled)  # a member away: the reconciler's Bluetooth keeper asks BlueZ too
        try:
            sup = source.keeper.supervisor
            await until(pilot, lambda: sup.bluetooth.client is not None, "the reconciler's BlueZ client")
            assert sup.bluetooth.client is source.bt.client and sup.backend is source.backend
            assert pw_dump_watchers() == 1
            assert await bus_connections(room.env["DBUS_SYSTEM_BUS_ADDRESS"], os.getpid()) == 1
        finally:
            room.connect(pulled)
        await until(pilot, lambda: (member_shown(app, group, pulled) or ("",))[0] == "playing", "relinked")
        await pilot.press("q")
    assert pw_dump_watchers() == 0  # the last holder let go: the watcher ended with the dashboard
