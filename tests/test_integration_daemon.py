"""The daemon in the virtual room: it heals members that drop and return, keeps the sink for apps when every
speaker is gone, applies config edits and CLI changes, survives WirePlumber restarts and a flapping speaker."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_integration_delays import arrivals, ref_slack, slack

from pwgroup.config import config_path
from pwgroup.graph import spajson
from pwgroup.graph.capture import installed_stream_tools
from pwgroup.graph.proc import tool
from pwgroup.graph.pulse import CONVERGE_S, JOIN_TIMEOUT_S
from pwgroup.sim.room import Room
from pwgroup.supervisor.session import daemon_pid


class Daemon:
    """`pwgroup daemon` as a user (or systemd) runs it, against the room."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.env = env
        self.log_path = Path(env["XDG_RUNTIME_DIR"]) / f"daemon-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pwgroup", "daemon", *args], env=env, stdout=self._log, stderr=self._log
        )
        self.wait_log("sound server:", 15)  # connected: what happens from now on, it sees
        deadline = time.monotonic() + 5
        while daemon_pid(env) != self.proc.pid:
            assert time.monotonic() < deadline, "the daemon never took its lock"
            time.sleep(0.02)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.log().count(needle) < count:
            assert self.proc.poll() is None, f"the daemon died: {self.log()}"
            assert time.monotonic() < deadline, f"no {needle!r} in the daemon's log: {self.log()}"
            time.sleep(0.02)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def daemon(room: Room, group: str) -> Iterator[Daemon]:
    d = Daemon(room.env, "--keep")  # the group fixture deletes the group itself
    yield d
    assert d.stop() == 0, d.log()


@pytest.fixture
def sound_daemon(sound_room, sound_group: str) -> Iterator[Daemon]:  # type: ignore[no-untyped-def]
    """The daemon over the group on each backend in turn."""
    d = Daemon(sound_room.env, "--keep")
    yield d
    assert d.stop() == 0, d.log()


def status(cli, group: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return json.loads(cli("status", group, "--json", check=True)[1])["groups"][0]


def wait_status(cli, group: str, check, timeout: float = 5.0) -> dict:  # type: ignore[no-untyped-def,type-arg]
    deadline = time.monotonic() + timeout
    while True:
        g = status(cli, group)
        if check(g):
            return g
        assert time.monotonic() < deadline, f"the group never got there: {g}"
        time.sleep(0.05)


def test_a_member_that_drops_and_returns_is_relinked_with_its_delay(
    sound_cli, sound_room, sound_group: str, sound_daemon: Daemon
) -> None:
    cli, room, group, daemon = sound_cli, sound_room, sound_group, sound_daemon
    # The room's BlueZ would bring the speaker back by itself ~2 s after the daemon asks: the member's absence
    # would then be a race with `status` (lost in one clean-clone run). Here it returns when the test says.
    set_reconnect(room, enabled=False)
    try:
        cli("delay", "set", group, room.speakers[0].address, "30", check=True)  # through the daemon
        daemon.wait_log("configuration reloaded", 5)
        away = room.speakers[1]
        room.disconnect(away.address)
        # On PulseAudio the daemon may still be swapping in the new delay (CONVERGE_S) before it hears of the loss.
        daemon.wait_log(f"{away.address} went away", 5 + CONVERGE_S)
        g = status(cli, group)
        assert [m["linked"] for m in g["members"]] == [True, False, True]  # the others play on
        room.connect(away.address)
        daemon.wait_log(f"{away.address} returned", 5)
        # On PulseAudio it plays, and counts as linked, once its loopback has settled on its delay.
        g = wait_status(cli, group, lambda g: all(m["linked"] for m in g["members"]), timeout=5 + JOIN_TIMEOUT_S)
        # It reconnected after its last calibration (it never had one): its latency is worth a look.
        assert [m["recheck_latency"] for m in g["members"]] == [False, True, False]
        lags = arrivals(room, group, 3)
        want = [30 * 48 + room.speakers[0].latency_samples, *(s.latency_samples for s in room.speakers[1:3])]
        assert all(abs(a - b) <= max(1, ref_slack(room)) for a, b in zip(lags, want, strict=True)), (lags, want)
        relative = [a - lags[0] - (b - want[0]) for a, b in zip(lags, want, strict=True)]
        assert all(abs(r) <= max(1, slack(room)) for r in relative), (lags, want)
    finally:
        set_reconnect(room)  # the defaults again, for the tests after it in this room


def test_with_every_speaker_gone_the_sink_stays_and_apps_keep_playing(cli, room: Room, group: str, daemon) -> None:
    app = subprocess.Popen(
        [tool("pw-cat"), "--playback", *installed_stream_tools().raw_stdin(),
         "--target", f"pwgroup.{group}", "--rate", "48000", "--channels", "2",
         "--format", "f32", "-P", spajson.dumps({"node.name": "test-app"}), "-"],
        env=room.env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert app.stdin is not None
    try:
        app.stdin.write(np.zeros((4800, 2), dtype="<f4").tobytes())
        app.stdin.flush()
        sink_id = (
            room.wait_graph(
                lambda g: any(
                    lk.in_node == g.node_by_name(f"pwgroup.{group}").id  # type: ignore[union-attr]
                    for lk in g.links.values()
                    if g.nodes.get(lk.out_node) and g.nodes[lk.out_node].name == "test-app"
                ),
                what="the app to play to the group",
            )
            .node_by_name(f"pwgroup.{group}")
            .id
        )  # type: ignore[union-attr]
        for spk in room.speakers[:3]:
            room.disconnect(spk.address)
        daemon.wait_log("went away", 5, count=3)
        time.sleep(0.3)
        graph = room.dump()
        app_node = graph.node_by_name("test-app")
        assert graph.node_by_name(f"pwgroup.{group}") is not None and app_node is not None
        assert any(lk.out_node == app_node.id and lk.in_node == sink_id for lk in graph.links.values())
        assert app.poll() is None
    finally:
        for spk in room.speakers[:3]:
            room.connect(spk.address)
        app.kill()
        app.wait()
    wait_status(cli, group, lambda g: all(m["linked"] for m in g["members"]))


def test_a_config_edited_by_hand_is_applied_on_sighup_and_keeps_its_comments(
    cli, room: Room, group: str, daemon
) -> None:
    path = config_path(room.env)
    text = path.read_text()
    first = room.speakers[0].address
    marker = f'address = "{first}"\n'
    assert marker in text
    edited = text.replace(marker, marker + "trim_ms = 7.5  # the sofa is further away\nvolume = 0.5\n")
    path.write_text("# edited by hand\n" + edited)
    daemon.proc.send_signal(signal.SIGHUP)
    g = wait_status(cli, group, lambda g: g["members"][0]["delay_ms"] == 7.5)
    assert g["members"][1]["delay_ms"] == 0.0
    cli("delay", "set", group, room.speakers[1].address, "12", check=True)  # a CLI edit on top of the hand edit
    kept = path.read_text()
    assert "# edited by hand" in kept and "# the sofa is further away" in kept and "delay_ms = 12.0" in kept


def test_a_broken_edit_is_refused_and_the_old_config_kept(cli, room: Room, group: str, daemon) -> None:
    path = config_path(room.env)
    good = path.read_text()
    path.write_text(good.replace('address = "', 'address = "nonsense-', 1))
    try:
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("configuration not reloaded", 5)
        assert "address: must be a Bluetooth address" in daemon.log()
        assert daemon.proc.poll() is None
        code, _out, err = cli("config", "check")
        assert code == 2 and ":" in err and "must be a Bluetooth address" in err and "Traceback" not in err
    finally:
        path.write_text(good)


def test_one_daemon_per_session(room: Room, group: str, daemon) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "pwgroup", "daemon"], env=room.env, capture_output=True, text=True, timeout=30
    )
    assert second.returncode == 2 and "already runs" in second.stderr and "Traceback" not in second.stderr


def test_sigterm_removes_what_the_daemon_built_unless_kept(cli, room: Room, group: str) -> None:
    d = Daemon(room.env)
    assert d.stop() == 0, d.log()
    assert "group " + group + " removed" in d.log()
    graph = room.dump()
    assert graph.node_by_name(f"pwgroup.{group}") is None
    assert not [n for n in graph.nodes.values() if n.props.get("pwgroup.group") == group]


@pytest.fixture
def crash_room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    """A room of its own: its PipeWire is killed, which the session's room must never be."""
    r = Room(tmp_path_factory.mktemp("crash-room"))
    r.up(speakers=2, latencies_ms=[120.0, 180.0])
    yield r
    r.down()


def test_links_come_back_after_wireplumber_restarts(crash_room: Room) -> None:
    room = crash_room
    assert _run(room, "group", "create", "g", *(s.address for s in room.speakers)).returncode == 0
    d = Daemon(room.env)
    try:
        room.server.restart("wireplumber")
        room.wait_graph(room.server.session_manager_in, what="WirePlumber")
        away = room.speakers[1]
        room.disconnect(away.address)
        room.connect(away.address)  # its new ports come from the new WirePlumber; the daemon links them
        deadline = time.monotonic() + 10
        while not all(
            m["linked"] for m in json.loads(_run(room, "status", "g", "--json").stdout)["groups"][0]["members"]
        ):
            assert time.monotonic() < deadline, d.log()
            time.sleep(0.05)
    finally:
        assert d.stop() == 0, d.log()


def _run(room: Room, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pwgroup", *args], env=room.env, capture_output=True, text=True, timeout=60
    )


def test_a_flapping_speaker_costs_bounded_cpu_and_settles(cli, room: Room, group: str, daemon) -> None:
    # A fourth member whose node comes and goes 40 times, as fast as pw-cli makes and destroys it (a few times a
    # second: a speaker at the edge of range).
    flappy = room.add_speaker("Flappy", latency_ms=90.0)
    # The flapping is played on PipeWire's side alone: Bluetooth reconnects would bring the real one back.
    set_reconnect(room, enabled=False)
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_log("configuration reloaded", 5)
    cli("group", "add", group, flappy.address, check=True)
    room.disconnect(flappy.address)
    props = {
        "factory.name": "support.null-audio-sink",
        "node.name": flappy.node_name,
        "media.class": "Audio/Sink",
        "device.api": "bluez5",
        "api.bluez5.address": flappy.address,
        "audio.position": ["FL", "FR"],
        "object.linger": True,
    }
    before = daemon.cpu_seconds()
    started = time.monotonic()
    for _ in range(40):
        room.pw_cli("create-node", "adapter", spajson.dumps(props))
        time.sleep(0.05)
        node = room.dump().node_by_name(flappy.node_name)
        if node is not None:
            room.pw_cli("destroy", str(node.id))
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    used = daemon.cpu_seconds() - before
    assert used / elapsed < 0.6, f"the daemon used {used:.1f} s of CPU in {elapsed:.1f} s of flapping"
    room.connect(flappy.address)
    wait_status(cli, group, lambda g: len(g["members"]) == 4 and all(m["linked"] for m in g["members"]))
    cli("group", "remove", group, flappy.address, check=True)
    room.disconnect(flappy.address)


def test_the_group_is_rebuilt_aligned_after_pipewire_is_killed(crash_room: Room) -> None:
    room = crash_room

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return _run(room, *args)

    assert run("group", "create", "g", *(s.address for s in room.speakers)).returncode == 0
    assert run("delay", "set", "g", room.speakers[0].address, "60").returncode == 0
    d = Daemon(room.env)
    try:
        for _ in range(2):  # twice: the second crash meets a daemon that already came back once
            up = room.crash_server()
            d.wait_log("PipeWire is back", 10)
            deadline = up + 10
            while True:
                g = json.loads(run("status", "g", "--json").stdout)["groups"]
                if g and all(m["linked"] for m in g[0]["members"]):
                    break
                assert time.monotonic() < deadline, d.log()
                time.sleep(0.05)
            want = [60 * 48 + room.speakers[0].latency_samples, room.speakers[1].latency_samples]
            while True:
                # Right after a crash a freshly linked path can stay silent for a moment (seen: up to ~1 s).
                try:
                    lags = arrivals(room, "g", 2)
                    break
                except AssertionError:
                    assert time.monotonic() < deadline, d.log()
            assert all(abs(a - b) <= 1 for a, b in zip(lags, want, strict=True)), (lags, want)
    finally:
        assert d.stop() == 0, d.log()
    # Nothing left behind: no element from before the crash lingers beside its successor.
    leftover = [p for p in Path("/proc").iterdir() if p.name.isdigit() and str(room.root / "pwgroup") in _cmd(p)]
    assert leftover == []


def _cmd(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def set_reconnect(room: Room, **values: object) -> None:
    """Replace the config's [reconnect] table, by editing the file as a user would."""
    path = config_path(room.env)
    text = re.sub(r"(?ms)^\[reconnect\]\n.*?(?=^\[|\Z)", "", path.read_text())
    lines = "".join(f"{k} = {str(v).lower() if isinstance(v, bool) else v}\n" for k, v in values.items())
    path.write_text(text.rstrip("\n") + "\n\n[reconnect]\n" + lines)


def _fast_reconnect(room: Room) -> None:
    set_reconnect(room, initial_s=0.2, max_s=1)  # the default starts at 2 s


def test_a_speaker_out_of_range_is_reconnected_through_bluez_when_it_is_back(cli, room: Room, group: str) -> None:
    _fast_reconnect(room)
    d = Daemon(room.env, "--keep")
    away = room.speakers[2]
    try:
        room.bluez_control("OutOfRange", away.address)
        d.wait_log(f"{away.address} is away: reconnecting it", 5)
        time.sleep(1.0)  # a few attempts fail: the speaker is not there
        g = status(cli, group)
        state = {m["speaker"]: m for m in g["members"]}[away.address]
        assert not state["present"] and state["reconnect"].startswith(("waiting", "connecting")), state
        room.bluez_control("InRange", away.address)  # BlueZ itself would not reconnect it: the daemon does
        wait_status(cli, group, lambda g: all(m["linked"] for m in g["members"]), timeout=10)
        d.wait_log(f"{away.address} returned", 5)
    finally:
        room.bluez_control("InRange", away.address)
        assert d.stop() == 0, d.log()
        room.connect(away.address)  # whatever happened above, the shared room gets its speaker back


def test_reconnecting_gives_up_after_repeated_auth_failures_and_survives_bluez_restarts(
    cli, room: Room, group: str
) -> None:
    _fast_reconnect(room)
    d = Daemon(room.env, "--keep")
    away = room.speakers[1]
    try:
        room.bluez_control("SetFault", away.address, "auth")
        room.bluez_control("OutOfRange", away.address)
        room.bluez_control("InRange", away.address)  # in range, but it refuses our key
        d.wait_log(f"{away.address}: giving up: auth failed", 10)
        state = {m["speaker"]: m for m in status(cli, group)["members"]}[away.address]
        assert state["reconnect"] == "giving up: auth failed"
        # BlueZ restarts (the fake killed and started again); after the user fixes the pairing, the next
        # loss is handled by a daemon whose BlueZ cache was rebuilt.
        room.bluez_control("SetFault", away.address, "")
        room.stop_bluez()
        room.start_bluez()
        cli("connect", away.address, check=True)
        wait_status(cli, group, lambda g: all(m["linked"] for m in g["members"]), timeout=10)
        room.bluez_control("OutOfRange", away.address)
        d.wait_log(f"{away.address} is away: reconnecting it", 5, count=2)
        room.bluez_control("InRange", away.address)
        wait_status(cli, group, lambda g: all(m["linked"] for m in g["members"]), timeout=10)
    finally:
        room.bluez_control("SetFault", away.address, "")
        room.bluez_control("InRange", away.address)
        assert d.stop() == 0, d.log()
        room.connect(away.address)  # whatever happened above, the shared room gets its speaker back


def test_systemd_hears_ready_and_stopping(room: Room, tmp_path: Path) -> None:
    import socket

    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(15)
        d = Daemon({**room.env, "NOTIFY_SOCKET": address, "JOURNAL_STREAM": "8:1234"}, "--keep")
        assert sock.recv(256) == b"READY=1"
        assert d.stop() == 0
        assert sock.recv(256) == b"STOPPING=1"
    # Under systemd (JOURNAL_STREAM set) each line carries its sd-daemon level, for journalctl -p.
    assert all(line.startswith(("<6>", "<4>", "<3>")) for line in d.log().splitlines()), d.log()


def test_service_install_writes_a_user_unit_for_this_python(cli, room: Room) -> None:
    code, out, _ = cli("service", "install", "--print")
    assert code == 0 and "Type=notify" in out and f"ExecStart={sys.executable} -m pwgroup daemon" in out
    assert "KillMode=process" in out and "Restart=on-failure" in out
    code, out, _ = cli("service", "install")
    unit = Path(room.env["XDG_CONFIG_HOME"]) / "systemd" / "user" / "pwgroup.service"
    assert code == 0 and unit.read_text().startswith("# Installed by `pwgroup service install`")
    assert "systemctl --user enable --now pwgroup" in out
    unit.unlink()
