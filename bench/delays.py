"""Benchmark: do per-member delays land exactly, and how long does a delay change take to be heard?

Runs a private virtual room (never the user's session), measures end to end on the room's truth channels and
prints one JSON object. Usage: python bench/delays.py [--trials 20] [--quanta 256,512,1024,2048]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from pwgroup.graph.capture import Player, Recorder
from pwgroup.graph.pipewire import PipeWireBackend
from pwgroup.model import GroupSpec, MemberSpec
from pwgroup.sim.measure import decompose, lag
from pwgroup.sim.room import RATE, Room
from pwgroup.supervisor import converge

GROUP = "bench"
HIDDEN_MS = [100.0, 150.0, 200.0]


def monitor_port(room: Room) -> int:
    graph = room.dump()
    sink = graph.node_by_name(f"pwgroup.{GROUP}")
    assert sink is not None
    return graph.ports_of(sink.id, "out", monitor=True)[0].id


async def apply(room: Room, delays: list[float]) -> None:
    be = await PipeWireBackend(room.env).open()
    try:
        spec = GroupSpec(
            GROUP, "bench", tuple(MemberSpec(s.address, d) for s, d in zip(room.speakers, delays, strict=False))
        )
        await converge(be, spec, GROUP)
    finally:
        await be.close()


def arrivals(room: Room, n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    sig = np.zeros(int(RATE * 0.9))
    sig[RATE // 10 : RATE // 10 + 2400] = rng.standard_normal(2400) * 0.3
    with Recorder(room.env, [monitor_port(room), *room.emit_ports()[:n]]) as rec:
        time.sleep(0.1)
        Player(room.env, f"pwgroup.{GROUP}", np.stack([sig, sig], axis=1)).start().wait()
        time.sleep(0.35)
        y = rec.stop()
    return [lag(y[:, 0], y[:, ch]) for ch in range(1, n + 1)]


def change_latency(room: Room, old_ms: float, new_ms: float) -> dict[str, float]:
    """Play noise, run `pwgroup delay set`, find the sample where the new delay takes over in the recording."""
    spk = room.speakers[0]
    x = np.random.default_rng(3).standard_normal(int(RATE * 2.5)) * 0.2
    marks: dict[str, float] = {}

    def command() -> None:
        marks["start"] = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "pwgroup", "delay", "set", GROUP, spk.address, str(new_ms)],
            env=room.env,
            check=True,
            capture_output=True,
        )
        marks["end"] = time.monotonic()

    with Recorder(room.env, [monitor_port(room), room.emit_ports()[0]]) as rec:
        player = Player(room.env, f"pwgroup.{GROUP}", np.stack([x, x], axis=1)).start()
        time.sleep(0.6)
        worker = threading.Thread(target=command)
        worker.start()
        worker.join(30)
        time.sleep(0.4)
        stop_at = time.monotonic()
        y = rec.stop()
        player.stop()
    d_old = round(old_ms * RATE / 1000) + spk.latency_samples
    d_new = round(new_ms * RATE / 1000) + spk.latency_samples
    rows = decompose(y[:, 0], y[:, 1], (d_old, d_new), window=48)
    switched = rows[rows[:, 2] > 0.5 * spk.gain]
    if not len(switched):
        return {"command_ms": (marks["end"] - marks["start"]) * 1000, "audible_ms": float("nan")}
    # The last recorded sample was captured about when recording stopped (within a quantum).
    switch_time = stop_at - (len(y) - switched[0, 0]) / RATE
    return {
        "command_ms": (marks["end"] - marks["start"]) * 1000,
        "audible_ms": (switch_time - marks["start"]) * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--quanta", default="256,512,1024,2048")
    ap.add_argument("--changes", type=int, default=10)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed benchmark still takes its room down
    quanta = [int(q) for q in args.quanta.split(",")]
    root = Path(tempfile.mkdtemp(prefix="pwgroup-bench-"))
    room = Room(root)
    rng = random.Random(42)
    result: dict[str, object] = {
        "benchmark": "delays",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "pipewire": subprocess.run(["pipewire", "--version"], capture_output=True, text=True).stdout.split()[-1],
        "rate": RATE,
    }
    try:
        room.up(speakers=len(HIDDEN_MS), latencies_ms=HIDDEN_MS)
        per_quantum = {}
        all_errors: list[int] = []
        for q in quanta:
            room.set_quantum(q)
            time.sleep(0.2)
            errors: list[int] = []
            for trial in range(args.trials):
                delays = [
                    rng.choice([0.0, 12.5, 37.5, 100.0, 120.0, 250.0]) + rng.randrange(48) / 48 for _ in HIDDEN_MS
                ]
                asyncio.run(apply(room, delays))
                got = arrivals(room, len(HIDDEN_MS), seed=trial)
                for g, spk, d in zip(got, room.speakers, delays, strict=False):
                    errors.append(g - (round(d * RATE / 1000) + spk.latency_samples))
            all_errors += errors
            per_quantum[str(q)] = {
                "trials": args.trials,
                "members": len(HIDDEN_MS),
                "max_abs_error_samples": max(abs(e) for e in errors),
                "exact_fraction": sum(e == 0 for e in errors) / len(errors),
            }
        result["delay_error_by_quantum"] = per_quantum
        result["max_abs_error_samples"] = max(abs(e) for e in all_errors)

        room.set_quantum(1024)
        asyncio.run(apply(room, [20.0, 0.0, 0.0]))
        changes = []
        old = 20.0
        for i in range(args.changes):
            new = 90.0 if i % 2 == 0 else 20.0
            changes.append(change_latency(room, old, new))
            old = new
        audible = [c["audible_ms"] for c in changes]
        result["delay_change"] = {
            "quantum": 1024,
            "changes": len(changes),
            "note": "audible_ms: from issuing `pwgroup delay set` to the new delay on the truth channel (±1 quantum); "
            "it includes the new delay itself (20 or 90 ms) while the idle line fills",
            "command_ms_median": statistics.median(c["command_ms"] for c in changes),
            "audible_ms_median": statistics.median(audible),
            "audible_ms_max": max(audible),
        }
    finally:
        room.down()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
