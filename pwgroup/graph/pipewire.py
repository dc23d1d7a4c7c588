"""The PipeWire backend: the graph from `pw-dump -m`, changes through `pw-cli` and `pw-link` with argv and ids.

A group sink is a lingering null sink inside the server; each member's delay element is a filter-chain in a
small `pipewire -c` process of its own, so members come and go without touching each other.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pwgroup.graph import (
    QUANTUM_SKIP,
    SUSPEND_CRASH,
    Capabilities,
    StreamTools,
    bluez_fallback_ms,
    layout,
    parse_version,
    pwdump,
    spajson,
    wait_next_change,
)
from pwgroup.graph.proc import (
    linked_version,
    pipewire_config_of,
    pipewire_hosts,
    pipewire_library_version,
    process_alive,
    run,
    start,
    tool,
    wireplumber_library_version,
)
from pwgroup.model import BackendError, Graph, GroupSpec, MemberSpec, ServerUnreachable

if TYPE_CHECKING:  # numpy and the capture tools load only when something is measured
    import numpy as np

    from pwgroup.graph.capture import Feeder

log = logging.getLogger(__name__)

SESSION_MANAGERS = ("WirePlumber", "pipewire-media-session")  # their clients' application.name
SUSPEND_FIXED = (0, 4, 15)
# Measured on the truth channels: 0.3.65 keeps every delayed member on its sample through quantum changes; 1.4.2
# skips or garbles a quantum of what a delay line (and a convolver) holds whenever the graph's quantum changes
# under it (another app asking for another latency starts or stops; the last stream into a group ends). Versions
# between were not measured: 1.0 is where the lock starts.
QUANTUM_SKIP_SINCE = (1, 0, 0)


def session_manager_of(clients: Iterable[Mapping[str, Any]]) -> tuple[str | None, str | None]:
    """The session manager connected to the server, and the version its client announces (None if none)."""
    for props in clients:
        name = props.get("application.name")
        if name in SESSION_MANAGERS:
            version = props.get("application.version")
            return str(name), version if isinstance(version, str) else None
    return None, None


def pipewire_capabilities(
    server_version: str | None,
    session_manager: str | None,
    session_manager_version: str | None,
    stream_tools: StreamTools | None = None,
) -> Capabilities:
    """What PipeWire does for pwgroup at these versions, and which of their known bugs pwgroup works around."""
    workarounds = []
    wireplumber = parse_version(session_manager_version) if session_manager == "WirePlumber" else None
    if wireplumber is not None and (0, 4, 0) <= wireplumber < SUSPEND_FIXED:
        workarounds.append(SUSPEND_CRASH)
    server = parse_version(server_version)
    if server is not None and server >= QUANTUM_SKIP_SINCE:
        workarounds.append(QUANTUM_SKIP)
    return Capabilities(
        server="PipeWire",
        server_version=server_version,
        session_manager=session_manager,
        session_manager_version=session_manager_version,
        calibrate=True,
        member_gain=True,
        rename_when_idle=True,
        glitch_free_delay=True,
        workarounds=tuple(workarounds),
        stream_tools=stream_tools or StreamTools(),
        bluez_fallback_ms=bluez_fallback_ms(parse_version(server_version)),
    )


def state_dir(env: Mapping[str, str]) -> Path:
    """Where member configs live: beside the PipeWire instance they belong to."""
    base = env.get("PIPEWIRE_RUNTIME_DIR") or env.get("XDG_RUNTIME_DIR") or f"/tmp/pwgroup-{os.getuid()}"
    return Path(base) / "pwgroup"


def member_config(group: str, member: MemberSpec, rate: int, lock_quantum: bool = False) -> str:
    """A client config for `pipewire -c`: only pwgroup's own safe names and quoted strings go in. `lock_quantum`
    where the server's delay lines skip audio when the graph's quantum changes (QUANTUM_SKIP)."""
    delay = layout.delay_control_value(member.delay_ms, rate)
    gain = layout.member_gain(member.volume, member.channels)
    base_props = {layout.PROP_GROUP: group, layout.PROP_MEMBER: member.speaker, "node.autoconnect": False}
    if lock_quantum:
        base_props["node.lock-quantum"] = True
    capture = dict(base_props)
    capture.update(
        {
            "node.name": layout.member_node_name(group, member.speaker, "in"),
            "node.passive": True,
            layout.PROP_ROLE: layout.ROLE_IN,
        }
    )
    playback = dict(base_props)
    playback.update(
        {"node.name": layout.member_node_name(group, member.speaker, "out"), layout.PROP_ROLE: layout.ROLE_OUT}
    )
    delay_cfg = {"max-delay": layout.MAX_DELAY_S}
    graph = {
        "nodes": [
            {"type": "builtin", "name": "copy", "label": "copy"},
            {"type": "builtin", "name": "dA", "label": "delay", "config": delay_cfg, "control": {"Delay (s)": delay}},
            {"type": "builtin", "name": "dB", "label": "delay", "config": delay_cfg, "control": {"Delay (s)": delay}},
            {"type": "builtin", "name": "mix", "label": "mixer", "control": {"Gain 1": gain, "Gain 2": 0.0}},
        ],
        "links": [
            {"output": "copy:Out", "input": "dA:In"},
            {"output": "copy:Out", "input": "dB:In"},
            {"output": "dA:Out", "input": "mix:In 1"},
            {"output": "dB:Out", "input": "mix:In 2"},
        ],
        "inputs": ["copy:In"],
        "outputs": ["mix:Out"],
    }
    args = {
        "node.description": f"pwgroup {group} member",
        "media.name": f"pwgroup {group} member",
        "filter.graph": graph,
        "audio.channels": 2,
        "audio.position": ["FL", "FR"],
        "capture.props": capture,
        "playback.props": playback,
    }
    return filter_chain_process_config(
        args, "# Written by pwgroup: one group member's delay element. Safe to delete when pwgroup is stopped."
    )


def filter_chain_process_config(args: dict[str, Any], comment: str = "") -> str:
    """A client config for `pipewire -c` that hosts one filter-chain with `args` (rendered as SPA-JSON)."""
    lines = [comment] if comment else []
    lines += [
        "context.properties = { log.level = 1 }",
        "context.spa-libs = {",
        "    audio.convert.* = audioconvert/libspa-audioconvert",
        "    support.* = support/libspa-support",
        "}",
        "context.modules = [",
        "    { name = libpipewire-module-protocol-native }",
        "    { name = libpipewire-module-client-node }",
        "    { name = libpipewire-module-adapter }",
        "    { name = libpipewire-module-filter-chain args = " + spajson.dumps(args, 1) + " }",
        "]",
        "",
    ]
    return "\n".join(lines)


def sink_props(group: GroupSpec, caps: Capabilities | None = None) -> dict[str, Any]:
    """The daemon's group sink; kept from suspend only where the session manager crashes on it (or unknown)."""
    never_suspend = caps is None or SUSPEND_CRASH in caps.workarounds
    return {
        **layout.group_sink_props(group.name, group.description, never_suspend),
        "object.linger": True,  # outlives the pw-cli that made it
        layout.PROP_GROUP: group.name,
        layout.PROP_ROLE: layout.ROLE_SINK,
    }


class PipeWireBackend:
    """Owns one `pw-dump -m` watcher; `graph` is the live observed graph."""

    name = "pipewire"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        self._graph = Graph()
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._ready = asyncio.Event()
        self._serial = 0
        self._ended = False
        self._gone = asyncio.Event()  # set with _ended: tools still running for a gone server are abandoned
        self._core_version: str | None = None  # the server's own, from its Core object
        # What any PipeWire can do; `open` adds the versions and the workarounds they need.
        self.capabilities = pipewire_capabilities(None, "WirePlumber", None)

    # ------------------------------------------------------------ observing
    @property
    def graph(self) -> Graph:
        return self._graph

    async def open(self, timeout: float = 5.0) -> PipeWireBackend:
        self._proc = await start(
            ["pw-dump", "-m", "-N"],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
            limit=1 << 24,
        )
        self._reader = asyncio.create_task(self._read())
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({ready, self._reader}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not self._ready.is_set():
            ready.cancel()
            await self.close()
            raise ServerUnreachable(
                "cannot reach PipeWire: start it (systemctl --user start pipewire wireplumber) "
                "or point PIPEWIRE_RUNTIME_DIR at a running one"
            ) from None
        self.capabilities = await self._read_capabilities()
        return self

    async def _read_capabilities(self) -> Capabilities:
        name, version = session_manager_of(self._graph.clients.values())
        if name == "WirePlumber" and version is None:
            # WirePlumber 0.4 and 0.5 announce no version of their own: the library installed here says it, by
            # its file name (no process on every open: status --json cold paid ~200 ms for `wireplumber --version`);
            # the binary is asked only when the file name says nothing.
            found = wireplumber_library_version()
            if found is None:
                found = await asyncio.to_thread(linked_version, "wireplumber", "wireplumber")
            version = ".".join(map(str, found)) if found else None
        tools = StreamTools(pipewire_library_version() or await asyncio.to_thread(linked_version, "pw-cat", "pipewire"))
        return pipewire_capabilities(self._core_version, name, version, tools)

    def _note_core(self, batch: Iterable[Mapping[str, Any]]) -> None:
        for obj in batch:
            info = obj.get("info")
            if str(obj.get("type", "")).endswith(":Core") and isinstance(info, Mapping):
                version = info.get("version")
                if isinstance(version, str):
                    self._core_version = version

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        decoder = pwdump.StreamDecoder()
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may straddle two reads
        while True:
            chunk = await self._proc.stdout.read(1 << 16)
            if not chunk:
                break
            for batch in decoder.feed(utf8.decode(chunk)):
                self._note_core(batch)
                pwdump.apply(self._graph, batch)
                self._serial += 1
                self._ready.set()
                self._changed.set()
        self._ended = True  # before the serial moves: whoever wakes on it must see the watcher gone
        self._gone.set()
        self._serial += 1
        self._changed.set()

    @property
    def alive(self) -> bool:
        # The end of pw-dump's output is the sign: its exit status may be collected only later.
        return self._proc is not None and not self._ended and self._proc.returncode is None

    async def refresh(self) -> Graph:
        return self._graph

    @property
    def serial(self) -> int:
        """Counts the batches of graph changes seen so far (the watcher's end counts as one)."""
        return self._serial

    async def wait_changed(self, timeout: float, since: int | None = None) -> bool:
        """Wait for the next change; with `since` (a serial), a change already seen after it returns at once."""
        return await wait_next_change(self._changed, self._serial, since, timeout)

    async def wait_for(self, check: Callable[[Graph], bool], timeout: float, what: str) -> Graph:
        deadline = time.monotonic() + timeout
        while not check(self._graph):
            left = deadline - time.monotonic()
            if self._ended:
                raise ServerUnreachable(f"PipeWire went away while waiting for {what}")
            if left <= 0 or not self.alive:
                # Before giving up, ask the server afresh: the watcher may be behind.
                fresh = pwdump.parse(await run(["pw-dump", "-N"], env=self.env, timeout=10.0))
                if check(fresh):
                    log.warning("pw-dump monitor was behind while waiting for %s; took a fresh dump", what)
                    self._graph = fresh
                    return fresh
                raise BackendError(f"timed out waiting for {what}: is WirePlumber running?")
            await self.wait_changed(min(left, 0.25))
        return self._graph

    async def settle(self, quiet: float = 0.05, timeout: float = 2.0) -> None:
        """Wait until the graph has been quiet for `quiet` seconds (events arrive 6-12 ms after a change)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not await self.wait_changed(quiet):
                return

    async def close(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            with contextlib.suppress(ProcessLookupError):
                await self._proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        self._proc = None

    # ------------------------------------------------------------ acting
    async def _tool(self, argv: list[str], check: bool = True) -> str:
        """Run pw-cli or pw-link against this server: at once refused when the watcher has seen it go, and
        abandoned if it goes meanwhile (so a teardown racing the server's death returns at once)."""
        if self._ended:
            raise ServerUnreachable("PipeWire is gone")
        return await run(argv, env=self.env, check=check, abandon=self._gone)

    async def _pw_cli(self, *args: str) -> str:
        return await self._tool(["pw-cli", *args])

    async def create_sink(self, group: GroupSpec) -> None:
        name = layout.sink_name(group.name)
        await self._pw_cli("create-node", "adapter", spajson.dumps(sink_props(group, self.capabilities)))
        await self.wait_for(
            lambda g: any(
                n.name == name and g.ports_of(n.id, "out", monitor=True) and g.ports_of(n.id, "in")
                for n in g.nodes.values()
            ),
            5.0,
            f"group sink {name}",
        )

    async def destroy_node(self, node_id: int) -> None:
        node = self._graph.nodes.get(node_id)
        serial = node.props.get("object.serial") if node is not None else None
        await self._pw_cli("destroy", str(node_id))

        # Ids are reused and a reconciler may make the node again at once, maybe under the same id: only its
        # serial tells the new node from the old.
        def gone(g: Graph) -> bool:
            now = g.nodes.get(node_id)
            return now is None or (serial is not None and now.props.get("object.serial") != serial)

        await self.wait_for(gone, 5.0, f"node {node_id} to go")

    def _member_paths(self, group: str, speaker: str) -> Path:
        return state_dir(self.env) / group / (layout.member_slug(speaker) + ".conf")

    async def start_member(self, group: str, member: MemberSpec) -> None:
        conf = self._member_paths(group, member.speaker)
        conf.parent.mkdir(parents=True, exist_ok=True)
        # An element left from a PipeWire that died (it lingers, disconnected) goes before its successor comes.
        for stale in pipewire_hosts(str(conf)):
            _signal(stale, signal.SIGTERM)
            await asyncio.to_thread(_reap, stale)
        tmp = conf.with_suffix(".tmp")
        lock = QUANTUM_SKIP in self.capabilities.workarounds
        tmp.write_text(member_config(group, member, layout.graph_rate(self._graph), lock))
        tmp.replace(conf)
        log = open(conf.with_suffix(".log"), "ab")  # noqa: SIM115 - handed to the child
        # Its own session, and no die_with_parent: the element must outlive the CLI or daemon that started it
        # (a restarted daemon adopts it).
        subprocess.Popen(
            [tool("pipewire"), "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=self.env,
            start_new_session=True,
        )
        log.close()
        names = (
            layout.member_node_name(group, member.speaker, "in"),
            layout.member_node_name(group, member.speaker, "out"),
        )

        def ready(g: Graph) -> bool:
            found = [n for n in g.nodes.values() if n.name in names]
            return len(found) == 2 and all(
                g.ports_of(n.id, "in" if n.name.endswith(".in") else "out", monitor=False) for n in found
            )

        await self.wait_for(ready, 5.0, f"the delay element of {member.speaker!r}")

    async def stop_member(self, group: str, speaker: str, pid: int | None, node_ids: tuple[int, ...]) -> None:
        conf = self._member_paths(group, speaker)
        if pid is not None and _is_member_process(pid):
            _signal(pid, signal.SIGTERM)
        else:
            for node_id in node_ids:
                with contextlib.suppress(BackendError):
                    await self._pw_cli("destroy", str(node_id))
        await self.wait_for(lambda g: not any(i in g.nodes for i in node_ids), 5.0, f"member {speaker!r} to go")
        if pid is not None:
            await asyncio.to_thread(_reap, pid)
        for path in (conf, conf.with_suffix(".log")):
            with contextlib.suppress(OSError):
                path.unlink()

    async def link(self, out_port: int, in_port: int) -> None:
        try:
            await self._tool(["pw-link", "--", str(out_port), str(in_port)])
        except BackendError as err:
            if "File exists" not in err.message:
                raise

    async def unlink(self, link_id: int) -> None:
        await self._tool(["pw-link", "-d", "--", str(link_id)], check=False)

    async def set_controls(self, node_id: int, controls: Mapping[str, float]) -> None:
        params: list[Any] = []
        for key, value in controls.items():
            params += [key, float(value)]
        await self._pw_cli("set-param", str(node_id), "Props", spajson.dumps({"params": params}))

    async def set_gain(self, node_id: int, gain: float) -> None:
        """The playing line's gain (volume); a step, like any volume control without a ramp."""
        node = self._graph.nodes.get(node_id)
        if node is None:
            raise BackendError(f"node {node_id} is gone")
        c = node.controls
        active = layout.GAIN_A if c.get(layout.GAIN_A, 1.0) >= c.get(layout.GAIN_B, 0.0) else layout.GAIN_B
        await self.set_controls(node_id, {active: gain})

    async def set_sink_volume(self, node_id: int, volume: float) -> None:
        """A sink's own volume, on the mixer scale (sink_volume), on every channel: what pavucontrol's slider
        does. A group sink's monitor follows it (monitor.channel-volumes), so every member does."""
        node = self._graph.nodes.get(node_id)
        if node is None:
            raise BackendError(f"node {node_id} is gone")
        linear = layout.linear_volume(volume)
        count = len(node.channel_volumes) or 2
        await self._pw_cli("set-param", str(node_id), "Props", spajson.dumps({"channelVolumes": [linear] * count}))
        await self.wait_for(
            lambda g: (
                (n := g.nodes.get(node_id)) is None or all(abs(v - linear) < 1e-4 for v in n.channel_volumes or (-1.0,))
            ),
            2.0,
            f"the volume of node {node_id}",
        )

    async def set_sink_mute(self, node_id: int, mute: bool) -> None:
        if node_id not in self._graph.nodes:
            raise BackendError(f"node {node_id} is gone")
        await self._pw_cli("set-param", str(node_id), "Props", spajson.dumps({"mute": mute}))
        await self.wait_for(
            lambda g: (n := g.nodes.get(node_id)) is None or n.mute is mute, 2.0, f"the mute of node {node_id}"
        )

    async def set_delay(self, node_id: int, delay_ms: float, at_once: bool = False) -> None:
        """Change a member's delay while audio plays: fill the idle line, then switch to it.

        `at_once` moves the playing line's tap in one call instead: it replays or skips a moment of audio, which
        does not matter between calibration sweeps, and saves waiting for a line of up to 4 s to fill."""
        node = self._graph.nodes.get(node_id)
        if node is None:
            raise BackendError(f"node {node_id} is gone")
        rate = layout.graph_rate(self._graph)
        quantum_s = layout.graph_quantum(self._graph) / rate
        c = node.controls
        a_active = c.get(layout.GAIN_A, 1.0) >= c.get(layout.GAIN_B, 0.0)
        line, spare = (layout.LINE_A, layout.LINE_B) if a_active else (layout.LINE_B, layout.LINE_A)
        gain, spare_gain = (layout.GAIN_A, layout.GAIN_B) if a_active else (layout.GAIN_B, layout.GAIN_A)
        value = layout.delay_control_value(delay_ms, rate)
        if at_once:
            await self.set_controls(node_id, {line: value, spare: value})
            return
        await self.set_controls(node_id, {spare: value})
        # The spare line holds stale samples until `delay` of fresh input has passed through it, counted
        # from the quantum in which the change lands.
        await asyncio.sleep(value + 2 * quantum_s)
        # One step, at a quantum edge. A stepped crossfade was tried: its steps land a pw-cli round trip
        # apart on whichever quantum edges follow, and under load the mixed stage lasted 45 ms, past the
        # 30 ms budget. PipeWire 0.3.65 has no ramped control that would make it smooth and bounded.
        await self.set_controls(node_id, {gain: 0.0, spare_gain: max(c.get(gain, 1.0), 0.0)})
        # Once silent, the old line takes the new delay too, ready for the next change.
        await asyncio.sleep(2 * quantum_s)
        await self.set_controls(node_id, {line: value})

    # ------------------------------------------------------------ measuring
    async def play_and_record(self, sink_id: int, signal: np.ndarray, record: Sequence[int]) -> np.ndarray:
        """pw-record links the ports into one stream; pw-play plays into the sink meanwhile."""
        sink = self._graph.nodes.get(sink_id)
        if sink is None:
            raise BackendError(f"node {sink_id} is gone")
        channels = len(self._graph.ports_of(sink_id, "in", monitor=False)) or 2
        tools = self.capabilities.stream_tools
        return await asyncio.to_thread(_play_and_record, self.env, sink.name, channels, signal, list(record), tools)

    async def feed_and_record(
        self, probes: np.ndarray, into: Sequence[Sequence[int]], record: Sequence[int]
    ) -> np.ndarray:
        """pw-cat streams the probes (silence until every link is made), pw-record records them with `record`."""
        from pwgroup.graph.capture import Feeder

        if probes.ndim != 2 or probes.shape[1] != len(into):
            raise ValueError(f"{len(into)} feeds need samples x {len(into)} probes, not {probes.shape}")
        feeder = Feeder(self.env, len(into), self.capabilities.stream_tools)
        try:
            fed = await asyncio.to_thread(feeder.start)
            await asyncio.gather(*(self.link(fed[i], port) for i, ports in enumerate(into) for port in ports))
            return await asyncio.to_thread(_record_feed, self.env, [*record, *fed], feeder, probes, feeder.tools)
        finally:
            feeder.stop()


def _play_and_record(
    env: Mapping[str, str], sink: str, channels: int, signal: np.ndarray, record: list[int], tools: StreamTools
) -> np.ndarray:
    import numpy as np

    from pwgroup.graph.capture import Player, Recorder

    frames = np.repeat(np.asarray(signal, dtype=np.float64).reshape(-1, 1), channels, axis=1)
    with Recorder(env, record, tools) as rec:
        time.sleep(0.1)  # the recording is running before the first sample plays
        Player(env, sink, frames).start().wait(timeout=30.0)
        time.sleep(0.1)  # and the last one has reached every recorded port
        return rec.stop()


def _record_feed(
    env: Mapping[str, str], record: list[int], feeder: Feeder, probes: np.ndarray, tools: StreamTools
) -> np.ndarray:
    from pwgroup.graph.capture import Recorder

    with Recorder(env, record, tools) as rec:
        feeder.release(probes)
        feeder.wait()
        return rec.stop()


def _is_member_process(pid: int) -> bool:
    conf = pipewire_config_of(pid)
    return conf is not None and f"{os.sep}pwgroup{os.sep}" in conf


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    """Reap our own child if it was one; a stranger's process is left to its parent."""
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return
        except ChildProcessError:
            if not process_alive(pid):
                return
        time.sleep(0.01)
    _signal(pid, signal.SIGKILL)
