"""The virtual room: fake Bluetooth speakers with hidden latencies on a private PipeWire, a microphone, a truth tap.

Each speaker is a sink named like BlueZ's (or, for a sink member, like an ALSA output); what it plays reaches the
room through a hidden filter-chain convolver (latency and gain live in an impulse-response file, never in graph
names or props).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from pwgroup.graph import layout, spajson
from pwgroup.graph.capture import Player, Recorder, dump_graph, write_wav
from pwgroup.graph.pipewire import filter_chain_process_config
from pwgroup.graph.proc import run_sync, tool
from pwgroup.model import KIND_BLUETOOTH, Graph, PwgroupError
from pwgroup.sim.base import MODELS, RATE, SimRoom, SimSpeaker
from pwgroup.sim.server import PrivateServer, default_root

__all__ = ["MODELS", "RATE", "Room", "SimSpeaker"]

ROOM_STATE = "room.json"
MIC_NAME = "pwgroup-sim.mic"
NOISE_NAME = "pwgroup-sim.noise"
SIM_GROUP = "pwgroup-sim"
BLUEZ_KEY = "bluez"
BLUEZ_READY = "bluez.ready"
SIM_CONTROL_NAME = "org.pwgroup.SimBluez"
SIM_CONTROL_PATH = "/org/pwgroup/sim"


def speaker_props(spk: SimSpeaker) -> dict[str, Any]:
    """What BlueZ's A2DP sink node carries; the description is whatever the speaker announced. A sink that is not
    Bluetooth carries what any other sink does: a name, a description, its channels."""
    if spk.kind != KIND_BLUETOOTH:
        return {
            "node.name": spk.node_name,
            "node.description": spk.description,
            "media.class": "Audio/Sink",
            "audio.channels": 2,
            "audio.position": ["FL", "FR"],
        }
    return {
        "node.name": spk.node_name,
        "node.description": spk.description,
        "media.class": "Audio/Sink",
        "device.api": "bluez5",
        "device.bus": "bluetooth",
        "api.bluez5.address": spk.address,
        "api.bluez5.codec": spk.codec,
        "api.bluez5.profile": "a2dp-sink",
        "audio.channels": 2,
        "audio.position": ["FL", "FR"],
    }


def speaker_config(spk: SimSpeaker, ir_path: Path) -> str:
    """One speaker as one process: its sink (named like BlueZ's) is the input of a filter-chain that
    downmixes and convolves with the room's impulse response, so latency and gain live only in a file.
    Written as a config file: pw-cli's argument buffer (4 KiB in 0.3.65) overflows on long names."""
    args = {
        "node.description": spk.description,
        "media.name": "pwgroup-sim speaker",
        "filter.graph": {
            "nodes": [
                {"type": "builtin", "name": "down", "label": "mixer", "control": {"Gain 1": 0.5, "Gain 2": 0.5}},
                {"type": "builtin", "name": "air", "label": "convolver", "config": {"filename": str(ir_path)}},
            ],
            "links": [{"output": "down:Out", "input": "air:In"}],
            "inputs": ["down:In 1", "down:In 2"],
            "outputs": ["air:Out"],
        },
        "capture.props": speaker_props(spk),
        "playback.props": {
            "node.name": spk.emit_name,
            "node.autoconnect": False,
            "audio.channels": 1,
            "audio.position": ["MONO"],
        },
    }
    return filter_chain_process_config(args)


def reporting_speaker_config(spk: SimSpeaker, ir_path: Path) -> str:
    """A speaker whose sink behaves as a bluez5 A2DP node does for latency: it reports a latency to its peers
    and adds its latency offset (Props `latencyOffsetNsec`, set with pw-cli or by WirePlumber) to it, so that
    what compensates for reported latency (combine-stream) sees the offset. The sink is a module-loopback
    capture node (which does so from PipeWire 1.3.81, so 1.4; 0.3.65 to 1.2 do not), linked by the room to the same
    hidden acoustics as speaker_config's. What it reports before an offset is its downstream's latency, alike
    for every such speaker: a bluez5 node's own report (delay report or fallback) is not modelled."""
    loopback = {
        "node.description": spk.description,
        "audio.position": ["FL", "FR"],
        "capture.props": speaker_props(spk),
        "playback.props": {"node.name": spk.link_name, "node.autoconnect": False, "node.passive": True},
    }
    chain = {
        "node.description": spk.description,
        "media.name": "pwgroup-sim speaker",
        "filter.graph": {
            "nodes": [
                {"type": "builtin", "name": "down", "label": "mixer", "control": {"Gain 1": 0.5, "Gain 2": 0.5}},
                {"type": "builtin", "name": "air", "label": "convolver", "config": {"filename": str(ir_path)}},
            ],
            "links": [{"output": "down:Out", "input": "air:In"}],
            "inputs": ["down:In 1", "down:In 2"],
            "outputs": ["air:Out"],
        },
        "capture.props": {
            "node.name": spk.air_name,
            "node.autoconnect": False,
            "audio.channels": 2,
            "audio.position": ["FL", "FR"],
        },
        "playback.props": {
            "node.name": spk.emit_name,
            "node.autoconnect": False,
            "audio.channels": 1,
            "audio.position": ["MONO"],
        },
    }
    text = filter_chain_process_config(chain)
    extra = "    { name = libpipewire-module-loopback args = " + spajson.dumps(loopback, 1) + " }\n]"
    head, _, tail = text.rpartition("]")
    return head + extra + tail


def _reflections(rng: random.Random) -> list[tuple[float, float]]:
    return [
        (round(rng.uniform(2.0, 25.0), 2), round(rng.uniform(0.2, 0.6) * rng.choice((-1, 1)), 3))
        for _ in range(rng.randint(2, 4))
    ]


async def _control_call(env: dict[str, str], method: str, signature: str, body: list[Any]) -> None:
    bus = await MessageBus(bus_address=env["DBUS_SYSTEM_BUS_ADDRESS"]).connect()
    try:
        msg = Message(
            destination=SIM_CONTROL_NAME,
            path=SIM_CONTROL_PATH,
            interface=SIM_CONTROL_NAME,
            member=method,
            signature=signature,
            body=body,
        )
        reply = await asyncio.wait_for(bus.call(msg), 30.0)
        if reply.message_type == MessageType.ERROR:
            raise PwgroupError(f"fake BlueZ {method} failed: {reply.error_name} {reply.body}")
    finally:
        bus.disconnect()


class Room(SimRoom):
    """A virtual room on a private PipeWire. Synchronous: it is test and demo infrastructure."""

    backend = "pipewire"
    state_file = ROOM_STATE
    lead_s = 0.0  # audio reaches the truth channels with no latency beyond the members' own delays
    reports_latency = False  # new speakers' sinks report latency as bluez5 nodes do (up(reports_latency=True))

    def __init__(self, root: Path | None = None) -> None:
        root = root or default_root()
        super().__init__(root, PrivateServer(root))

    # ------------------------------------------------------------ graph helpers
    def dump(self) -> Graph:
        return dump_graph(self.env)

    def wait_graph(self, check, timeout: float = 10.0, what: str = "the room") -> Graph:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while True:
            graph = self.dump()
            if check(graph):
                return graph
            if time.monotonic() > deadline:
                raise PwgroupError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def _node_with_ports(self, name: str, direction: str) -> Any:
        def ok(g: Graph) -> bool:
            n = g.node_by_name(name)
            return n is not None and bool(g.ports_of(n.id, direction, monitor=False))  # type: ignore[arg-type]

        return self.wait_graph(ok, what=name)

    def link_nodes(self, out_name: str, in_name: str, monitor: bool = False) -> None:
        graph = self.dump()
        out_node, in_node = graph.node_by_name(out_name), graph.node_by_name(in_name)
        if out_node is None or in_node is None:
            raise PwgroupError(f"cannot link {out_name} to {in_name}: a node is missing")
        outs = graph.ports_of(out_node.id, "out", monitor=monitor)
        ins = graph.ports_of(in_node.id, "in")
        for out_port, in_port in layout.channel_pairs(outs, ins):
            self.pw_link(out_port, in_port)

    def pw_link(self, out_port: int, in_port: int) -> None:
        res = run_sync(
            [tool("pw-link"), "--", str(out_port), str(in_port)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if res.returncode != 0 and "File exists" not in res.stderr:
            raise PwgroupError(f"pw-link failed: {res.stderr.strip()}")

    def pw_cli(self, *args: str) -> str:
        res = run_sync([tool("pw-cli"), *args], env=self.env, capture_output=True, text=True, timeout=10, check=False)
        if res.returncode != 0 or res.stdout.startswith("Error"):
            raise PwgroupError(f"pw-cli {args[0]} failed: {(res.stderr or res.stdout).strip()}")
        return res.stdout

    # ------------------------------------------------------------ building
    def up(
        self,
        speakers: int = 3,
        seed: int = 1,
        latencies_ms: list[float] | None = None,
        descriptions: list[str] | None = None,
        quantum: int | None = None,
        noise_db: float | None = None,
        reflections: bool = False,
        reports_latency: bool = False,
    ) -> None:
        """Start (or attach to) the room. `noise_db`: white noise at the microphone, in dBFS RMS.
        `reflections`: each speaker's path gets 2-4 seeded, delayed, attenuated copies (a living room).
        `reports_latency`: the speakers' sinks report latency and honour latency offsets as bluez5 nodes do
        (PipeWire 1.4 and later; see reporting_speaker_config)."""
        self.reports_latency = reports_latency
        if not self.server.up:
            # A room whose server is gone is rebuilt from scratch, not half-attached to.
            self._forget_speakers()
        self.server.start()
        self.root.joinpath("ir").mkdir(exist_ok=True)
        if quantum:
            self.set_quantum(quantum)
        self._ensure_mic()
        if noise_db is not None:
            self.set_noise(noise_db)
        if not self.speakers:
            self._build_speakers(speakers, seed, latencies_ms, descriptions, reflections)
        self.start_bluez()

    def _build_speakers(
        self,
        speakers: int,
        seed: int,
        latencies_ms: list[float] | None,
        descriptions: list[str] | None,
        reflections: bool,
    ) -> None:
        rng = random.Random(seed)
        for i in range(speakers):
            model, codec = MODELS[i % len(MODELS)]
            latency = latencies_ms[i] if latencies_ms is not None else rng.uniform(80.0, 300.0)
            spk = SimSpeaker(
                index=i + 1,
                address=f"AA:BB:CC:00:00:{i + 1:02X}",
                description=descriptions[i] if descriptions is not None else model,
                codec=codec,
                latency_samples=round(latency * RATE / 1000.0),
                gain=round(rng.uniform(0.5, 1.0), 3),
                reflections=_reflections(rng) if reflections else [],
                reports_latency=self.reports_latency,
            )
            self.speakers.append(spk)
            self._save()
            self._build(spk)

    def set_quantum(self, quantum: int) -> None:
        run_sync(
            [tool("pw-metadata"), "-n", "settings", "--", "0", "clock.force-quantum", str(quantum)],
            env=self.env,
            capture_output=True,
            timeout=10,
            check=True,
        )

    def _ensure_mic(self) -> None:
        graph = self.dump()
        if graph.node_by_name(MIC_NAME) is None:
            props = {
                "factory.name": "support.null-audio-sink",
                "node.name": MIC_NAME,
                "node.description": "Room microphone (virtual)",
                "media.class": "Audio/Source/Virtual",
                "audio.position": ["MONO"],
                "priority.driver": 1,
                "object.linger": True,
            }
            self.pw_cli("create-node", "adapter", spajson.dumps(props))
        self._node_with_ports(MIC_NAME, "in")

    def set_noise(self, level_db: float | None) -> None:
        """White noise at the microphone at `level_db` dBFS RMS; None for silence."""
        self.server.kill("noise")
        if level_db is None:
            return
        self.server.spawn("noise", [sys.executable, "-m", "pwgroup.sim.noise", str(level_db), NOISE_NAME])
        self._node_with_ports(NOISE_NAME, "out")
        self.link_nodes(NOISE_NAME, MIC_NAME)

    def _build(self, spk: SimSpeaker) -> None:
        tail = max((round(d * RATE / 1000) for d, _ in spk.reflections), default=0)
        ir = np.zeros(spk.latency_samples + tail + 1)
        ir[spk.latency_samples] = spk.gain
        for delay_ms, rel in spk.reflections:
            ir[spk.latency_samples + round(delay_ms * RATE / 1000)] += spk.gain * rel
        ir_path = self.root / "ir" / f"{spk.index}.wav"
        write_wav(ir_path, ir)
        make = reporting_speaker_config if spk.reports_latency else speaker_config
        (self.root / "ir" / f"speaker-{spk.index}.conf").write_text(make(spk, ir_path))
        self.connect(spk.key)

    def connect(self, key: str) -> None:
        """The speaker comes into range: its sink appears, wired to its hidden acoustics and the microphone."""
        spk = self.speaker(key)
        proc_key = f"speaker-{spk.index}"
        if not self.server.running(proc_key):
            conf = self.root / "ir" / f"speaker-{spk.index}.conf"
            self.server.spawn(proc_key, ["pipewire", "-c", str(conf)])
        self._node_with_ports(spk.node_name, "in")
        self._node_with_ports(spk.emit_name, "out")
        if spk.reports_latency:
            self._node_with_ports(spk.link_name, "out")
            self._node_with_ports(spk.air_name, "in")
            self.link_nodes(spk.link_name, spk.air_name)
        self.link_nodes(spk.emit_name, MIC_NAME)

    def disconnect(self, key: str) -> None:
        """The speaker walks out of range: its sink vanishes, links and all."""
        spk = self.speaker(key)
        self.server.kill(f"speaker-{spk.index}")
        self.wait_graph(lambda g: g.node_by_name(spk.node_name) is None, what=f"{spk.node_name} to go")

    def emit_ports(self, count: int | None = None) -> list[int]:
        """The output port of the first `count` (default: every) speaker's emission, in speaker order (the
        truth channels); speakers added later by a test may be away without bothering the others."""
        return self._emit_ports(self.speakers[:count])

    def _emit_ports(self, speakers: Sequence[SimSpeaker]) -> list[int]:
        graph = self.dump()
        ports = []
        for spk in speakers:
            node = graph.node_by_name(spk.emit_name)
            if node is None:
                raise PwgroupError(f"{spk.emit_name} is missing")
            ports.append(graph.ports_of(node.id, "out")[0].id)
        return ports

    @contextlib.contextmanager
    def truth(self, group: str, n: int) -> Iterator[Recorder]:
        """Record the group sink's monitor (the reference) and the first `n` speakers' emissions in one stream."""
        with self.truth_of(group, self.speakers[:n]) as rec:
            yield rec

    @contextlib.contextmanager
    def truth_of(self, group: str, speakers: Sequence[SimSpeaker]) -> Iterator[Recorder]:
        """Record the group sink's monitor (the reference) and these speakers' emissions, in this order."""
        graph = self.dump()
        sink = graph.node_by_name(layout.sink_name(group))
        if sink is None:
            raise PwgroupError(f"no group sink for {group!r}")
        monitor = graph.ports_of(sink.id, "out", monitor=True)[0].id
        with Recorder(self.env, [monitor, *self._emit_ports(speakers)]) as rec:
            yield rec

    def play(self, group: str, frames: np.ndarray) -> Player:
        return Player(self.env, layout.sink_name(group), frames)

    # ------------------------------------------------------------ the fake org.bluez
    def start_bluez(self) -> None:
        """Start the fake org.bluez on the room's system bus (no-op when it runs); returns once it answers."""
        if self.server.running(BLUEZ_KEY):
            return
        ready = self.root / BLUEZ_READY
        ready.unlink(missing_ok=True)
        self.server.spawn(BLUEZ_KEY, [sys.executable, "-m", "pwgroup.sim.fakebluez", str(self.root)])
        deadline = time.monotonic() + 10.0
        while not ready.exists():
            if time.monotonic() > deadline or not self.server.running(BLUEZ_KEY):
                raise PwgroupError(f"the fake BlueZ did not start: see {self.root}/log/{BLUEZ_KEY}.log")
            time.sleep(0.02)

    def stop_bluez(self) -> None:
        """Kill the fake BlueZ (as if bluetoothd crashed); speakers keep their nodes."""
        self.server.kill(BLUEZ_KEY)
        (self.root / BLUEZ_READY).unlink(missing_ok=True)

    def bluez_control(self, method: str, *args: str | int) -> None:
        """Script the fake BlueZ: SetFault(address, ''|'auth'|'page-timeout'), OutOfRange(address),
        InRange(address), SetBattery(address, percent), SetAlias(address, alias)."""
        signature = "".join("s" if isinstance(a, str) else "y" for a in args)
        asyncio.run(_control_call(self.env, method, signature, list(args)))

    def crash_server(self) -> float:
        """PipeWire killed with SIGKILL and started again, as a crash and systemd's restart would do: WirePlumber
        and pipewire-pulse follow, and every speaker that was there reconnects. Returns when PipeWire was up
        again (time.monotonic()), for heal-time measurements."""
        was_there = [s for s in self.everyone if self.server.running(f"speaker-{s.index}")]
        self.server.crash("pipewire")
        for key in ("wireplumber", "pipewire-pulse"):
            self.server.kill(key)
        (self.root / "pipewire-0").unlink(missing_ok=True)
        self.server.spawn("pipewire", ["pipewire"])
        while not (self.root / "pipewire-0").exists():
            time.sleep(0.005)
        up = time.monotonic()
        self.server.spawn("wireplumber", ["wireplumber"])
        self.server.spawn("pipewire-pulse", ["pipewire-pulse"])
        self.wait_graph(self.server.session_manager_in, what="WirePlumber")
        self._ensure_mic()
        for spk in was_there:
            self.server.kill(f"speaker-{spk.index}")  # it lingers, cut off from the old server
            self.connect(spk.key)
        return up

    def down(self) -> None:
        """Remove everything the room made: every process it started, its sockets and files."""
        self.server.stop()
        for name in (ROOM_STATE, BLUEZ_READY):
            (self.root / name).unlink(missing_ok=True)
        self._forget_speakers()
