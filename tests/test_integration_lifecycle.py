"""Groups come and go without leftovers; hostile names break nothing; errors are one line with the right code."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pwgroup.graph import pwdump
from pwgroup.graph.proc import process_alive
from pwgroup.sim.room import Room
from pwgroup.sim.server import server_env

pytestmark = pytest.mark.integration


def graph_fingerprint(room) -> tuple[set[str], int, int]:  # type: ignore[no-untyped-def]
    if room.backend == "pulse":
        # Everything pwgroup makes on PulseAudio is a module; streams and sources come and go with them.
        modules = set(room.pactl("list", "short", "modules").splitlines())
        sources = len(room.pactl("list", "short", "sources").splitlines())
        return modules, sources, len(room.pactl("list", "short", "clients").splitlines())
    graph = room.dump()
    names = {n.name for n in graph.nodes.values() if not n.name.startswith("pwgroup-rec")}
    return names, len(graph.links), len(graph.clients)


def pipewire_processes(room: Room) -> set[int]:
    """`pipewire` processes of this room (by their environment), so other rooms on the machine don't count."""
    found = set()
    mark = f"PIPEWIRE_RUNTIME_DIR={room.root}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and os.path.basename(argv[0].decode(errors="replace")) == "pipewire" and mark in environ:
                found.add(int(entry.name))
    return found


def test_group_sink_is_an_ordinary_sink_apps_can_pick(sound_cli, sound_room, sound_group: str) -> None:
    room, group = sound_room, sound_group
    out = subprocess.run(["pactl", "list", "sinks"], env=room.env, capture_output=True, text=True, check=True).stdout
    assert f"Name: pwgroup.{group}" in out
    assert f"Description: {group} (pwgroup)" in out


def test_status_json_reports_members(sound_cli, sound_room, sound_group: str) -> None:
    cli, room, group = sound_cli, sound_room, sound_group
    cli("delay", "set", group, room.speakers[1].address, "12", check=True)
    code, out, _ = cli("status", group, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["backend"] == room.backend and data["backend_reason"]
    (g,) = data["groups"]
    assert g["sink"] == f"pwgroup.{group}"
    by_addr = {m["address"]: m for m in g["members"]}
    assert set(by_addr) == {s.address for s in room.speakers[:3]}
    m = by_addr[room.speakers[1].address]
    assert m["present"] is True and m["linked"] is True and m["delay_ms"] == 12.0
    assert m["node"] == room.speakers[1].node_name


def test_delete_leaves_graph_and_process_table_as_found(sound_cli, sound_room) -> None:
    cli, room = sound_cli, sound_room
    before = graph_fingerprint(room)
    procs_before = pipewire_processes(room)
    cli("group", "create", "temp", *[s.address for s in room.speakers[:3]], check=True)
    cli("delay", "set", "temp", room.speakers[0].address, "40", check=True)
    assert graph_fingerprint(room) != before
    cli("group", "delete", "temp", check=True)
    assert graph_fingerprint(room) == before
    assert pipewire_processes(room) == procs_before


def test_sink_survives_losing_every_member_and_members_return(sound_cli, sound_room, sound_group: str) -> None:
    cli, room, group = sound_cli, sound_room, sound_group
    for spk in room.speakers[:3]:
        room.disconnect(spk.address)
    try:
        data = json.loads(cli("status", group, "--json", check=True)[1])
        g = data["groups"][0]
        assert g["sink"] == f"pwgroup.{group}"
        assert [m["present"] for m in g["members"]] == [False, False, False]
        assert all(m["delay_ms"] is not None for m in g["members"]), "delay elements must outlive their speakers"
    finally:
        for spk in room.speakers[:3]:
            room.connect(spk.address)
    # One reconcile pass (any edit runs one) relinks the returned speakers.
    cli("delay", "set", group, room.speakers[0].address, "1", check=True)
    g = json.loads(cli("status", group, "--json", check=True)[1])["groups"][0]
    assert all(m["linked"] for m in g["members"])


HOSTILE = [
    'a b=c "x',
    'quote " and \\ backslash',
    "new\nline",
    "-d",
    "a:b",
    "\x1b[31mred\x1b[0m \x1b]0;title\x07",
    "[bold]markup[/bold] [link=x]y[/link]",
    "\u202eevil\u200f rtl",
    "} ] = { node.name = x",
    "Z" * 10240,
]


def test_hostile_descriptions_are_shown_literally(sound_cli, sound_room) -> None:
    cli, room = sound_cli, sound_room
    added = [room.add_speaker(desc, latency_ms=90.0) for desc in HOSTILE]
    try:
        code, out, err = cli("speakers", "--json")
        assert code == 0, err
        listed = {s["address"]: s["name"] for s in json.loads(out)["speakers"]}
        for spk in added:
            assert listed[spk.address] == spk.description
        code, out, err = cli("speakers")
        assert code == 0, err
        assert "\x1b" not in out and "\u202e" not in out and "\x07" not in out
        assert "\\x1b[31mred" in out and "\\u202eevil" in out and "new\\x0aline" in out
        assert "[bold]markup[/bold]" in out
        # A group over hostile speakers works like any other.
        cli("group", "create", "hostile", added[0].address, added[1].address, added[2].address, check=True)
        g = json.loads(cli("status", "hostile", "--json", check=True)[1])["groups"][0]
        assert all(m["linked"] for m in g["members"])
        if room.backend == "pulse":
            # pwgroup's own modules name speakers by sink index only: nothing from the air reaches an argument.
            mine = [ln for ln in room.pactl("list", "short", "modules").splitlines() if "pwgroup.group=" in ln]
            assert len(mine) == 7, mine  # the sink, three records, three loopbacks
            assert not any(part in ln for ln in mine for part in ('"x', "b=c", "quote", "\\", "evil", "ZZZ"))
        cli("group", "delete", "hostile", check=True)
    finally:
        for spk in added:
            room.disconnect(spk.address)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["group", "create", "x", "AA:BB:CC:99:99:99"], "unknown speaker"),
        (["group", "create", "-- bad name", "AA:BB:CC:00:00:01"], "invalid group name"),
        (["group", "add", "nope", "AA:BB:CC:00:00:01"], "no group named"),
        (["delay", "set", "nope", "AA:BB:CC:00:00:01", "10"], "no group named"),
        (["delay", "set", "nope", "AA:BB:CC:00:00:01", "10", "AA:BB:CC:00:00:02"], "pairs"),
        (["status", "nope"], "no group named"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(cli, args: list[str], needle: str) -> None:
    code, _out, err = cli(*args)
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_delays_and_duplicates_exit_2(cli, room: Room, group: str) -> None:
    addr = room.speakers[0].address
    for bad in ("-5", "abc", "5000", "nan"):
        code, _, err = cli("delay", "set", group, addr, bad)
        assert code == 2 and "delay" in err and "Traceback" not in err
    code, _, err = cli("delay", "set", group, addr, "10", addr.lower(), "20")
    assert code == 2 and "named twice" in err and "Traceback" not in err
    code, _, err = cli("group", "create", group, addr)
    assert code == 2 and "already exists" in err
    code, _, err = cli("group", "add", group, addr)
    assert code == 2 and "already in group" in err


def test_unreachable_server_exits_3_with_the_fix(tmp_path: Path) -> None:
    env = server_env(tmp_path / "nothing-here")
    proc = subprocess.run([sys.executable, "-m", "pwgroup", "status"], env=env, capture_output=True, text=True)
    assert proc.returncode == 3
    assert "cannot reach PipeWire" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_sim_down_removes_every_process_it_started(tmp_path: Path) -> None:
    root = tmp_path / "room"
    env = dict(os.environ, PWGROUP_SIM_DIR=str(root))
    run = [sys.executable, "-m", "pwgroup", "sim"]
    subprocess.run([*run, "up", "--speakers", "2"], env=env, check=True, capture_output=True, timeout=60)
    pids = json.loads((root / "pids.json").read_text())
    assert set(pids) >= {
        *("dbus", "system-dbus", "bluez", "pipewire", "wireplumber", "pipewire-pulse", "speaker-1", "speaker-2")
    }
    room_env = server_env(root)
    subprocess.run(
        [sys.executable, "-m", "pwgroup", "group", "create", "g", "AA:BB:CC:00:00:01", "AA:BB:CC:00:00:02"],
        env=room_env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    graph = pwdump.parse(subprocess.run(["pw-dump"], env=room_env, capture_output=True, text=True).stdout)
    member_pids = {
        pid
        for n in graph.nodes.values()
        if n.name.startswith("pwgroup.g.") and (pid := graph.client_pid(n)) is not None
    }
    assert len(member_pids) == 2
    subprocess.run([*run, "down"], env=env, check=True, capture_output=True, timeout=60)
    for pid in [*pids.values(), *member_pids]:
        assert not process_alive(pid), f"process {pid} survived sim down"
    assert not any((root / name).exists() for name in ("pipewire-0", "bus", "system_bus", "bluez.ready"))


def test_pulseaudio_names_what_went_and_loopback_rate_changes_wake_nobody(pulse_room) -> None:  # type: ignore[no-untyped-def]
    """Each loopback's rate control changes its sink input up to ten times a second, a change event each: they
    must not wake pwgroup (they cost the daemon 2 % CPU when they did). A removal names what went."""
    from pulsectl_asyncio import PulseAsync

    from pwgroup.graph.pulse import PulseBackend

    room = pulse_room
    run = [sys.executable, "-m", "pwgroup"]
    members = [s.address for s in room.speakers[:2]]
    subprocess.run([*run, "group", "create", "quiet", *members], env=room.env, check=True)
    player = room.play("quiet", None).start()
    away = room.speakers[3]

    async def watch() -> tuple[int, int, list[tuple[str, str]]]:
        backend = await PulseBackend(room.env).open()
        events = 0
        async with PulseAsync("test", server=room.env["PULSE_SERVER"]) as pulse:

            async def count() -> None:
                nonlocal events
                async for ev in pulse.subscribe_events("sink_input"):
                    events += ev.t == "change" and ev.index in backend._own_inputs

            counter = asyncio.create_task(count())
            # The rates a joining line is judged by are whole and near the room's 48 kHz (pulsectl's own copy of
            # them is read from freed memory; the backend keeps its own, see pulse._keep_rates).
            lines = [x for x in await pulse.sink_input_list() if x.index in backend._own_inputs]
            assert lines and all(abs(x.rate - 48000) <= 480 for x in lines), [x.rate for x in lines]
            await asyncio.sleep(0.5)
            serial, events = backend.serial, 0
            # Settled lines change their rate in bursts a few seconds apart: watch until five changes came.
            deadline = time.monotonic() + 20.0
            while events < 5 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            woken = backend.serial - serial
            counter.cancel()
        room.disconnect(away.address)
        deadline = time.monotonic() + 5
        while ("sink", away.node_name) not in backend.removed and time.monotonic() < deadline:
            await backend.wait_changed(0.2)
        await backend.close()
        return events, woken, list(backend.removed)

    try:
        events, woken, removed = asyncio.run(watch())
    finally:
        room.connect(away.address)
        player.stop()
        subprocess.run([*run, "group", "delete", "quiet"], env=room.env, check=True)
    assert events >= 5, "the loopbacks' rates never changed: this test proves nothing"
    assert woken == 0, f"{events} rate changes woke the backend {woken} times"
    assert ("sink", away.node_name) in removed
