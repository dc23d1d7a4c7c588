"""Benchmark: do per-member delays land exactly, and how long does a delay change take to be heard?

Runs private virtual rooms on PipeWire and on PulseAudio (never the user's session), measures end to end on the
rooms' truth channels and prints one JSON object with both side by side.
Usage: python bench/delays.py [--trials 20] [--quanta 256,512,1024,2048] [--backends pipewire,pulse]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
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
from pwgroup.graph.pulse import CONVERGE_S, PulseBackend
from pwgroup.model import GroupSpec, MemberSpec
from pwgroup.sim.measure import decompose, lag
from pwgroup.sim.pulseroom import PulseRoom
from pwgroup.sim.room import RATE, Room
from pwgroup.supervisor.executor import converge

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


def bench_pipewire(room: Room, rng: random.Random, quanta: list[int], trials: int, n_changes: int) -> dict[str, object]:
    result: dict[str, object] = {
        "pipewire": subprocess.run(["pipewire", "--version"], capture_output=True, text=True).stdout.split()[-1],
    }
    try:
        room.up(speakers=len(HIDDEN_MS), latencies_ms=HIDDEN_MS)
        per_quantum = {}
        all_errors: list[int] = []
        for q in quanta:
            room.set_quantum(q)
            time.sleep(0.2)
            errors: list[int] = []
            for trial in range(trials):
                delays = [
                    rng.choice([0.0, 12.5, 37.5, 100.0, 120.0, 250.0]) + rng.randrange(48) / 48 for _ in HIDDEN_MS
                ]
                asyncio.run(apply(room, delays))
                got = arrivals(room, len(HIDDEN_MS), seed=trial)
                for g, spk, d in zip(got, room.speakers, delays, strict=False):
                    errors.append(g - (round(d * RATE / 1000) + spk.latency_samples))
            all_errors += errors
            per_quantum[str(q)] = {
                "trials": trials,
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
        for i in range(n_changes):
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
    return result


# ---------------------------------------------------------------- PulseAudio


async def apply_pulse(room: PulseRoom, delays: list[float]) -> None:
    be = await PulseBackend(room.env).open()
    try:
        spec = GroupSpec(
            GROUP, "bench", tuple(MemberSpec(s.address, d) for s, d in zip(room.speakers, delays, strict=False))
        )
        await converge(be, spec, GROUP)
    finally:
        await be.close()


def arrivals_pulse(room: PulseRoom, n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    sig = np.zeros(int(RATE * 0.9))
    sig[RATE // 10 : RATE // 10 + 2400] = rng.standard_normal(2400) * 0.3
    with room.truth(GROUP, n) as rec:
        time.sleep(0.1)
        room.play(GROUP, np.stack([sig, sig], axis=1)).start().wait()
        time.sleep(0.35 + room.lead_s)
        y = rec.stop()
    return [lag(y[:, 0], y[:, ch]) for ch in range(1, n + 1)]


def change_pulse(room: PulseRoom, old_ms: float, new_ms: float) -> dict[str, float]:
    """As change_latency, on PulseAudio, read by lags and levels rather than a whole-sample decomposition."""
    spk = room.speakers[0]
    seconds = 4.0 + CONVERGE_S
    x = np.random.default_rng(3).standard_normal(int(RATE * seconds)) * 0.2
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

    with room.truth(GROUP, 1) as rec:
        player = room.play(GROUP, np.stack([x, x], axis=1)).start()
        time.sleep(0.6)
        worker = threading.Thread(target=command)
        worker.start()
        worker.join(60)
        player.wait()
        time.sleep(0.4)
        stop_at = time.monotonic()
        y = rec.stop()
    # The swap lands about CONVERGE_S + 1 s into the noise: the first and last fifths are clear of it.
    fifth = len(y) // 5
    d_old, d_new = lag(y[:fifth, 0], y[:fifth, 1]), lag(y[-fifth:, 0], y[-fifth:, 1])
    # Rate control keeps every loopback's latency wandering by a few samples, so a decomposition on whole-sample
    # lags does not hold here. Instead: the dominant lag of each 100 ms stretch (the switch is the first stretch
    # after which every one sits at the new delay), and the level of each 10 ms window against the channel's
    # median (over 1.25: two delays at once, doubled audio).
    issued = int(len(y) - (stop_at - marks["start"]) * RATE)
    playing = np.flatnonzero(np.abs(y[:, 0]) > 1e-4)
    seg = RATE // 10
    starts = list(range(max(issued, 0), playing[-1] - seg, seg))
    reach = 2 * max(d_old, d_new)

    def stretch_lag(i: int) -> int:
        # What the member plays in [i, i + seg) came from the reference up to `reach` samples before.
        a = max(i - reach, 0)
        mine = np.zeros(i + seg - a)
        mine[i - a :] = y[i : i + seg, 1]
        return lag(y[a : i + seg, 0], mine)

    near_new = [abs(stretch_lag(i) - d_new) <= 48 for i in starts]
    pending = [k for k, ok in enumerate(near_new) if not ok]
    if pending and pending[-1] + 1 >= len(starts):  # not on before the noise ended: reported, not hidden
        switch = float("nan")
    else:
        first = starts[pending[-1] + 1] if pending else starts[0]
        switch = (stop_at - (len(y) - first) / RATE - marks["start"]) * 1000
    win = 480
    lo, hi = playing[0] + max(d_old, d_new) + 2 * win, playing[-1] + min(d_old, d_new) - 2 * win
    levels = np.array([np.sqrt(np.mean(y[i : i + win, 1] ** 2)) for i in range(lo, hi - win, win)])
    levels /= float(np.median(levels))
    return {
        "command_ms": (marks["end"] - marks["start"]) * 1000,
        "audible_ms": switch,
        "doubled_ms": float(np.sum(levels > 1.25)) * 10.0,
        "gap_ms": float(np.sum(levels < 0.7)) * 10.0,
        "landed_old": d_old - (round(old_ms * RATE / 1000) + spk.latency_samples),
        "landed_new": d_new - (round(new_ms * RATE / 1000) + spk.latency_samples),
    }


BURST_PERIOD = RATE // 10  # bursts() puts one burst in each
BURST_REACH = RATE // 25  # how far (±40 ms) from its target a member's copy of a burst is looked for


def bursts(seconds: float, seed: int) -> np.ndarray:
    """A 20 ms noise burst every 100 ms, on both channels."""
    period = BURST_PERIOD
    sig = np.zeros(int(RATE * seconds))
    rng = np.random.default_rng(seed)
    for start in range(0, len(sig) - period, period):
        sig[start : start + 960] = rng.standard_normal(960) * 0.3
    return np.stack([sig, sig], axis=1)


def burst_window(y: np.ndarray, ch: int, onset: int, want: int) -> np.ndarray:
    """Channel `ch` around where the burst starting at `onset` should land, `want` samples later."""
    a = onset + want - BURST_REACH
    return y[a : a + BURST_PERIOD + 2 * BURST_REACH, ch]


def burst_error(y: np.ndarray, ch: int, onset: int, want: int) -> int:
    """Samples the member on `ch` played the burst at `onset` off `want` (reference: channel 0)."""
    return lag(y[onset : onset + BURST_PERIOD, 0], burst_window(y, ch, onset, want)) - BURST_REACH


def start_from_idle(room: PulseRoom, delays: list[float], seconds: float = 8.0) -> dict[str, float]:
    """The first stream into a group sink that had none (a user's first song): a burst every 100 ms from its
    start, each located on every member, to see how far apart members get and how soon they agree again."""
    period = BURST_PERIOD
    sig = bursts(seconds, seed=5)
    with room.truth(GROUP, len(delays), hold=False) as rec:
        room.play(GROUP, sig).start().wait()
        time.sleep(0.4 + room.lead_s)
        y = rec.stop()
    ref = y[:, 0]
    first = int(np.flatnonzero(np.abs(ref) > 1e-4)[0])
    want = [round(d * RATE / 1000) + spk.latency_samples for d, spk in zip(delays, room.speakers, strict=False)]
    spreads = []
    for onset in range(first, first + len(sig) - 2 * period, period):
        errs = [burst_error(y, ch, onset, w) for ch, w in enumerate(want, start=1)]
        spreads.append(max(errs) - min(errs))
    late = [k for k, s in enumerate(spreads) if s > 1]
    return {
        "max_member_spread_samples": max(spreads),
        "within_1_sample_after_ms": (late[-1] + 1) * 100.0 if late else 0.0,
        "bursts": len(spreads),
    }


def return_pulse(room: PulseRoom, delays: list[float], seconds: float = 16.0) -> dict[str, float]:
    """A member's speaker goes and comes back while the group plays bursts; pwgroup relinks it as a daemon's pass
    would. Where is the returning member when it is first heard, and after?"""
    asyncio.run(apply_pulse(room, delays))
    spk, ch = room.speakers[1], 2
    want = round(delays[1] * RATE / 1000) + spk.latency_samples
    marks: dict[str, float] = {}
    with room.truth(GROUP, len(delays)) as rec:
        player = room.play(GROUP, bursts(seconds, seed=9)).start()
        time.sleep(1.0)
        room.disconnect(spk.address)
        time.sleep(0.5)
        room.connect(spk.address)
        marks["back"] = time.monotonic()
        asyncio.run(apply_pulse(room, delays))
        marks["linked"] = time.monotonic()
        player.wait()
        time.sleep(0.4 + room.lead_s)
        stop_at = time.monotonic()
        y = rec.stop()
    ref = y[:, 0]
    period = BURST_PERIOD
    first = int(np.flatnonzero(np.abs(ref) > 1e-4)[0])
    back = len(y) - int((stop_at - marks["back"]) * RATE)
    heard: list[tuple[int, int]] = []  # (onset, error) of each burst the member played after it came back
    for onset in range(max(first, back - want), first + int(seconds * RATE) - 2 * period, period):
        seg = burst_window(y, ch, onset, want)
        if seg.size and np.sqrt(np.mean(seg**2)) > 0.01:
            heard.append((onset, burst_error(y, ch, onset, want)))
    if not heard:
        return {"relink_ms": (marks["linked"] - marks["back"]) * 1000, "heard_after_ms": float("nan")}
    onset0 = heard[0][0]
    return {
        "relink_ms": (marks["linked"] - marks["back"]) * 1000,
        "heard_after_ms": (onset0 + want - back) / RATE * 1000,
        "max_abs_error_when_heard_samples": max(abs(e) for _, e in heard),
        "bursts_heard": len(heard),
    }


def bench_pulse(trials: int, changes: int) -> dict[str, object]:
    rng = random.Random(42)
    room = PulseRoom(Path(tempfile.mkdtemp(prefix="pwgroup-bench-pulse-")))
    version = subprocess.run(["pulseaudio", "--version"], capture_output=True, text=True).stdout.split()[-1]
    try:
        room.up(speakers=len(HIDDEN_MS), latencies_ms=HIDDEN_MS)
        errors: list[int] = []
        spreads: list[int] = []
        for trial in range(trials):
            # PulseAudio's loopback takes whole milliseconds: the bench asks for what it can be given.
            delays = [float(rng.choice([0, 12, 37, 100, 120, 250]) + rng.randrange(10)) for _ in HIDDEN_MS]
            asyncio.run(apply_pulse(room, delays))
            got = arrivals_pulse(room, len(HIDDEN_MS), seed=trial)
            errs = [
                g - (round(d * RATE / 1000) + spk.latency_samples)
                for g, spk, d in zip(got, room.speakers, delays, strict=False)
            ]
            errors += errs
            spreads.append(max(errs) - min(errs))
        idle = []
        for _ in range(3):
            asyncio.run(apply_pulse(room, [20.0, 0.0, 0.0]))
            idle.append(start_from_idle(room, [20.0, 0.0, 0.0]))
        returns = [return_pulse(room, [20.0, 0.0, 0.0]) for _ in range(3)]
        moves = []
        old = 20.0
        for i in range(changes):
            new = 90.0 if i % 2 == 0 else 20.0
            moves.append(change_pulse(room, old, new))
            old = new
    finally:
        room.down()
    shutil.rmtree(room.root, ignore_errors=True)  # kept, logs and all, only when the run failed
    return {
        "pulseaudio": version,
        "trials": trials,
        "members": len(HIDDEN_MS),
        "note": "errors against the reference, which reaches the recording through a loopback of its own; "
        "spread: latest minus earliest member in one trial, the figure that decides whether speakers agree",
        "max_abs_error_samples": max(abs(e) for e in errors),
        "mean_abs_error_samples": statistics.mean(abs(e) for e in errors),
        "within_1_sample_fraction": sum(abs(e) <= 1 for e in errors) / len(errors),
        "max_member_spread_samples": max(spreads),
        "median_member_spread_samples": statistics.median(spreads),
        "first_stream_into_idle_group": {
            "runs": len(idle),
            "note": "a burst every 100 ms from the first stream into a group sink that had none: every loopback "
            "reading its monitor is thrown off at once and rate control brings them back",
            "max_member_spread_samples": max(r["max_member_spread_samples"] for r in idle),
            "within_1_sample_after_ms_max": max(r["within_1_sample_after_ms"] for r in idle),
        },
        "speaker_returns": {
            "runs": len(returns),
            "note": "a member's speaker leaves and returns while bursts play; its line joins muted until it has "
            "settled: when it is first heard (from its return) and how far off its delay any burst it played was",
            "relink_ms_max": max(r["relink_ms"] for r in returns),
            "never_heard": sum("bursts_heard" not in r for r in returns),
            "heard_after_ms_max": max((r["heard_after_ms"] for r in returns if "bursts_heard" in r), default=None),
            "max_abs_error_when_heard_samples": max(
                (r["max_abs_error_when_heard_samples"] for r in returns if "bursts_heard" in r), default=None
            ),
        },
        "delay_change": {
            "changes": len(moves),
            "note": "audible_ms includes the new delay and the muted settling of the new loopback "
            f"({CONVERGE_S:g} s) before the swap",
            "command_ms_median": statistics.median(m["command_ms"] for m in moves),
            "not_switched_in_time": sum(m["audible_ms"] != m["audible_ms"] for m in moves),
            "audible_ms_median": statistics.median(
                m["audible_ms"] for m in moves if m["audible_ms"] == m["audible_ms"]
            ),
            "audible_ms_max": max(m["audible_ms"] for m in moves if m["audible_ms"] == m["audible_ms"]),
            "max_abs_landing_error_samples": max(max(abs(m["landed_old"]), abs(m["landed_new"])) for m in moves),
            "doubled_ms_max": max(m["doubled_ms"] for m in moves),
            "doubled_ms_median": statistics.median(m["doubled_ms"] for m in moves),
            "gap_ms_max": max(m["gap_ms"] for m in moves),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--quanta", default="256,512,1024,2048")
    ap.add_argument("--changes", type=int, default=10)
    ap.add_argument("--backends", default="pipewire,pulse")
    ap.add_argument("--pulse-trials", type=int, default=10, help="each ~12 s: a change settles 5 s, the room 5 s")
    args = ap.parse_args()
    backends = args.backends.split(",")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed benchmark still takes its room down
    quanta = [int(q) for q in args.quanta.split(",")]
    rng = random.Random(42)
    result: dict[str, object] = {
        "benchmark": "delays",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "rate": RATE,
    }
    if "pipewire" in backends:
        room = Room(Path(tempfile.mkdtemp(prefix="pwgroup-bench-")))
        result["pipewire"] = bench_pipewire(room, rng, quanta, args.trials, args.changes)
        shutil.rmtree(room.root, ignore_errors=True)
    if "pulse" in backends:
        result["pulse"] = bench_pulse(args.pulse_trials, args.changes)
    print(json.dumps(result, indent=2, default=float))  # numpy integers among the figures


if __name__ == "__main__":
    main()
