"""A calibration session: one sweep through the group's own path, heard by a microphone, on one timeline.

Every present member is first given a known stagger (member i delayed by i x `stagger`), so a single sweep
played into the group sink reaches the microphone once per member, each inside its own window. The recording
holds the microphone and the group sink's monitor in one stream (sample-aligned), and the monitor is the
reference: it is exactly what every member's delay line reads. A member's latency is its arrival minus its
stagger. Delays are then set to (slowest latency - own latency); members not heard keep their delay.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from pwgroup.calibrate import estimator
from pwgroup.graph import Backend, layout
from pwgroup.model import Graph, GroupSpec, MemberSpec, Node, UserError

MAX_STAGGER_S = 0.5  # pass 1: each member's window; the spread of latencies (plus echoes) must fit in it
VERIFY_STAGGER_S = 0.15  # pass 2: members are aligned by then, so a window only holds their echoes
SIGNAL_S = 0.5  # the sweep, or in fast mode each member's own noise probe
LONG_SIGNAL_S = 2.0  # when a member is not heard: 6 dB more processing gain (bench/estimator.py: -25 dB SNR)
MAX_LATENCY_S = 0.6  # fast mode: the longest speaker latency looked for, beyond its current delay
VERIFY_TOLERANCE_MS = 1.0  # a verified spread wider than this means a member was misheard


@dataclass(frozen=True)
class MemberResult:
    speaker: str
    status: str  # ok | not-heard | clipped | absent | reported | not-reported
    latency_ms: float | None
    delay_ms: float | None  # the delay applied afterwards
    snr_db: float | None
    residual_ms: float | None  # verification: arrival against the group's median after alignment
    source: str | None = "microphone"  # where latency_ms came from: microphone | bluez | pipewire[-fallback]
    trace: tuple[float, ...] = ()  # the impulse response around the arrival (estimator.trace), for display


@dataclass(frozen=True)
class Report:
    group: str
    microphone: str | None
    members: tuple[MemberResult, ...]
    seconds: float
    applied: bool = True  # False: verification failed and the previous delays were put back
    method: str = "sweep"  # sweep: staggered through the group sink | fast: all at once | reported: a guess
    signal_s: float | None = None  # length of the sweep or probes (longer when a member was not heard at first)

    def as_dict(self) -> dict[str, Any]:
        def num(x: float | None, nd: int = 3) -> float | None:
            return None if x is None or not math.isfinite(x) else round(float(x), nd)

        return {
            "group": self.group,
            "microphone": self.microphone,
            "method": self.method,
            "seconds": round(self.seconds, 2),
            "signal_s": self.signal_s,
            "members": [
                {
                    "speaker": m.speaker,
                    "status": m.status,
                    "latency_ms": num(m.latency_ms),
                    "delay_ms": num(m.delay_ms),
                    "confidence_db": num(m.snr_db, 1),
                    "residual_ms": num(m.residual_ms, 4),
                    "source": m.source,
                }
                for m in self.members
            ],
            "worst_residual_ms": num(self.worst_residual_ms, 4),
            "verified": self.verified if self.method != "reported" else None,
            "applied": self.applied,
        }

    @property
    def verified(self) -> bool:
        worst = self.worst_residual_ms
        return worst is not None and bool(worst <= VERIFY_TOLERANCE_MS)

    @property
    def worst_residual_ms(self) -> float | None:
        found = [m.residual_ms for m in self.members if m.residual_ms is not None]
        return float(max(found) - min(found)) if found else None


def find_microphone(graph: Graph, key: str | None) -> Node:
    """The microphone: a named or numbered Audio/Source node; without a key, the only one there is."""
    sources = [n for n in graph.nodes.values() if n.media_class.startswith("Audio/Source")]
    if key is None:
        if len(sources) == 1:
            return sources[0]
        if not sources:
            raise UserError("no microphone found: connect one, or name it with --mic")
        raise UserError("several microphones found: name one with --mic (see 'pactl list short sources')")
    for node in graph.nodes.values():
        if key in (node.name, str(node.id)):
            if node.media_class.startswith("Audio/Source"):
                return node
            if node.media_class.startswith("Audio/Sink"):
                raise UserError(f"{key!r} is a sink, and its monitor is not a microphone: pick an Audio/Source")
            raise UserError(f"{key!r} is not a microphone ({node.media_class or 'no media class'})")
    if key.endswith(".monitor"):
        raise UserError(f"{key!r} is a sink's monitor, not a microphone: pick an Audio/Source")
    raise UserError(f"no microphone named {key!r}: 'pactl list short sources' lists them")


def stagger_for(count: int) -> float:
    return MAX_STAGGER_S if count <= 1 else min(MAX_STAGGER_S, (layout.MAX_DELAY_S - 0.1) / (count - 1))


def solve(latencies: Mapping[str, float]) -> dict[str, float]:
    """Delays (ms) that make every measured latency (ms) arrive with the slowest one."""
    target = max(latencies.values())
    return {k: target - v for k, v in latencies.items()}


Progress = Callable[[str, float], None]
Apply = Callable[[Mapping[str, float]], Awaitable[None]]  # member delays (ms) -> the group, applied at once


class Converge(Protocol):
    """Makes the group in the graph match a spec (the reconciler's converge, bound to one group)."""

    def __call__(self, desired: GroupSpec, at_once: bool = False) -> Awaitable[None]: ...


def _quiet(text: str, done: float) -> None:
    pass


async def calibrate(
    be: Backend,
    group: GroupSpec,
    mic_key: str | None,
    converge: Converge,
    fast: bool = False,
    progress: Progress = _quiet,
) -> Report:
    """Measure every present member of `group`, align them, and verify.

    `converge(desired, at_once=...)` applies a spec. `fast` measures all members at once, each with its own
    uncorrelated probe fed straight into its delay element, instead of staggering one sweep through the group.
    `progress(what, fraction done)` is told each step as it starts.
    """
    t0 = time.monotonic()
    method = "fast" if fast else "sweep"
    graph = be.graph
    mic = find_microphone(graph, mic_key)
    state = layout.observe_group(graph, group.name)
    sink = state.sink
    if sink is None:
        raise UserError(f"group {group.name!r} has no sink: 'pwgroup group create' it again")
    present = [m.speaker for m in state.members if m.present and m.linked]
    if not present:
        raise UserError(f"no speaker of group {group.name!r} is connected: nothing to calibrate")
    rate = layout.graph_rate(graph)
    old = {m.speaker: m.delay_ms for m in group.members}

    def with_delays(delays: Mapping[str, float]) -> GroupSpec:
        members = tuple(MemberSpec(m.speaker, delays.get(m.speaker, old[m.speaker])) for m in group.members)
        return GroupSpec(group.name, group.description, members)

    # Between sweeps nobody listens to the delay lines: move their taps at once instead of waiting for them
    # to fill (up to 4 s), and put the group back as it was if anything goes wrong.
    async def apply(delays: Mapping[str, float]) -> None:
        await converge(with_delays(delays), at_once=True)

    async def measure(length_s: float) -> tuple[dict[str, estimator.Arrival], dict[str, float]]:
        if fast:
            return await _pass_fast(be, group.name, mic, present, rate, length_s)
        return await _pass_staggered(be, apply, sink, mic, present, rate, length_s)

    residuals: dict[str, float] = {}
    length_s = SIGNAL_S
    signal = "probes" if fast else "sweep"
    try:
        progress(f"measuring {len(present)} speaker(s) with a {length_s:g} s {signal}", 0.05)
        found, latencies = await measure(length_s)
        if any(a.status == "not-heard" for a in found.values()):
            # Quiet speaker, loud room or a far microphone: a four times longer signal before giving up.
            length_s = LONG_SIGNAL_S
            progress(f"a speaker was not heard: measuring again with a {length_s:g} s {signal}", 0.35)
            found, latencies = await measure(length_s)
        delays = solve(latencies) if latencies else {}
        if delays:
            progress("aligned: measuring once more to verify", 0.6)
            if fast:
                await apply(delays)
                check, _ = await _pass_fast(be, group.name, mic, list(delays), rate, length_s)
                ends = {k: a.ms(rate) for k, a in check.items() if a.ok}
            else:
                target = max(latencies.values())
                ends = await _verify_staggered(be, apply, sink, mic, delays, target, rate, length_s)
                await apply(delays)
            if ends:
                mid = float(np.median(list(ends.values())))
                residuals = {k: v - mid for k, v in ends.items()}
    except BaseException:
        await converge(group, at_once=True)  # back to the delays we found
        raise
    results = []
    for m in group.members:
        if m.speaker not in present:
            results.append(MemberResult(m.speaker, "absent", None, old[m.speaker], None, None, source=None))
            continue
        a = found[m.speaker]
        results.append(
            MemberResult(
                m.speaker,
                a.status,
                latencies.get(m.speaker),
                delays.get(m.speaker, old[m.speaker]),
                a.snr_db,
                residuals.get(m.speaker),
                trace=a.trace,
            )
        )
    progress("done", 1.0)
    report = Report(group.name, mic.name, tuple(results), time.monotonic() - t0, method=method, signal_s=length_s)
    if not report.verified:
        # What was heard after alignment contradicts the measurement: keep the delays the group had.
        await converge(group, at_once=True)
        restored = tuple(dataclasses.replace(m, delay_ms=old[m.speaker]) for m in report.members)
        report = Report(
            group.name, mic.name, restored, time.monotonic() - t0, applied=False, method=method, signal_s=length_s
        )
    return report


def guess_latencies(
    present: list[str],
    reported: Mapping[str, float],
    node_latency: Mapping[str, float],
    fallback: Collection[str] = (),
) -> dict[str, tuple[float, str]]:
    """Each member's reported latency and its source: BlueZ's transport Delay first (the speaker's own word),
    else what PipeWire's sink port reports (Delay or its codec guess, plus a quantum); `fallback` names the
    members whose port holds bluez5's codec guess, not a delay report. Zero means no report."""
    out: dict[str, tuple[float, str]] = {}
    for k in present:
        if reported.get(k, 0.0) > 0.0:
            out[k] = (reported[k], "bluez")
        elif node_latency.get(k, 0.0) > 0.0:
            out[k] = (node_latency[k], "pipewire-fallback" if k in fallback else "pipewire")
    return out


def reports_fallback(node_props: Mapping[str, object], transport_ms: float, table: Mapping[str, float]) -> bool:
    """Whether a Bluetooth sink's reported transport delay is bluez5's fallback for its codec (no delay report
    came from the speaker): 200 ms for SBC up to PipeWire 1.0, 125 ms from 1.2 (capabilities.bluez_fallback_ms)."""
    guess = table.get(str(node_props.get("api.bluez5.codec", "")).lower())
    return guess is not None and abs(transport_ms - guess) < 0.5


async def apply_reported(
    be: Backend, group: GroupSpec, converge: Converge, bluez_delays: Mapping[str, float]
) -> Report:
    """No microphone: delays from what BlueZ or PipeWire report. A guess, often 100 ms or more off."""
    t0 = time.monotonic()
    graph = be.graph
    state = layout.observe_group(graph, group.name)
    present = [m.speaker for m in state.members if m.present]
    rate, quantum = layout.graph_rate(graph), layout.graph_quantum(graph)
    node_latency = {}
    fallback = set()
    for seen in state.members:
        if seen.speaker_node is not None:
            ports = graph.ports_of(seen.speaker_node.id, "in")
            found = [ms for p in ports if (ms := p.latency_ms(quantum, rate)) is not None]
            if found:
                node_latency[seen.speaker] = max(found)
            transport = [p.latency[2] / 1e6 for p in ports if p.latency is not None]
            if transport and reports_fallback(
                seen.speaker_node.props, max(transport), be.capabilities.bluez_fallback_ms
            ):
                fallback.add(seen.speaker)
    guesses = guess_latencies(present, bluez_delays, node_latency, fallback)
    delays = solve({k: v for k, (v, _) in guesses.items()}) if guesses else {}
    old = {m.speaker: m.delay_ms for m in group.members}
    members = tuple(MemberSpec(m.speaker, delays.get(m.speaker, m.delay_ms)) for m in group.members)
    await converge(GroupSpec(group.name, group.description, members))
    results = []
    for m in group.members:
        if m.speaker not in present:
            results.append(MemberResult(m.speaker, "absent", None, old[m.speaker], None, None, source=None))
        elif m.speaker not in guesses:
            results.append(MemberResult(m.speaker, "not-reported", None, old[m.speaker], None, None, source=None))
        else:
            value, source = guesses[m.speaker]
            results.append(MemberResult(m.speaker, "reported", value, delays[m.speaker], None, None, source=source))
    return Report(group.name, None, tuple(results), time.monotonic() - t0, method="reported")


async def _pass_staggered(
    be: Backend, apply: Apply, sink: Node, mic: Node, present: list[str], rate: int, length_s: float
) -> tuple[dict[str, estimator.Arrival], dict[str, float]]:
    """Member i delayed by i x stagger alone, one sweep into the group sink: its arrival falls in window i."""
    stagger = stagger_for(len(present))
    offsets = {k: i * stagger for i, k in enumerate(present)}
    await apply({k: v * 1000 for k, v in offsets.items()})
    arrivals = await _measure(be, sink, mic, [(offsets[k], stagger) for k in present], rate, length_s)
    found = dict(zip(present, arrivals, strict=True))
    return found, {k: a.ms(rate) - offsets[k] * 1000 for k, a in found.items() if a.ok}


async def _verify_staggered(
    be: Backend,
    apply: Apply,
    sink: Node,
    mic: Node,
    delays: Mapping[str, float],
    target_ms: float,
    rate: int,
    length_s: float,
) -> dict[str, float]:
    """The new delays plus a small known stagger, one more sweep: every arrival less its stagger should land
    at `target_ms`. What it measures is what the group now does, not what was configured."""
    heard = list(delays)
    offsets = {k: i * VERIFY_STAGGER_S for i, k in enumerate(heard)}
    await apply({k: delays[k] + offsets[k] * 1000 for k in heard})
    windows = [(target_ms / 1000 + offsets[k] - VERIFY_STAGGER_S / 2, VERIFY_STAGGER_S) for k in heard]
    check = dict(zip(heard, await _measure(be, sink, mic, windows, rate, length_s), strict=True))
    return {k: a.ms(rate) - offsets[k] * 1000 for k, a in check.items() if a.ok}


async def _pass_fast(
    be: Backend, group: str, mic: Node, members: list[str], rate: int, length_s: float
) -> tuple[dict[str, estimator.Arrival], dict[str, float]]:
    """All members at once: member i's delay element is fed its own uncorrelated probe (beside the group
    monitor), and the recording holds the microphone and every probe, so each is found by its own reference.
    Returns each arrival (from the element's input to the microphone) and the latency less the member's delay."""
    await be.refresh()
    graph = be.graph
    state = {m.speaker: m for m in layout.observe_group(graph, group).members}
    elements = [n for k in members if (n := state[k].in_node) is not None]
    if len(elements) != len(members):
        raise UserError(f"a member of group {group!r} lost its delay element: run 'pwgroup status' and retry")
    delays_s = [float(state[k].delay_ms or 0.0) / 1000 for k in members]
    mic_port = _capture_port(graph, mic)
    reach = max(delays_s) + MAX_LATENCY_S
    lead = round(0.05 * rate)
    probes = np.zeros((lead + round((length_s + reach + 0.05) * rate), len(members)), dtype=np.float32)
    for i in range(len(members)):
        probe = estimator.probe(length_s, rate, seed=i + 1)
        probes[lead : lead + len(probe), i] = probe
    into = [[q.id for q in graph.ports_of(e.id, "in")] for e in elements]
    recording = await be.feed_and_record(probes, into, [mic_port])
    heard = recording[:, 0]
    _check_heard(mic, heard)
    arrivals = []
    for i in range(len(members)):
        reference = recording[:, 1 + i]
        if not np.any(np.abs(reference) > 1e-3):
            raise UserError("the calibration probe never reached the delay elements: is the graph stalled?")
        arrivals += estimator.measure(reference, heard, [(0, round(reach * rate))], rate)
    found = dict(zip(members, estimator.drop_faint(arrivals), strict=True))
    latencies = {k: found[k].ms(rate) - d * 1000 for k, d in zip(members, delays_s, strict=True) if found[k].ok}
    return found, latencies


def _capture_port(graph: Graph, mic: Node) -> int:
    # A virtual source's capture ports may carry port.monitor; any output of a Source node is its capture.
    ports = graph.ports_of(mic.id, "out", monitor=True) or graph.ports_of(mic.id, "out", monitor=False)
    if not ports:
        raise UserError(f"microphone {mic.name[:60]!r} has no capture port: is it in use or broken?")
    return ports[0].id


def _check_heard(mic: Node, heard: np.ndarray) -> None:
    if not np.any(np.abs(heard) > 1e-6):
        raise UserError(f"microphone {mic.name[:60]!r} recorded silence: is it muted or unplugged?")


async def _measure(
    be: Backend, sink: Node, mic: Node, windows_s: list[tuple[float, float]], rate: int, length_s: float
) -> list[estimator.Arrival]:
    """Play one sweep into `sink` and return the first arrival in each (start, length) lag window, seconds."""
    graph = be.graph
    mic_port = _capture_port(graph, mic)
    monitor = graph.ports_of(sink.id, "out", monitor=True)
    if not monitor:
        raise UserError(f"group sink {sink.name[:60]!r} has no monitor: 'pwgroup group create' it again")
    signal = estimator.sweep(length_s, rate)
    lead = int(0.1 * rate)
    last = max(start + length for start, length in windows_s)
    play = np.zeros(lead + len(signal) + int((last + 0.1) * rate))
    play[lead : lead + len(signal)] = signal
    recording = await be.play_and_record(sink.id, play, [mic_port, monitor[0].id])
    reference, heard = recording[:, 1], recording[:, 0]
    if not np.any(np.abs(reference) > 1e-3):
        raise UserError("the calibration sweep never reached the group sink: is the sink suspended or broken?")
    _check_heard(mic, heard)
    windows = [(max(0, round(start * rate)), round((start + length) * rate)) for start, length in windows_s]
    return estimator.measure(reference, heard, windows, rate)
