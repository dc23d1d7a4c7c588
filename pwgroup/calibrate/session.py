"""A calibration session: one sweep through the group's own path, heard by a microphone, on one timeline.

Every present member is first given a known stagger (member i delayed by i x `stagger`), so a single sweep
played into the group sink reaches the microphone once per member, each inside its own window. The recording
holds the microphone and the group sink's monitor in one stream (sample-aligned), and the monitor is the
reference: it is exactly what every member's delay line reads. A member's latency is its arrival minus its
stagger. Delays are then set to (slowest latency - own latency); members not heard keep their delay.
"""

from __future__ import annotations

import asyncio
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

MAX_STAGGER_S = 0.5
TAIL_S = 0.6  # the slowest speaker we expect to hear (latency), after the last stagger


@dataclass(frozen=True)
class MemberResult:
    speaker: str
    status: str  # ok | not-heard | clipped | absent
    latency_ms: float | None
    delay_ms: float | None  # the delay applied afterwards
    snr_db: float | None


@dataclass(frozen=True)
class Report:
    group: str
    microphone: str
    members: tuple[MemberResult, ...]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        def num(x: float | None, nd: int = 3) -> float | None:
            return None if x is None or not math.isfinite(x) else round(x, nd)

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
                }
                for m in self.members
            ],
        }


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
    """Measure every present member of `group` and align them; `converge(desired)` applies a GroupSpec."""
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
    stagger_s = stagger_for(len(present))
    old = {m.speaker: m.delay_ms for m in group.members}
    staggered = tuple(
        MemberSpec(m.speaker, present.index(m.speaker) * stagger_s * 1000 if m.speaker in present else m.delay_ms)
        for m in group.members
    )
    await converge(GroupSpec(group.name, group.description, staggered))
    try:
        arrivals, step = await _measure(be, state.sink, mic, present, stagger_s, rate)
    except BaseException:
        await converge(group)  # back to the delays we found
        raise
    latencies = {
        key: (a.samples - i * step) * 1000.0 / rate
        for i, (key, a) in enumerate(zip(present, arrivals, strict=True))
        if a.ok
    }
    delays = solve(latencies) if latencies else {}
    final = tuple(MemberSpec(m.speaker, delays.get(m.speaker, old[m.speaker])) for m in group.members)
    await converge(GroupSpec(group.name, group.description, final))
    results = []
    for m in group.members:
        if m.speaker not in present:
            results.append(MemberResult(m.speaker, "absent", None, old[m.speaker], None))
            continue
        a = arrivals[present.index(m.speaker)]
        results.append(
            MemberResult(m.speaker, a.status, latencies.get(m.speaker), delays.get(m.speaker, old[m.speaker]), a.snr_db)
        )
    return Report(group.name, mic.name, tuple(results), time.monotonic() - t0)


async def _measure(
    be: Any, sink: Node, mic: Node, present: list[str], stagger_s: float, rate: int
) -> tuple[list[estimator.Arrival], int]:
    graph = be.graph
    # A virtual source's capture ports may carry port.monitor; any output of a Source node is its capture.
    mic_port = graph.ports_of(mic.id, "out", monitor=True) or graph.ports_of(mic.id, "out", monitor=False)
    monitor = graph.ports_of(sink.id, "out", monitor=True)
    if not mic_port or not monitor:
        raise UserError(f"microphone {mic.name[:60]!r} has no capture port: is it in use or broken?")
    signal = estimator.sweep(0.5, rate)
    lead = int(0.1 * rate)
    play = np.zeros(lead + len(signal) + int(((len(present) - 1) * stagger_s + TAIL_S) * rate))
    play[lead : lead + len(signal)] = signal
    recording = await asyncio.to_thread(_play_and_record, be.env, sink.name, mic_port[0].id, monitor[0].id, play)
    reference, heard = recording[:, 1], recording[:, 0]
    if not np.any(np.abs(reference) > 1e-3):
        raise UserError("the calibration sweep never reached the group sink: is the sink suspended or broken?")
    if not np.any(np.abs(heard) > 1e-6):
        raise UserError(f"microphone {mic.name[:60]!r} recorded silence: is it muted or unplugged?")
    step = round(stagger_s * rate)
    windows = [(i * step, (i + 1) * step) for i in range(len(present))]
    return estimator.measure(reference, heard, windows, rate), step


def _play_and_record(env: Mapping[str, str], sink: str, mic_port: int, monitor_port: int, frames: Any) -> Any:
    stereo = np.stack([frames, frames], axis=1)
    with Recorder(env, [mic_port, monitor_port]) as rec:
        time.sleep(0.1)
        Player(env, sink, stereo).start().wait(timeout=30.0)
        time.sleep(0.1)
        return rec.stop()
