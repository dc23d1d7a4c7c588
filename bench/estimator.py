"""Offline estimator benchmark: fractional delays, reflections, noise at a given SNR; prints JSON.

Each trial: a sweep through a path of a direct sound at a random fractional delay (80-300 ms) plus 2-4
reflections (1-25 ms later, 0.2-0.8 of the direct's gain, random polarity), white noise at the given SNR
(noise power against the received signal's power over the sweep), estimated with pwgroup's estimator.
Each SNR is run with every sweep length given: 0.5 s is what calibration plays first, 2 s what it plays
when a speaker was not heard.
Usage: python bench/estimator.py [--trials 200] [--snr 20 -10 -25] [--seed 1] [--durations 0.5 2.0]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from pwgroup.calibrate import estimator as est

RATE = est.RATE


def trial(rng: np.random.Generator, snr_db: float, x: np.ndarray) -> tuple[float, float, est.Arrival]:
    delay = rng.uniform(80, 300) * RATE / 1000
    length = len(x) + int(0.4 * RATE)
    gain = rng.uniform(0.05, 1.0)
    y = gain * est.fractional_delay(x, delay, length)
    for _ in range(rng.integers(2, 5)):
        extra = rng.uniform(1, 25) * RATE / 1000
        y += gain * rng.uniform(0.2, 0.8) * rng.choice([-1, 1]) * est.fractional_delay(x, delay + extra, length)
    active = y[int(delay) : int(delay) + len(x)]
    noise_rms = math.sqrt(float(np.mean(active**2))) * 10 ** (-snr_db / 20)
    y = y + rng.normal(0.0, noise_rms, length)
    ref = np.zeros(length)
    ref[: len(x)] = x
    arrival = est.measure(ref, y, [(0, length - len(x) // 2)])[0]
    return delay, arrival.samples - delay, arrival


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--snr", type=float, nargs="+", default=[20.0, -10.0, -25.0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--durations", type=float, nargs="+", default=[0.5, 2.0])
    args = ap.parse_args()
    report = {"trials": args.trials, "band_hz": [est.F_LOW, est.F_HIGH], "results": []}
    for duration, snr in ((d, s) for s in args.snr for d in args.durations):
        x = est.sweep(duration)
        rng = np.random.default_rng(args.seed)
        errors, missed, t0 = [], 0, time.perf_counter()
        for _ in range(args.trials):
            _, err, arrival = trial(rng, snr, x)
            if not arrival.ok:
                missed += 1
                continue
            errors.append(abs(err) * 1000 / RATE)
        e = np.array(errors) if errors else None
        report["results"].append(
            {
                "snr_db": snr,
                "sweep_s": duration,
                "worst_ms": None if e is None else round(float(e.max()), 5),
                "mean_ms": None if e is None else round(float(e.mean()), 5),
                "p99_ms": None if e is None else round(float(np.percentile(e, 99)), 5),
                "not_heard": missed,
                "seconds_per_estimate": round((time.perf_counter() - t0) / args.trials, 4),
            }
        )
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
