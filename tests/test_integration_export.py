"""The 0.3.65 drop-in from `pwgroup export-conf`, installed into a real private PipeWire's pipewire.conf.d with no
daemon: the group sink and its members come up with the server, and the delays land as configured, measured
end to end on the room's truth channels."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_integration_delays import arrivals

from pwgroup import export
from pwgroup.config import load
from pwgroup.sim.room import RATE, Room

pytestmark = pytest.mark.integration

DELAYS = (0.0, 37.5, 120.0)  # member 2 also gets a trim of +2 ms: 39.5 ms in all


def _config(path: Path, room: Room) -> None:
    a, b, c = (s.address for s in room.speakers[:3])
    path.write_text(
        'version = 1\n[groups.exp]\ndescription = "Exported"\n'
        f'[[groups.exp.members]]\naddress = "{a}"\ndelay_ms = {DELAYS[0]}\n'
        f'[[groups.exp.members]]\naddress = "{b}"\ndelay_ms = {DELAYS[1]}\ntrim_ms = 2.0\n'
        f'[[groups.exp.members]]\naddress = "{c}"\ndelay_ms = {DELAYS[2]}\n'
    )


def _members_linked(room: Room, n: int):  # type: ignore[no-untyped-def]
    def check(g) -> bool:  # type: ignore[no-untyped-def]
        for spk in room.speakers[:n]:
            out = g.node_by_name(f"pwgroup.exp.{spk.address.replace(':', '_')}.out")
            node = g.node_by_name(spk.node_name)
            if out is None or node is None or len(g.links_between(out.id, node.id)) < 2:
                return False
        return g.node_by_name("pwgroup.exp") is not None

    return check


@pytest.fixture
def export_room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    """A room of its own: the test restarts its PipeWire, which the session's shared room must never have."""
    r = Room(tmp_path_factory.mktemp("export-room"))
    r.up(speakers=3, latencies_ms=[100.0, 150.0, 200.0])
    yield r
    r.down()


def test_rendered_drop_in_delays_land_in_a_real_pipewire(export_room: Room, tmp_path: Path) -> None:
    room = export_room
    config = tmp_path / "config.toml"
    _config(config, room)
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pwgroup",
            "export-conf",
            "exp",
            "--config",
            str(config),
            "--pipewire-version",
            "0.3.65",
            "--output",
            str(out),
        ],
        env=room.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    conf_d = room.root / "config" / "pipewire" / "pipewire.conf.d"
    conf_d.mkdir(parents=True, exist_ok=True)
    installed = conf_d / "pwgroup-exp.conf"
    shutil.copy(out / "pipewire" / "pipewire.conf.d" / "pwgroup-exp.conf", installed)
    try:
        room.crash_server()  # PipeWire reads its drop-ins when it starts: a restart, as the user would do
        room.wait_graph(_members_linked(room, 3), timeout=30, what="the exported group, linked by WirePlumber")
        got = arrivals(room, "exp", 3)
        want = [
            round(ms * RATE / 1000) + s.latency_samples
            for ms, s in zip((0.0, 39.5, 120.0), room.speakers, strict=False)
        ]
        assert got == want, (got, want)

        # A speaker away: its element may be parked elsewhere by WirePlumber, but never on the group sink, even
        # when that is the default sink (a feedback loop); back, it is relinked with its delay.
        subprocess.run(
            ["pw-metadata", "0", "default.configured.audio.sink", '{ "name": "pwgroup.exp" }', "Spa:String:JSON"],
            env=room.env,
            check=True,
            capture_output=True,
            timeout=10,
        )
        first = room.speakers[0]
        room.disconnect(first.address)
        time.sleep(1.0)
        g = room.dump()
        element, sink = (
            g.node_by_name(f"pwgroup.exp.{first.address.replace(':', '_')}.out"),
            g.node_by_name("pwgroup.exp"),
        )
        assert element is not None and sink is not None
        assert not g.links_between(element.id, sink.id)
        room.connect(first.address)
        room.wait_graph(_members_linked(room, 3), timeout=30, what="the member back")
        assert arrivals(room, "exp", 3) == want
    finally:
        installed.unlink(missing_ok=True)


def _pipewire_version() -> tuple[int, int, int]:
    return export.installed_pipewire_version() or export.OLDEST


def _wireplumber_version() -> tuple[int, int, int]:
    return export.installed_wireplumber_version() or (0, 4, 0)


def _export(room: Room, config: Path, version: str, wireplumber: str) -> None:
    """`pwgroup export-conf` into the room's own config home (its XDG_CONFIG_HOME): the data home's script
    goes where that WirePlumber reads it, as for a user installing into ~/.config."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pwgroup",
            "export-conf",
            "exp",
            "--config",
            str(config),
            "--pipewire-version",
            version,
            "--wireplumber-version",
            wireplumber,
            "--output",
            room.env["XDG_CONFIG_HOME"],
        ],
        env=room.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr


def _streams_linked(room: Room, n: int):  # type: ignore[no-untyped-def]
    def check(g) -> bool:  # type: ignore[no-untyped-def]
        sink = g.node_by_name("pwgroup.exp")
        if sink is None:
            return False
        for spk in room.speakers[:n]:
            node = g.node_by_name(spk.node_name)
            feeds = [lk for lk in g.links_of(node.id) if lk.in_node == node.id] if node else []
            if len(feeds) < 2:
                return False
        return True

    return check


def _offset_ns(room: Room, name: str) -> int | None:
    """The latency offset the node says it has (its Props param), as pw-dump shows it."""
    out = subprocess.run(["pw-dump"], env=room.env, capture_output=True, text=True, timeout=10, check=True).stdout
    for obj in json.loads(out):
        props = obj.get("info", {}).get("props", {})
        if obj.get("type") == "PipeWire:Interface:Node" and props.get("node.name") == name:
            for param in obj["info"].get("params", {}).get("Props", []):
                if "latencyOffsetNsec" in param:
                    return int(param["latencyOffsetNsec"])
    return None


@pytest.fixture
def reporting_room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    if _pipewire_version() < (1, 4, 0):
        pytest.skip(
            f"PipeWire {export.show(_pipewire_version())}: the room's latency-reporting speakers need a "
            "module-loopback that honours latency offsets (1.3.81, so 1.4)"
        )
    r = Room(tmp_path_factory.mktemp("export-room"))
    r.up(speakers=3, latencies_ms=[100.0, 150.0, 200.0], reports_latency=True)
    yield r
    r.down()


def test_combine_stream_drop_in_delays_land_in_a_real_pipewire(reporting_room: Room, tmp_path: Path) -> None:
    """The >= 0.3.71 files (combine-stream with latency compensation, members by node name, each member's latency
    offset set by the WirePlumber script), loaded with no pwgroup process: each member's audio arrives at its
    configured delay, on speakers whose sinks report latency and honour offsets as bluez5 nodes do."""
    room = reporting_room
    config = tmp_path / "config.toml"
    _config(config, room)
    version, wireplumber = export.show(_pipewire_version()), export.show(_wireplumber_version())
    _export(room, config, version, wireplumber)
    room.crash_server()  # PipeWire and WirePlumber read their drop-ins when they start
    room.wait_graph(_streams_linked(room, 3), timeout=30, what="combine-stream's streams to the speakers")
    offsets = export.latency_offsets_us(load(config).groups["exp"])
    want_ns = [offsets[s.address] * 1000 for s in room.speakers[:3]]
    want = [
        round(ms * RATE / 1000) + s.latency_samples for ms, s in zip((0.0, 39.5, 120.0), room.speakers, strict=False)
    ]

    def check() -> None:
        deadline = time.monotonic() + 10
        while True:  # WirePlumber's script sets the offsets as the nodes appear
            got_ns = [_offset_ns(room, s.node_name) for s in room.speakers[:3]]
            if got_ns == want_ns or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert got_ns == want_ns
        time.sleep(0.5)  # combine-stream resizes its delay lines as the speakers' Latency changes
        got = arrivals(room, "exp", 3)
        # Each member against the first: what keeps speakers together; then against the group's own monitor.
        # Measured here: exact to the sample on both counts (1.4.2 / 0.5.8); 2 samples allowed, as the issue says.
        relative = [g - got[0] - (w - want[0]) for g, w in zip(got, want, strict=True)]
        assert all(abs(r) <= 2 for r in relative), (got, want)
        assert all(abs(g - w) <= 2 for g, w in zip(got, want, strict=True)), (got, want)

    check()
    # A speaker away and back: combine-stream makes its stream again and the script sets its offset again.
    first = room.speakers[0]
    room.disconnect(first.address)
    room.wait_graph(lambda g: g.node_by_name(first.node_name) is None, what="the speaker gone")
    room.connect(first.address)
    room.wait_graph(_streams_linked(room, 3), timeout=30, what="the speaker's stream back")
    check()


def test_wireplumber_04_runs_the_offsets_script(export_room: Room, tmp_path: Path) -> None:
    """The WirePlumber 0.4 files (main.lua.d's load_script, the script in the config home's scripts/) on a real
    WirePlumber 0.4: it loads the script and the script runs to its end, once per member node, with no error.
    What the offsets then do is the 1.4.2 test's; no 0.4 stack here has a combine-stream that compensates."""
    wireplumber = _wireplumber_version()
    if wireplumber >= export.WIREPLUMBER_05:
        pytest.skip(f"WirePlumber {export.show(wireplumber)} reads no Lua config: the 0.5 files are tested above")
    room = export_room
    config = tmp_path / "config.toml"
    _config(config, room)
    files = export.render(load(config).groups["exp"], (0, 3, 71), wireplumber=wireplumber)
    script = files["wireplumber/scripts/pwgroup-exp-offsets.lua"]
    # A line that says the handler ran, for each node it matched: the room's speakers ignore the offset (their
    # sinks are filter-chains on 0.3.65), so the log is what shows the script at work.
    said = '    Log.warning("pwgroup-offsets " .. node.properties["node.name"] .. " " .. nsec)\n'
    files["wireplumber/scripts/pwgroup-exp-offsets.lua"] = script.replace(
        '    node:set_param("Props"', said + '    node:set_param("Props"'
    )
    wp_files = {k: v for k, v in files.items() if k.startswith("wireplumber/")}
    written = export.write(wp_files, room.root / "config")
    log = room.root / "log" / "wireplumber.log"
    try:
        room.crash_server()
        room.wait_graph(_members_linked_or_present(room), timeout=30, what="the speakers back")
        deadline = time.monotonic() + 10
        want = {
            f"pwgroup-offsets {s.node_name} {ns}"
            for s, ns in zip(room.speakers, (120000000, 80500000, 0), strict=False)
        }
        while time.monotonic() < deadline and not want <= _logged(log):
            time.sleep(0.2)
        assert want <= _logged(log), log.read_text(errors="replace")[-2000:]
        assert "pwgroup-exp-offsets.lua" not in "".join(
            line for line in log.read_text(errors="replace").splitlines() if "rror" in line
        )
    finally:
        for path in written:
            path.unlink(missing_ok=True)


def _members_linked_or_present(room: Room):  # type: ignore[no-untyped-def]
    return lambda g: all(g.node_by_name(s.node_name) is not None for s in room.speakers[:3])


def _logged(log: Path) -> set[str]:
    text = log.read_text(errors="replace") if log.exists() else ""
    return {line[line.index("pwgroup-offsets") :].strip() for line in text.splitlines() if "pwgroup-offsets" in line}
