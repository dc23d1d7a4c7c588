"""The PulseAudio backend: the server read through pulsectl-asyncio and shown as the shared Graph model.

A group is a null sink; a member is a remap-source over the group's monitor (its record, which outlives its
speaker) and, while the speaker is there, a module-loopback from that record into the speaker (its delay).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import statistics
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pwgroup.graph import Capabilities, layout, wait_next_change
from pwgroup.model import (
    BackendError,
    Graph,
    GroupSpec,
    Link,
    MemberSpec,
    Node,
    Port,
    ServerUnreachable,
    normalize_address,
)

log = logging.getLogger(__name__)

# A loopback's latency_msec is an end-to-end target: it counts the speaker sink's own reported latency (and
# its port latency offset) inside it. A member with delay 0 therefore plays BASE_MS after the group sink's
# monitor, and a speaker whose sink reports more than that cannot be held to its delay.
BASE_MS = 150
# A new loopback starts a few samples to ~50 ms off its target (most off where its speaker's sink is new, as on
# a speaker's return); only its rate control brings it in, at up to 1 % (10 ms a second): without it a loopback
# keeps its first error for good. That control is what holds members together. PulseAudio 16.1 sets a
# whole-Hz rate once per adjust_time (module-loopback.c:353) and its drift filter learns 1/8 per step (line
# 64): at the default 1 s a settled member still wandered up to 17 samples (0.35 ms) off the others; at 0.1 s
# (the least 16.1 accepts) members hold within a sample of their targets in the room. In an earlier series at
# 0.1 s, run beside other test runs on the same 2 cores, the delay-change and re-add tests heard 70-210 ms gaps
# in 3 of 11 runs; not seen since (alone, and beside a second test run). Measured on PulseAudio 16.1 in the
# room (bench/delays.py, tests/test_integration_delays.py).
ADJUST_TIME_S = 0.1
ADJUST_THRESHOLD_USEC = 10
# How long a new loopback settles, muted, before it takes over from the old one at a delay change (with 3 s,
# the delay-change test heard gaps at the swap). Measured on PulseAudio 16.1.
CONVERGE_S = 5.0
# A joining loopback (a member added, or its speaker back) stays muted until its rate control has pulled its
# start error in, so a speaker is never heard off its delay. PulseAudio shows the rate that control sets on the
# sink input: up to 1 % off while it pulls, then steady within drift, and in step with the group's other lines
# once its error is theirs (line_settled). Seen in the room: a returning speaker's line ~475 Hz off for ~6 s,
# then 7-10 Hz off like the others (the null sinks' ~190 ppm); a new group's lines all pulling together.
SETTLED_OFF = 0.005
SETTLED_JITTER_HZ = 4
SETTLED_STEADY_S = 1.0
SETTLED_START_S = 3.0
JOIN_TIMEOUT_S = 15.0
# How long a delay change may take before its new line is taken for one left by a pwgroup that stopped midway.
SWAP_GRACE_S = CONVERGE_S + JOIN_TIMEOUT_S + 10.0
MUTE_CHECK_S = 1.0  # how soon a change to one of pwgroup's own lines is looked at (see PulseBackend._watch)
FILL_MARGIN_S = 0.3  # a fresh loopback plays its initial silence for its latency; this much more, it holds audio
# PulseAudio 16 reads latency_msec as a whole number of milliseconds.
DELAY_STEP_MS = 1
PROP_MEMBER_HEX = "pwgroup.member.hex"
# The record of a delay change's new line: until this wall-clock second its muted line stands in as the member's
# link beside the old one; after it (the pwgroup that made it stopped mid-change) it is a joining line.
PROP_SWAP_UNTIL = "pwgroup.swap.until"
PROP_DELAY_MS = layout.PROP_DELAY_MS
ROLE_RECORD = "member-record"
ROLE_LINK = "member-link"

# Node and object ids: PulseAudio numbers sinks, sources and streams separately; the Graph needs one space.
_SINK, _REC_IN, _REC_OUT = 1, 2, 3
_KIND = 1_000_000
_PORTS = 100
_LINK_BASE = 10**12


def sink_id(index: int) -> int:
    return _SINK * _KIND + index


def record_ids(index: int) -> tuple[int, int]:
    return _REC_IN * _KIND + index, _REC_OUT * _KIND + index


def decode_node(node_id: int) -> tuple[int, int]:
    """(kind, pulse index) of a node id."""
    return divmod(node_id, _KIND)


def link_id(sink_input: int, pair: int) -> int:
    return _LINK_BASE + sink_input * _PORTS + pair


def sink_input_of_link(lid: int) -> int:
    return (lid - _LINK_BASE) // _PORTS


# ---------------------------------------------------------------- the server's state, as plain data


@dataclass(frozen=True)
class PaSink:
    index: int
    name: str
    description: str
    channels: tuple[str, ...]
    monitor_source: int
    owner_module: int | None
    rate: int
    props: Mapping[str, str] = field(default_factory=dict)
    volumes: tuple[float, ...] = ()  # pulsectl's values: PulseAudio's cubic scale, 1.0 = 100 %
    mute: bool | None = None


@dataclass(frozen=True)
class PaSource:
    index: int
    name: str
    channels: tuple[str, ...]
    owner_module: int | None
    monitor_of_sink: int | None
    props: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PaStream:
    """A sink input (target: its sink) or a source output (target: its source)."""

    index: int
    owner_module: int | None
    target: int
    mute: bool
    props: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Snapshot:
    sinks: list[PaSink] = field(default_factory=list)
    sources: list[PaSource] = field(default_factory=list)
    sink_inputs: list[PaStream] = field(default_factory=list)
    source_outputs: list[PaStream] = field(default_factory=list)
    rate: int = layout.DEFAULT_RATE


# ---------------------------------------------------------------- module arguments


def hex_value(text: str) -> str:
    """A proplist value PulseAudio reads back as `text` whatever it holds: `hex:` bytes with a final NUL."""
    return "hex:" + (text.encode("utf-8", "surrogateescape") + b"\0").hex()


def unhex(value: str) -> str | None:
    try:
        return bytes.fromhex(value).decode("utf-8", "surrogateescape")
    except ValueError:
        return None


def proplist_arg(props: Mapping[str, str | int]) -> str:
    """`key=value ...` for sink_properties and friends. Keys are pwgroup's own; values are digits or pwgroup's
    safe names, or go through hex_value, so no quote, space or `=` from anyone ever reaches the parser."""
    parts = []
    for key, value in props.items():
        text = str(value)
        if not all(ch.isalnum() or ch in "._:-" for ch in f"{key}{text}"):
            raise ValueError(f"unsafe module argument {key}={text!r}")
        parts.append(f"{key}={text}")
    return '"' + " ".join(parts) + '"'


def null_sink_args(group: GroupSpec) -> str:
    props = {
        "device.description": hex_value(group.description),
        layout.PROP_GROUP: group.name,
        layout.PROP_ROLE: layout.ROLE_SINK,
    }
    return (
        f"sink_name={layout.sink_name(group.name)} channels=2 channel_map=front-left,front-right "
        f"sink_properties={proplist_arg(props)}"
    )


def record_args(
    group: str, member: str, delay_ms: int, monitor: int, generation: int, swap_until: int | None = None
) -> str:
    props: dict[str, str | int] = {
        "device.description": hex_value(f"pwgroup {group} member (internal)"),
        layout.PROP_GROUP: group,
        layout.PROP_ROLE: ROLE_RECORD,
        PROP_MEMBER_HEX: member.encode("utf-8", "surrogateescape").hex(),
        PROP_DELAY_MS: delay_ms,
    }
    if swap_until is not None:
        props[PROP_SWAP_UNTIL] = swap_until
    name = f"{layout.member_node_name(group, member, 'rec')}{generation}"
    return f"source_name={name} master={monitor} source_properties={proplist_arg(props)}"


def loopback_args(group: str, record_source: int, speaker_sink: int, delay_ms: int) -> str:
    props = {layout.PROP_GROUP: group, layout.PROP_ROLE: ROLE_LINK, "media.name": "pwgroup-member"}
    return (
        f"source={record_source} sink={speaker_sink} latency_msec={BASE_MS + delay_ms} "
        "source_dont_move=true sink_dont_move=true remix=true "
        f"adjust_time={ADJUST_TIME_S:g} adjust_threshold_usec={ADJUST_THRESHOLD_USEC} "
        f"sink_input_properties={proplist_arg(props)} source_output_properties={proplist_arg(props)}"
    )


def quantize_ms(delay_ms: float) -> int:
    return max(0, round(delay_ms / DELAY_STEP_MS) * DELAY_STEP_MS)


# ---------------------------------------------------------------- the Graph view (pure)


def _bluez_props(props: Mapping[str, str]) -> dict[str, Any]:
    """PulseAudio's bluez5 sinks say `device.api=bluez` and keep the address in `device.string`; the model
    reads PipeWire's names, so a Bluetooth sink is given them too."""
    out: dict[str, Any] = dict(props)
    if props.get("device.api") == "bluez":
        address = normalize_address(props.get("device.string", ""))
        if address:
            out["device.api"] = "bluez5"
            out["api.bluez5.address"] = address
            if "bluetooth.codec" in props:
                out["api.bluez5.codec"] = props["bluetooth.codec"]
            if "bluetooth.protocol" in props:
                out["api.bluez5.profile"] = props["bluetooth.protocol"].replace("_", "-")
    return out


@dataclass(frozen=True)
class Record:
    source: PaSource
    group: str
    member: str
    delay_ms: int


def all_records(snap: Snapshot) -> list[Record]:
    """Every member record, oldest first (a delay change under way, or cut short, leaves two of a member)."""
    found = []
    for src in sorted(snap.sources, key=lambda s: s.index):
        p = src.props
        if p.get(layout.PROP_ROLE) != ROLE_RECORD:
            continue
        member = unhex(p.get(PROP_MEMBER_HEX, ""))
        group = p.get(layout.PROP_GROUP)
        delay = p.get(PROP_DELAY_MS, "")
        if member is None or not group or not delay.isdigit():
            continue
        found.append(Record(src, group, member, int(delay)))
    return found


def records_in(snap: Snapshot) -> dict[tuple[str, str], Record]:
    """The member records, one per (group, member): the newest when a delay change left two."""
    return {(r.group, r.member): r for r in all_records(snap)}


def links_in(snap: Snapshot) -> list[tuple[PaStream, int]]:
    """pwgroup's loopbacks as (sink input, record source index)."""
    reads = {so.owner_module: so.target for so in snap.source_outputs if so.owner_module is not None}
    return [
        (si, reads[si.owner_module])
        for si in snap.sink_inputs
        if si.props.get(layout.PROP_ROLE) == ROLE_LINK and si.owner_module in reads
    ]


def joining_in(snap: Snapshot, now: float | None = None) -> set[int]:
    """Sink inputs of loopbacks still settling, muted: not links yet. Except a delay change's new line, muted
    beside the old one that plays, while its change is under way (PROP_SWAP_UNTIL, against `now`)."""
    now = time.time() if now is None else now
    records = {r.source.index: r for r in all_records(snap)}

    def member(source: int) -> tuple[str, str] | None:
        return (records[source].group, records[source].member) if source in records else None

    def swapping(source: int) -> bool:
        until = records[source].source.props.get(PROP_SWAP_UNTIL, "") if source in records else ""
        return until.isdigit() and int(until) > now

    links = links_in(snap)
    playing = {(member(src), si.target) for si, src in links if not si.mute}
    return {si.index for si, src in links if si.mute and not (swapping(src) and (member(src), si.target) in playing)}


def line_settled(seen: Sequence[tuple[float, int, float | None]], base: int) -> bool:
    """Whether a joining loopback has pulled its start error in, from what was seen of it every adjust_time:
    (monotonic time, its rate, the median rate of the group's playing lines or None). Settled: its control has
    begun (the rate left `base` once, or SETTLED_START_S went by: an idle group sink may first render after
    2 s), and for SETTLED_STEADY_S the rate was steady, not pulling (within SETTLED_OFF of `base`), and in step
    with the other lines, which means the same error as theirs."""
    if not seen or seen[-1][0] - seen[0][0] < SETTLED_STEADY_S:
        return False
    now = seen[-1][0]
    started = any(r != base for _, r, _ in seen) or now - seen[0][0] >= SETTLED_START_S
    recent = [(r, o) for t, r, o in seen if t >= now - SETTLED_STEADY_S]
    rates = [r for r, _ in recent]
    return (
        started
        and max(rates) - min(rates) <= SETTLED_JITTER_HZ
        and all(abs(r - base) <= SETTLED_OFF * base for r in rates)
        and all(o is None or abs(r - o) <= SETTLED_JITTER_HZ for r, o in recent)
    )


def _ports(node_id: int, channels: Iterable[str], direction: str, monitor: bool = False) -> list[Port]:
    base = node_id * _PORTS + (50 if direction == "out" else 0)
    return [
        Port(base + i, node_id, f"{'monitor' if monitor else direction}_{ch}", direction, ch, monitor)  # type: ignore[arg-type]
        for i, ch in enumerate(channels)
    ]


def to_graph(snap: Snapshot) -> Graph:
    """The server as the shared model: sinks are nodes with input and monitor ports, a member record is a
    member-in and member-out node pair fed by its group's monitor, and a loopback is the links from a
    record's member-out node to the speaker it plays on."""
    g = Graph()
    g.settings = {"clock.rate": snap.rate, layout.SETTING_DELAY_STEP: snap.rate * DELAY_STEP_MS // 1000}
    by_monitor: dict[int, PaSink] = {}
    for s in snap.sinks:
        nid = sink_id(s.index)
        props = _bluez_props(s.props)
        props.update({"node.name": s.name, "node.description": s.description, "pulse.sink": s.index})
        linear = tuple(layout.linear_volume(v) for v in s.volumes)
        g.nodes[nid] = Node(nid, s.name, "Audio/Sink", props, channel_volumes=linear, mute=s.mute)
        for p in (*_ports(nid, s.channels, "in"), *_ports(nid, s.channels, "out", monitor=True)):
            g.ports[p.id] = p
        by_monitor[s.monitor_source] = s
    reads = {so.owner_module: so.target for so in snap.source_outputs if so.owner_module is not None}
    for rec in records_in(snap).values():
        in_id, out_id = record_ids(rec.source.index)
        base = {
            layout.PROP_GROUP: rec.group,
            layout.PROP_MEMBER: rec.member,
            PROP_DELAY_MS: rec.delay_ms,
            "pulse.source": rec.source.index,
        }
        in_name = layout.member_node_name(rec.group, rec.member, "in")
        out_name = layout.member_node_name(rec.group, rec.member, "out")
        g.nodes[in_id] = Node(in_id, in_name, "Stream/Input/Audio", {**base, layout.PROP_ROLE: layout.ROLE_IN})
        g.nodes[out_id] = Node(out_id, out_name, "Stream/Output/Audio", {**base, layout.PROP_ROLE: layout.ROLE_OUT})
        ins = _ports(in_id, rec.source.channels, "in")
        outs = _ports(out_id, rec.source.channels, "out")
        for p in (*ins, *outs):
            g.ports[p.id] = p
        owner = rec.source.owner_module
        group_sink = by_monitor.get(reads.get(owner, -1)) if owner is not None else None
        if group_sink is not None:
            monitor_ports = g.ports_of(sink_id(group_sink.index), "out", monitor=True)
            for k, (o, i) in enumerate(layout.channel_pairs(monitor_ports, ins)):
                lid = _LINK_BASE // 2 + rec.source.index * _PORTS + k
                g.links[lid] = Link(lid, sink_id(group_sink.index), o, in_id, i)
    record_by_source = {r.source.index: r for r in records_in(snap).values()}
    joining = joining_in(snap)
    for si, source in links_in(snap):
        linked = record_by_source.get(source)
        if linked is None or sink_id(si.target) not in g.nodes or si.index in joining:
            continue
        _, out_id = record_ids(linked.source.index)
        outs = g.ports_of(out_id, "out")
        ins = g.ports_of(sink_id(si.target), "in")
        for k, (o, i) in enumerate(layout.channel_pairs(outs, ins)):
            lid = link_id(si.index, k)
            g.links[lid] = Link(lid, out_id, o, sink_id(si.target), i)
    return g


# ---------------------------------------------------------------- the backend


def _props(obj: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (getattr(obj, "proplist", None) or {}).items() if v is not None}


def _owner(obj: Any) -> int | None:
    idx = getattr(obj, "owner_module", None)
    # PA_INVALID_INDEX (2**32 - 1) means "no module": a client's own stream.
    return idx if isinstance(idx, int) and idx < 2**32 - 1 else None


_FACILITIES = ("sink", "source", "sink_input", "source_output", "module")


def _keep_rates() -> None:
    """pulsectl hands out an info's `sample_spec` as a view into libpulse's memory, which is freed once its
    callback returns: read later, the rate is whatever took that memory (seen: 2051904480 Hz, and a source rate
    of 1). Its subclass hook runs inside the callback, so the rate is copied there, as `rate`."""
    import pulsectl

    for cls in (
        pulsectl.PulseSinkInfo,
        pulsectl.PulseSinkInputInfo,
        pulsectl.PulseSourceInfo,
        pulsectl.PulseSourceOutputInfo,
    ):
        if getattr(cls, "_pwgroup_keeps_rate", False):
            continue
        original = cls._init_from_struct

        def init(self: Any, struct: Any, _original: Any = original) -> None:
            _original(self, struct)
            self.rate = int(struct.sample_spec.rate)

        cls._init_from_struct = init
        cls._pwgroup_keeps_rate = True


class PulseBackend:
    """Keeps a snapshot of the server, refreshed when its subscription reports a change."""

    name = "pulse"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        # A change may take longer than on PipeWire: a joining line settles muted, a delay change swaps late.
        self.capabilities = Capabilities(
            server="PulseAudio", glitch_free_delay=True, settle_budget_s=JOIN_TIMEOUT_S + CONVERGE_S
        )
        self._pulse: Any = None
        self._snap = Snapshot()
        self._graph = Graph()
        self._events: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._dirty = True
        self._serial = 0
        # Two channel pairs of one member ask for the same loopback, maybe side by side.
        self._link_lock = asyncio.Lock()
        # One module change at a time: the reconciler runs actions side by side, and a loopback's unload must
        # not race the unload of the record it reads (which takes the loopback down with it).
        self._module_lock = asyncio.Lock()
        # index -> name of what the server told us about: a removal event carries only the index.
        self.names: dict[tuple[str, int], str] = {}
        self.removed: collections.deque[tuple[str, str]] = collections.deque(maxlen=64)
        # pwgroup's own loopbacks (sink input index -> muted), whose rate changes are not news.
        self._own_inputs: dict[int, bool] = {}
        self._mute_check: asyncio.Task[None] | None = None
        self._joins: dict[int, asyncio.Task[None]] = {}

    @property
    def graph(self) -> Graph:
        return self._graph

    async def open(self, timeout: float = 5.0) -> PulseBackend:
        from pulsectl import PulseError
        from pulsectl_asyncio import PulseAsync

        server = self.env.get("PULSE_SERVER")
        _keep_rates()
        self._pulse = PulseAsync("pwgroup", server=server)
        try:
            await asyncio.wait_for(self._pulse.connect(autospawn=False), timeout)
        except (PulseError, TimeoutError):
            self._pulse.close()
            self._pulse = None
            raise ServerUnreachable(
                "cannot reach PulseAudio: start it (pulseaudio --start) or point PULSE_SERVER at a running one"
            ) from None
        self._events = asyncio.create_task(self._watch())
        await self.refresh()
        return self

    async def _watch(self) -> None:
        from pulsectl import PulseDisconnected

        with contextlib.suppress(PulseDisconnected):
            async for ev in self._pulse.subscribe_events(*_FACILITIES):
                # pulsectl's enum values equal their names but do not print as them.
                kind = next((k for k in ("new", "change", "remove") if ev.t == k), "")
                facility = next((f for f in _FACILITIES if ev.facility == f), "")
                # A loopback's rate control sets a new rate up to ten times a second, and each is a change event;
                # of pwgroup's own lines only the mute is part of the graph (a joining line is not a link yet),
                # so such changes are looked at once a second at most.
                if kind == "change" and facility == "sink_input" and ev.index in self._own_inputs:
                    if self._mute_check is None or self._mute_check.done():
                        self._mute_check = asyncio.create_task(self._check_own_mutes())
                    continue
                if kind == "remove":
                    name = self.names.pop((facility, ev.index), None)
                    if name is not None:
                        self.removed.append((facility, name))
                        log.debug("%s %s (#%d) went away", facility, name, ev.index)
                self._dirty = True
                self._serial += 1
                self._changed.set()
        self._serial += 1
        self._changed.set()

    async def _check_own_mutes(self) -> None:
        """A second after the first of a run of changes to pwgroup's own lines: did any mute change? (The rate
        changes behind most of them are not news: when they woke the daemon, it spent ~2 % CPU on them.)"""
        from pulsectl import PulseError

        await asyncio.sleep(MUTE_CHECK_S)
        try:
            now = {si.index: bool(si.mute) for si in await self._pulse.sink_input_list()}
        except PulseError:
            return
        if any(now.get(index, muted) != muted for index, muted in self._own_inputs.items()):
            self._own_inputs.update({i: m for i, m in now.items() if i in self._own_inputs})
            self._dirty = True
            self._serial += 1
            self._changed.set()

    @property
    def alive(self) -> bool:
        return self._pulse is not None and self._events is not None and not self._events.done()

    @property
    def serial(self) -> int:
        """Counts the change events seen so far (the subscription's end counts as one)."""
        return self._serial

    async def refresh(self) -> Graph:
        if not self._dirty:
            return self._graph
        async with self._server():
            return await self._refresh()

    @contextlib.asynccontextmanager
    async def _server(self) -> AsyncIterator[None]:
        """A server that goes away mid-command is exit code 3 and one line, never a traceback."""
        from pulsectl import PulseDisconnected

        try:
            yield
        except PulseDisconnected:
            raise ServerUnreachable("PulseAudio went away: start it again (pulseaudio --start)") from None

    async def _refresh(self) -> Graph:
        self._dirty = False
        p = self._pulse
        sinks, sources = await p.sink_list(), await p.source_list()
        sink_inputs, source_outputs = await p.sink_input_list(), await p.source_output_list()
        # pulsectl's server info leaves the default sample spec out: the rate of the first sink stands for it.
        rate = int(sinks[0].rate) if sinks else layout.DEFAULT_RATE
        snap = Snapshot(rate=int(rate))
        for s in sinks:
            self.names[("sink", s.index)] = s.name
            snap.sinks.append(
                PaSink(
                    s.index,
                    s.name,
                    s.description or s.name,
                    tuple(s.channel_list),
                    s.monitor_source,
                    _owner(s),
                    int(s.rate),
                    _props(s),
                    tuple(float(v) for v in getattr(s.volume, "values", ())),
                    bool(s.mute),
                )
            )
        for s in sources:
            self.names[("source", s.index)] = s.name
            mon = s.monitor_of_sink if s.monitor_of_sink < 2**32 - 1 else None
            snap.sources.append(PaSource(s.index, s.name, tuple(s.channel_list), _owner(s), mon, _props(s)))
        for si in sink_inputs:
            self.names[("sink_input", si.index)] = si.name or ""
            snap.sink_inputs.append(PaStream(si.index, _owner(si), si.sink, bool(si.mute), _props(si)))
        for so in source_outputs:
            snap.source_outputs.append(PaStream(so.index, _owner(so), so.source, bool(so.mute), _props(so)))
        self._own_inputs = {si.index: si.mute for si, _ in links_in(snap)}
        self._snap = snap
        self._graph = to_graph(snap)
        return self._graph

    async def wait_changed(self, timeout: float, since: int | None = None) -> bool:
        return await wait_next_change(self._changed, self._serial, since, timeout)

    async def settle(self, quiet: float = 0.05, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not await self.wait_changed(quiet):
                break
        await self.refresh()

    async def wait_for(self, check: Callable[[Snapshot], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._dirty = True
            await self.refresh()
            if check(self._snap):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise BackendError(f"timed out waiting for {what}")
            await self.wait_changed(min(left, 0.1))

    async def close(self) -> None:
        for task in (*self._joins.values(), self._mute_check):
            if task is not None:
                task.cancel()
        if self._events is not None:
            self._events.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._events
        if self._pulse is not None:
            self._pulse.close()
            self._pulse = None

    # ------------------------------------------------------------ acting
    async def _load(self, module: str, args: str) -> int:
        from pulsectl import PulseError

        try:
            async with self._module_lock, self._server():
                return int(await self._pulse.module_load(module, args))
        except PulseError as err:
            raise BackendError(f"PulseAudio refused to load {module}: {err}") from None

    async def _unload(self, index: int | None) -> None:
        from pulsectl import PulseError

        if index is None:
            return
        async with self._module_lock, self._server():
            # Unloaded by now if its master went first: PulseAudio takes a loopback or remap down with it.
            if not any(m.index == index for m in await self._pulse.module_list()):
                return
            with contextlib.suppress(PulseError):
                await self._pulse.module_unload(index)

    def _record(self, node_id: int) -> Record:
        kind, index = decode_node(node_id)
        for rec in records_in(self._snap).values():
            if kind in (_REC_IN, _REC_OUT) and rec.source.index == index:
                return rec
        raise BackendError(f"member element {node_id} is gone")

    def _loopbacks_of(self, source_index: int) -> list[PaStream]:
        return [si for si, src in links_in(self._snap) if src == source_index]

    async def create_sink(self, group: GroupSpec) -> None:
        name = layout.sink_name(group.name)
        await self._load("module-null-sink", null_sink_args(group))
        await self.wait_for(lambda s: any(k.name == name for k in s.sinks), 5.0, f"group sink {name}")

    async def destroy_node(self, node_id: int) -> None:
        kind, index = decode_node(node_id)
        await self.refresh()
        if kind == _SINK:
            sink = next((s for s in self._snap.sinks if s.index == index), None)
            if sink is None:
                return
            if sink.props.get(layout.PROP_ROLE) != layout.ROLE_SINK:
                raise BackendError(f"sink {sink.name!r} is not pwgroup's: it stays")
            # Members first, loopbacks before their records, so nothing is taken down under another's feet.
            for src in self._snap.sources:
                if src.props.get(layout.PROP_ROLE) == ROLE_RECORD and src.props.get(layout.PROP_GROUP) == (
                    sink.props.get(layout.PROP_GROUP)
                ):
                    for si in self._loopbacks_of(src.index):
                        await self._unload(si.owner_module)
                    await self._unload(src.owner_module)
            await self._unload(sink.owner_module)
            await self.wait_for(lambda s: all(k.index != index for k in s.sinks), 5.0, f"sink {index} to go")
        else:
            rec = self._record(node_id)
            await self._unload(rec.source.owner_module)

    async def start_member(self, group: str, member: MemberSpec) -> None:
        await self.refresh()
        sink = next((s for s in self._snap.sinks if s.name == layout.sink_name(group)), None)
        if sink is None:
            raise BackendError(f"group sink of {group!r} is gone")
        await self._load_record(group, member.speaker, quantize_ms(member.delay_ms), sink.monitor_source)

    async def _load_record(
        self, group: str, member: str, delay_ms: int, monitor: int, swap_until: int | None = None
    ) -> int:
        used = {s.name for s in self._snap.sources}
        generation = next(
            i for i in range(len(used) + 2) if f"{layout.member_node_name(group, member, 'rec')}{i}" not in used
        )
        args = record_args(group, member, delay_ms, monitor, generation, swap_until)
        index = await self._load("module-remap-source", args)

        def loaded(s: Snapshot) -> bool:
            return any(src.owner_module == index for src in s.sources)

        await self.wait_for(loaded, 5.0, f"the record of member {member!r}")
        return index

    async def stop_member(self, group: str, speaker: str, pid: int | None, node_ids: tuple[int, ...]) -> None:
        await self.refresh()
        for src in self._snap.sources:
            p = src.props
            mine = p.get(layout.PROP_ROLE) == ROLE_RECORD and p.get(layout.PROP_GROUP) == group
            if mine and unhex(p.get(PROP_MEMBER_HEX, "")) == speaker:
                for si in self._loopbacks_of(src.index):
                    await self._unload(si.owner_module)
                await self._unload(src.owner_module)
        await self.wait_for(
            lambda s: (
                not any(
                    x.props.get(layout.PROP_GROUP) == group and unhex(x.props.get(PROP_MEMBER_HEX, "")) == speaker
                    for x in s.sources
                )
            ),
            5.0,
            f"member {speaker!r} to go",
        )

    async def link(self, out_port: int, in_port: int) -> None:
        """Links to a speaker are one loopback per member: the first channel pair loads it, the rest find it. It
        joins muted and is heard once it has settled on its delay (a line left muted by a pwgroup that stopped
        meanwhile is not a link, and is taken up again here)."""
        async with self._link_lock:
            joining = await self._link(out_port, in_port)
        if joining is not None:
            task = self._joins.get(joining.index)
            if task is None:
                task = self._joins[joining.index] = asyncio.create_task(self._join(joining))
                task.add_done_callback(functools.partial(self._forget_join, joining.index))
            await asyncio.shield(task)

    def _forget_join(self, index: int, _task: asyncio.Task[None]) -> None:
        self._joins.pop(index, None)

    async def _join(self, si: PaStream) -> None:
        from pulsectl import PulseError

        started = time.monotonic()
        settled = await self._wait_settled(si)
        if settled is None:
            return  # gone with its speaker or its record
        with contextlib.suppress(PulseError):
            async with self._server():
                await self._pulse.sink_input_mute(si.index, False)
        await self._retire_others(si)
        took = time.monotonic() - started
        if settled:
            log.info("loopback %d settled on its delay in %.1f s; unmuted", si.index, took)
        else:
            log.warning("loopback %d did not settle within %.0f s; unmuted anyway", si.index, took)

    async def _retire_others(self, si: PaStream) -> None:
        """Once a line plays, any other line of its member to the same speaker, and any older record of that member
        left without a line, is what a delay change cut short left behind (its old half): unloaded."""
        self._dirty = True
        await self.refresh()
        reads = {so.owner_module: so.target for so in self._snap.source_outputs if so.owner_module is not None}
        mine = reads.get(si.owner_module) if si.owner_module is not None else None
        records = all_records(self._snap)
        rec = next((r for r in records if r.source.index == mine), None)
        if rec is None:
            return
        older = [r for r in records if (r.group, r.member) == (rec.group, rec.member) and r.source.index != mine]
        for old in older:
            for line in self._loopbacks_of(old.source.index):
                if line.target == si.target:
                    log.info("unloading loopback %d, left by a delay change cut short", line.index)
                    await self._unload(line.owner_module)
        self._dirty = True
        await self.refresh()
        for old in older:
            if not self._loopbacks_of(old.source.index):
                await self._unload(old.source.owner_module)

    async def _wait_settled(self, si: PaStream, timeout: float = JOIN_TIMEOUT_S) -> bool | None:
        """Whether the loopback settled (see line_settled) before `timeout`; None if it went away."""
        from pulsectl import PulseError

        group = si.props.get(layout.PROP_GROUP)
        seen: list[tuple[float, int, float | None]] = []
        base: int | None = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                async with self._server():
                    lines = [
                        x
                        for x in await self._pulse.sink_input_list()
                        if _props(x).get(layout.PROP_ROLE) == ROLE_LINK and _props(x).get(layout.PROP_GROUP) == group
                    ]
                    if base is None:
                        outs = [o for o in await self._pulse.source_output_list() if _owner(o) == si.owner_module]
                        base = int(outs[0].rate) if outs else None
            except PulseError:
                return None
            own = [int(x.rate) for x in lines if x.index == si.index]
            if not own or base is None:
                return None
            others = [int(x.rate) for x in lines if x.index != si.index and not x.mute]
            seen.append((time.monotonic(), own[0], statistics.median(others) if others else None))
            if line_settled(seen, base):
                return True
            await asyncio.sleep(ADJUST_TIME_S)
        log.debug("loopback %d unsettled: base %s, last (rate, others) %s", si.index, base, [x[1:] for x in seen[-10:]])
        return False

    async def _link(self, out_port: int, in_port: int) -> PaStream | None:
        self._dirty = True
        await self.refresh()
        port_out, port_in = self._graph.ports.get(out_port), self._graph.ports.get(in_port)
        if port_out is None or port_in is None:
            raise BackendError(f"port {out_port} or {in_port} is gone")
        kind, target = decode_node(port_in.node_id)
        if decode_node(port_out.node_id)[0] == _SINK and decode_node(port_in.node_id)[0] == _REC_IN:
            return None  # a record reads its group's monitor from the moment it is loaded
        if decode_node(port_out.node_id)[0] != _REC_OUT or kind != _SINK:
            raise BackendError("the PulseAudio backend links only a member to its speaker")
        rec = self._record(port_out.node_id)
        for si in self._loopbacks_of(rec.source.index):
            if si.target == target:
                return si if si.index in joining_in(self._snap) else None
        return await self._load_loopback(rec, target, mute=True)

    async def _load_loopback(self, rec: Record, sink: int, mute: bool) -> PaStream:
        index = await self._load("module-loopback", loopback_args(rec.group, rec.source.index, sink, rec.delay_ms))
        found: list[PaStream] = []

        def loaded(s: Snapshot) -> bool:
            found[:] = [si for si in s.sink_inputs if si.owner_module == index]
            return bool(found)

        await self.wait_for(loaded, 5.0, f"the loopback of member {rec.member!r}")
        if mute:
            # A fresh loopback plays silence until its buffer holds the target latency, so muting it now,
            # a round trip after loading, is in time.
            async with self._server():
                await self._pulse.sink_input_mute(found[0].index, True)
        return found[0]

    async def unlink(self, link_id: int) -> None:
        index = sink_input_of_link(link_id)
        si = next((s for s in self._snap.sink_inputs if s.index == index), None)
        if si is not None and si.props.get(layout.PROP_ROLE) == ROLE_LINK:
            await self._unload(si.owner_module)

    async def set_delay(self, node_id: int, delay_ms: float, at_once: bool = False) -> None:
        """A new record and loopback at the new delay are built beside the old ones, the loopback muted; once it
        has settled (CONVERGE_S) the two swap mutes in one write, new one first, then the old pair is unloaded.
        Measured: no doubled audio, a dip of up to 20 ms in one change of ten (bench/delays.py)."""
        from pulsectl import PulseOperationFailed

        await self.refresh()
        old = self._record(node_id)
        new_ms = quantize_ms(delay_ms)
        sink = next((s for s in self._snap.sinks if s.monitor_source == self._reads(old)), None)
        if sink is None:
            raise BackendError(f"group sink of {old.group!r} is gone")
        old_links = self._loopbacks_of(old.source.index)
        swap_until = int(time.time() + SWAP_GRACE_S)
        new_module = await self._load_record(old.group, old.member, new_ms, sink.monitor_source, swap_until)
        new_rec = next(
            Record(src, old.group, old.member, new_ms) for src in self._snap.sources if src.owner_module == new_module
        )
        fresh = [await self._load_loopback(new_rec, si.target, mute=True) for si in old_links]
        if fresh and not at_once:
            # Muted, the new line fills and its rate control settles on the target before it is heard.
            await asyncio.gather(
                asyncio.sleep(max(CONVERGE_S, (BASE_MS + new_ms) / 1000.0 + FILL_MARGIN_S)),
                *(self._wait_settled(si) for si in fresh),
            )
        # Both requests leave in one write: the server applies them in order, usually in the same block. A line
        # whose speaker left meanwhile went with it; the swap still finishes, and the speaker's return relinks it.
        async with self._server():
            with contextlib.suppress(PulseOperationFailed):
                await asyncio.gather(
                    *(self._pulse.sink_input_mute(si.index, False) for si in fresh),
                    *(self._pulse.sink_input_mute(si.index, True) for si in old_links),
                )
        for si in old_links:
            await self._unload(si.owner_module)
        await self._unload(old.source.owner_module)
        await self.wait_for(lambda s: all(x.index != old.source.index for x in s.sources), 5.0, "the old record")

    async def set_gain(self, node_id: int, gain: float) -> None:
        # Member records state no gain, so the reconciler never asks; volume is not built on PulseAudio yet.
        raise BackendError("member volume is not available on the PulseAudio backend yet")

    def _sink_index(self, node_id: int) -> int:
        kind, index = decode_node(node_id)
        if kind != _SINK or all(s.index != index for s in self._snap.sinks):
            raise BackendError(f"sink {node_id} is gone")
        return index

    async def set_sink_volume(self, node_id: int, volume: float) -> None:
        """A sink's own volume on every channel; PulseAudio's scale is the mixer scale (sink_volume)."""
        from pulsectl import PulseVolumeInfo

        index = self._sink_index(node_id)
        sink = next(s for s in self._snap.sinks if s.index == index)
        async with self._server():
            await self._pulse.sink_volume_set(index, PulseVolumeInfo(max(0.0, volume), len(sink.channels) or 2))
        await self.wait_for(
            lambda s: all(abs(v - volume) < 1e-3 for x in s.sinks if x.index == index for v in x.volumes),
            2.0,
            f"the volume of sink {index}",
        )

    async def set_sink_mute(self, node_id: int, mute: bool) -> None:
        index = self._sink_index(node_id)
        async with self._server():
            await self._pulse.sink_mute(index, mute)
        await self.wait_for(
            lambda s: all(x.mute is mute for x in s.sinks if x.index == index), 2.0, f"the mute of sink {index}"
        )

    def _reads(self, rec: Record) -> int:
        for so in self._snap.source_outputs:
            if so.owner_module == rec.source.owner_module:
                return so.target
        return -1
