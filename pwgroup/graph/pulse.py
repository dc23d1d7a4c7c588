"""The PulseAudio adapter: the server read through pulsectl-asyncio and shown as the shared Graph model, and the
module changes made on it. When a member's line joins and how a delay change swaps lines is pulsesync's call.

A group is a null sink; a member is a remap-source over the group's monitor (its record, which outlives its
speaker) and, while the speaker is there, a module-loopback from that record into the speaker (its delay).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pwgroup.graph import Capabilities, layout, pulsesync, wait_next_change
from pwgroup.graph.pulsesync import (
    ADJUST_THRESHOLD_USEC,
    ADJUST_TIME_S,
    BASE_MS,
    CONVERGE_S,
    JOIN_TIMEOUT_S,
    PROP_SWAP_UNTIL,
)
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

MUTE_CHECK_S = 1.0  # how soon a change to one of pwgroup's own lines is looked at (see PulseBackend._watch)
# PulseAudio 16 reads latency_msec as a whole number of milliseconds.
DELAY_STEP_MS = 1
PROP_MEMBER_HEX = "pwgroup.member.hex"
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


def joining_in(snap: Snapshot, now: float) -> set[int]:
    """Sink inputs of loopbacks still settling, muted, at wall-clock time `now`: not links yet (pulsesync.joining)."""
    return pulsesync.joining(all_records(snap), links_in(snap), now)


def _ports(node_id: int, channels: Iterable[str], direction: str, monitor: bool = False) -> list[Port]:
    base = node_id * _PORTS + (50 if direction == "out" else 0)
    return [
        Port(base + i, node_id, f"{'monitor' if monitor else direction}_{ch}", direction, ch, monitor)  # type: ignore[arg-type]
        for i, ch in enumerate(channels)
    ]


def to_graph(snap: Snapshot, now: float) -> Graph:
    """The server as the shared model: sinks are nodes with input and monitor ports, a member record is a
    member-in and member-out node pair fed by its group's monitor, and a loopback is the links from a
    record's member-out node to the speaker it plays on. `now` (wall clock) tells a delay change under way
    from one cut short (pulsesync.joining): the graph is what the server said, read at that time."""
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
    joining = joining_in(snap, now)
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
    """Keeps a snapshot of the server, refreshed when its subscription reports a change. Its member lines join
    and swap under a pulsesync.LoopbackSync, to which it is the LineServer. `wall` is the clock the observed
    graph is read at (see to_graph) and a delay change's deadline is stamped in."""

    name = "pulse"

    def __init__(self, env: Mapping[str, str] | None = None, wall: Callable[[], float] = time.time) -> None:
        self.env = dict(os.environ if env is None else env)
        self.wall = wall
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
        self._sync = pulsesync.LoopbackSync(self, wall)

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
        try:
            info = await asyncio.wait_for(self._pulse.server_info(), timeout)
        except (PulseError, TimeoutError):
            info = None
        if info is not None:
            self.capabilities = dataclasses.replace(self.capabilities, server_version=str(info.server_version))
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
        self._graph = to_graph(snap, self.wall())
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
        self._sync.close()
        if self._mute_check is not None:
            self._mute_check.cancel()
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
        joins muted and is heard once it has settled on its delay (pulsesync.LoopbackSync.join)."""
        async with self._link_lock:
            target = await self._link_target(out_port, in_port)
            joining = None if target is None else await self._sync.take_up(*target)
        if joining is not None:
            await self._sync.join(joining)

    async def _link_target(self, out_port: int, in_port: int) -> tuple[Record, int] | None:
        """The member record and the speaker sink a link asks for; None for a record's own input."""
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
        return self._record(port_out.node_id), target

    # ------------------------------------------------------------ the LineServer, for the loopback controller
    def records(self) -> list[Record]:
        return all_records(self._snap)

    def lines(self) -> list[tuple[PaStream, int]]:
        return links_in(self._snap)

    def source_read_by(self, module: int | None) -> int | None:
        reads = {so.owner_module: so.target for so in self._snap.source_outputs if so.owner_module is not None}
        return reads.get(module) if module is not None else None

    async def reread(self) -> None:
        self._dirty = True
        await self.refresh()

    async def load_record(self, group: str, member: str, delay_ms: int, monitor: int, swap_until: int) -> Record:
        module = await self._load_record(group, member, delay_ms, monitor, swap_until)
        return next(Record(src, group, member, delay_ms) for src in self._snap.sources if src.owner_module == module)

    async def load_line(self, rec: Record, sink: int) -> PaStream:
        index = await self._load("module-loopback", loopback_args(rec.group, rec.source.index, sink, rec.delay_ms))
        found: list[PaStream] = []

        def loaded(s: Snapshot) -> bool:
            found[:] = [si for si in s.sink_inputs if si.owner_module == index]
            return bool(found)

        await self.wait_for(loaded, 5.0, f"the loopback of member {rec.member!r}")
        # A fresh loopback plays silence until its buffer holds the target latency, so muting it now,
        # a round trip after loading, is in time.
        async with self._server():
            await self._pulse.sink_input_mute(found[0].index, True)
        return found[0]

    async def unload(self, module: int | None) -> None:
        await self._unload(module)

    async def unmute_line(self, index: int) -> None:
        from pulsectl import PulseError

        with contextlib.suppress(PulseError):
            async with self._server():
                await self._pulse.sink_input_mute(index, False)

    async def swap_mutes(self, unmute: Sequence[int], mute: Sequence[int]) -> None:
        from pulsectl import PulseOperationFailed

        # A line whose speaker left meanwhile went with it; the swap still finishes, and the speaker's return
        # relinks it (else the daemon died on the refusal).
        async with self._server():
            with contextlib.suppress(PulseOperationFailed):
                await asyncio.gather(
                    *(self._pulse.sink_input_mute(i, False) for i in unmute),
                    *(self._pulse.sink_input_mute(i, True) for i in mute),
                )

    async def group_line_rates(self, group: str | None) -> list[tuple[int, int, bool]] | None:
        from pulsectl import PulseError

        try:
            async with self._server():
                found = await self._pulse.sink_input_list()
        except PulseError:
            return None
        return [
            (x.index, int(x.rate), bool(x.mute))
            for x in found
            if _props(x).get(layout.PROP_ROLE) == ROLE_LINK and _props(x).get(layout.PROP_GROUP) == group
        ]

    async def line_base_rate(self, line: PaStream) -> int | None:
        from pulsectl import PulseError

        try:
            async with self._server():
                outs = [o for o in await self._pulse.source_output_list() if _owner(o) == line.owner_module]
        except PulseError:
            return None
        return int(outs[0].rate) if outs else None

    async def wait_gone(self, source: int, timeout: float, what: str) -> None:
        await self.wait_for(lambda s: all(x.index != source for x in s.sources), timeout, what)

    # ------------------------------------------------------------ acting, continued
    async def unlink(self, link_id: int) -> None:
        index = sink_input_of_link(link_id)
        si = next((s for s in self._snap.sink_inputs if s.index == index), None)
        if si is not None and si.props.get(layout.PROP_ROLE) == ROLE_LINK:
            await self._unload(si.owner_module)

    async def set_delay(self, node_id: int, delay_ms: float, at_once: bool = False) -> None:
        """A swap to a new line at the new delay, settled muted first (pulsesync.LoopbackSync.swap)."""
        await self.refresh()
        old = self._record(node_id)
        sink = next((s for s in self._snap.sinks if s.monitor_source == self._reads(old)), None)
        if sink is None:
            raise BackendError(f"group sink of {old.group!r} is gone")
        await self._sync.swap(old, quantize_ms(delay_ms), sink.monitor_source, at_once)

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

    # ------------------------------------------------------------ measuring (calibration: PipeWire only for now)
    # Arrays are typed loosely: nothing is measured on PulseAudio yet.
    async def play_and_record(self, sink_id: int, signal: Any, record: Sequence[int]) -> Any:
        raise self._no_calibration()

    async def feed_and_record(self, probes: Any, into: Sequence[Sequence[int]], record: Sequence[int]) -> Any:
        raise self._no_calibration()

    @staticmethod
    def _no_calibration() -> Exception:
        from pwgroup.model import UserError

        return UserError(
            "calibration needs PipeWire for now: on PulseAudio set each speaker's delay with 'pwgroup delay set' "
            "and fine-tune it by ear with 'pwgroup delay trim'"
        )
