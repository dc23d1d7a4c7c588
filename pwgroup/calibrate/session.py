"""A calibration session: one sweep through the group's own path, heard by a microphone, on one timeline.

Every present member is first given a known stagger (member i delayed by i x `stagger`), so a single sweep
played into the group sink reaches the microphone once per member, each inside its own window. The recording
holds the microphone and the group sink's monitor in one stream (sample-aligned), and the monitor is the
reference: it is exactly what every member's delay line reads. A member's latency is its arrival minus its
stagger. Delays are then set to (slowest latency - own latency); members not heard keep their delay.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pwgroup.calibrate import estimator
from pwgroup.graph import layout
from pwgroup.graph.capture import Player, Recorder
from pwgroup.model import Graph, GroupSpec, MemberSpec, Node, UserError

MAX_STAGGER_S = 0.5  # pass 1: each member's window; the spread of latencies (plus echoes) must fit in it
VERIFY_STAGGER_S = 0.15  # pass 2: members are aligned by then, so a window only holds their echoes
SWEEP_S = 0.5
VERIFY_TOLERANCE_MS = 1.0  # a verified spread wider than this means a member was misheard


@dataclass(frozen=True)
class MemberResult:
    speaker: str
    status: str  # ok | not-heard | clipped | absent
    latency_ms: float | None
    delay_ms: float | None  # the delay applied afterwards
    snr_db: float | None
    residual_ms: float | None  # verification: arrival against the group's median after alignment


@dataclass(frozen=True)
class Report:
    group: str
    microphone: str
    members: tuple[MemberResult, ...]
    seconds: float
    applied: bool = True  # False: verification failed and the previous delays were put back

    def as_dict(self) -> dict[str, Any]:
        def num(x: float | None, nd: int = 3) -> float | None:
            return None if x is None or not math.isfinite(x) else round(float(x), nd)

        return {
            "group": self.group,
            "microphone": self.microphone,
            "method": "acoustic",
            "seconds": round(self.seconds, 2),
            "members": [
                {
                    "speaker": m.speaker,
                    "status": m.status,
                    "latency_ms": num(m.latency_ms),
                    "delay_ms": num(m.delay_ms),
                    "confidence_db": num(m.snr_db, 1),
                    "residual_ms": num(m.residual_ms, 4),
                }
                for m in self.members
            ],
            "worst_residual_ms": num(self.worst_residual_ms, 4),
            "verified": self.verified,
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


async def calibrate(be: Any, group: GroupSpec, mic_key: str | None, converge: Any) -> Report:
    """Measure every present member of `group`, align them, and verify; `converge(desired)` applies a spec."""
    t0 = time.monotonic()
    graph = be.graph
    mic = find_microphone(graph, mic_key)
    state = layout.observe_group(graph, group.name)
    if state.sink is None:
        raise UserError(f"group {group.name!r} has no sink: 'pwgroup group create' it again")
    present = [m.speaker for m in state.members if m.present and m.linked]
    if not present:
        raise UserError(f"no speaker of group {group.name!r} is connected: nothing to calibrate")
    rate = layout.graph_rate(graph)
    old = {m.speaker: m.delay_ms for m in group.members}

    def with_delays(delays: Mapping[str, float]) -> GroupSpec:
        members = tuple(MemberSpec(m.speaker, delays.get(m.speaker, old[m.speaker])) for m in group.members)
        return GroupSpec(group.name, group.description, members)

    # Pass 1: member i delayed by i x stagger alone, so its arrival falls in window i.
    stagger = stagger_for(len(present))
    offsets = {k: i * stagger for i, k in enumerate(present)}
    try:
        await converge(with_delays({k: v * 1000 for k, v in offsets.items()}))
        arrivals = await _measure(be, state.sink, mic, [(offsets[k], stagger) for k in present], rate)
    except BaseException:
        await converge(group)  # back to the delays we found
        raise
    found = dict(zip(present, arrivals, strict=True))
    latencies = {k: a.ms(rate) - offsets[k] * 1000 for k, a in found.items() if a.ok}
    delays = solve(latencies) if latencies else {}

    # Pass 2, verification: the new delays plus a small known stagger; every arrival should sit at
    # target + stagger. What it measures is what the group now does, not what was configured.
    residuals: dict[str, float] = {}
    if delays:
        heard = [k for k in present if k in delays]
        target = max(latencies.values()) / 1000
        offsets2 = {k: i * VERIFY_STAGGER_S for i, k in enumerate(heard)}
        try:
            await converge(with_delays({k: delays[k] + offsets2[k] * 1000 for k in heard}))
            windows = [(target + offsets2[k] - VERIFY_STAGGER_S / 2, VERIFY_STAGGER_S) for k in heard]
            check = dict(zip(heard, await _measure(be, state.sink, mic, windows, rate), strict=True))
        finally:
            await converge(with_delays(delays))
        ends = {k: a.ms(rate) - offsets2[k] * 1000 for k, a in check.items() if a.ok}
        if ends:
            mid = float(np.median(list(ends.values())))
            residuals = {k: v - mid for k, v in ends.items()}
    results = []
    for m in group.members:
        if m.speaker not in present:
            results.append(MemberResult(m.speaker, "absent", None, old[m.speaker], None, None))
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
            )
        )
    report = Report(group.name, mic.name, tuple(results), time.monotonic() - t0)
    if not report.verified:
        # What was heard after alignment contradicts pass 1: keep the delays the group had.
        await converge(group)
        restored = tuple(dataclasses.replace(m, delay_ms=old[m.speaker]) for m in report.members)
        report = Report(group.name, mic.name, restored, time.monotonic() - t0, applied=False)
    return report


async def _measure(
    be: Any, sink: Node, mic: Node, windows_s: list[tuple[float, float]], rate: int
) -> list[estimator.Arrival]:
    """Play one sweep into `sink` and return the first arrival in each (start, length) lag window, seconds."""
    graph = be.graph
    # A virtual source's capture ports may carry port.monitor; any output of a Source node is its capture.
    mic_port = graph.ports_of(mic.id, "out", monitor=True) or graph.ports_of(mic.id, "out", monitor=False)
    monitor = graph.ports_of(sink.id, "out", monitor=True)
    if not mic_port or not monitor:
        raise UserError(f"microphone {mic.name[:60]!r} has no capture port: is it in use or broken?")
    signal = estimator.sweep(SWEEP_S, rate)
    lead = int(0.1 * rate)
    last = max(start + length for start, length in windows_s)
    play = np.zeros(lead + len(signal) + int((last + 0.1) * rate))
    play[lead : lead + len(signal)] = signal
    recording = await asyncio.to_thread(_play_and_record, be.env, sink.name, mic_port[0].id, monitor[0].id, play)
    reference, heard = recording[:, 1], recording[:, 0]
    if not np.any(np.abs(reference) > 1e-3):
        raise UserError("the calibration sweep never reached the group sink: is the sink suspended or broken?")
    if not np.any(np.abs(heard) > 1e-6):
        raise UserError(f"microphone {mic.name[:60]!r} recorded silence: is it muted or unplugged?")
    windows = [(max(0, round(start * rate)), round((start + length) * rate)) for start, length in windows_s]
    return estimator.measure(reference, heard, windows, rate)


def _play_and_record(env: Mapping[str, str], sink: str, mic_port: int, monitor_port: int, frames: Any) -> Any:
    stereo = np.stack([frames, frames], axis=1)
    with Recorder(env, [mic_port, monitor_port]) as rec:
        time.sleep(0.1)
        Player(env, sink, stereo).start().wait(timeout=30.0)
        time.sleep(0.1)
        return rec.stop()
