"""Benchmark: end-to-end calibration in the virtual room, measured on the room's truth channels.

For each seed: a fresh private room with N speakers at seeded hidden latencies (80-300 ms), reflections and
white noise at the microphone; one group over all of them; `pwgroup calibrate`; then a noise burst through the
group sink, recorded on every speaker's truth channel, gives the real inter-speaker spread. Prints JSON.
Usage: python bench/calibrate.py [--speakers 4 8] [--methods sweep fast] [--seeds 10] [--noise -12]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pwgroup.graph.capture import Player, Recorder
from pwgroup.sim.measure import lag
from pwgroup.sim.room import RATE, Room

GROUP = "bench"


def cli(room: Room, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pwgroup", *args], env=room.env, capture_output=True, text=True)


def truth_spread(room: Room, n: int) -> int:
    graph = room.dump()
    sink = graph.node_by_name(f"pwgroup.{GROUP}")
    assert sink is not None
    monitor = graph.ports_of(sink.id, "out", monitor=True)[0].id
    sig = np.zeros(int(RATE * 0.9))
    sig[RATE // 10 : RATE // 10 + 2400] = np.random.default_rng(0).standard_normal(2400) * 0.3
    with Recorder(room.env, [monitor, *room.emit_ports()[:n]]) as rec:
        time.sleep(0.1)
        Player(room.env, f"pwgroup.{GROUP}", np.stack([sig, sig], axis=1)).start().wait()
        time.sleep(0.5)
        y = rec.stop()
    lags = [lag(y[:, 0], y[:, ch]) for ch in range(1, n + 1)]
    return max(lags) - min(lags)


def series(method: str, speakers: int, seeds: int, noise: float, tmp: str) -> dict[str, Any]:
    """One method at one group size over `seeds` fresh rooms."""
    runs = []
    for seed in range(1, seeds + 1):
        room = Room(Path(tmp) / f"{method}-{speakers}-{seed}")
        try:
            room.up(speakers=speakers, seed=seed, noise_db=noise, reflections=True)
            addrs = [s.address for s in room.speakers]
            made = cli(room, "group", "create", GROUP, *addrs)
            if made.returncode != 0:
                raise SystemExit(made.stderr)
            t0 = time.monotonic()
            res = cli(room, "calibrate", GROUP, "--json", "--method", method)
            wall = time.monotonic() - t0
            if res.returncode != 0:
                runs.append({"seed": seed, "error": res.stderr.strip()})
                continue
            report = json.loads(res.stdout)
            spread = truth_spread(room, speakers)
            runs.append(
                {
                    "seed": seed,
                    "hidden_ms": [round(s.latency_ms, 2) for s in room.speakers],
                    "statuses": [m["status"] for m in report["members"]],
                    "verified_spread_ms": report["worst_residual_ms"],
                    "truth_spread_samples": spread,
                    "truth_spread_ms": round(spread * 1000 / RATE, 4),
                    "wall_s": round(wall, 2),
                }
            )
        finally:
            room.down()
        print(json.dumps({"method": method, "speakers": speakers, **runs[-1]}), file=sys.stderr)
    ok = [r for r in runs if "error" not in r]
    return {
        "method": method,
        "speakers": speakers,
        "seeds": seeds,
        "worst_truth_spread_ms": max((r["truth_spread_ms"] for r in ok), default=None),
        "worst_verified_spread_ms": max((r["verified_spread_ms"] for r in ok), default=None),
        "all_heard": all(all(s == "ok" for s in r["statuses"]) for r in ok),
        "errors": len(runs) - len(ok),
        "wall_s_median": float(np.median([r["wall_s"] for r in ok])) if ok else None,
        "wall_s_max": max((r["wall_s"] for r in ok), default=None),
        "runs": runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--speakers", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--methods", nargs="+", choices=("sweep", "fast"), default=["sweep", "fast"])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--noise", type=float, default=-12.0, help="dBFS at the mic; speakers arrive near -12 dBFS")
    args = ap.parse_args()
    # A killed benchmark still takes its rooms down (the finally above): SIGTERM becomes SystemExit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="pwgroup-bench-") as tmp:
        results = [series(m, n, args.seeds, args.noise, tmp) for m in args.methods for n in args.speakers]
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "noise_dbfs": args.noise,
        "wall_s_note": "from starting `pwgroup calibrate` to its exit, Python start-up and both passes included",
        "results": results,
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
