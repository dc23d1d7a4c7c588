"""Offline tracking benchmark: 8 speakers in a reverberant room, noise at the microphone 10 dB under the music,
the estimator and controller in the loop (each correction applied to the simulated delay lines); prints JSON.

Scenarios, each over `--seeds` seeds (programme kinds in turn: pop, sparse tonal, speech; the long ones play a
playlist of all three with silence between tracks):
- jump: a member's latency steps +37 ms with no graph event; time until every member is within 1 ms and within
  0.1 ms of the others (and stays there).
- drift: four members drift at +/-100 ppm (the rest +/-5 ppm) for `--minutes`; the widest inter-member spread
  after the first minute, while music sounds and overall.
- return: a member leaves and comes back 60 ms later than it left (the graph says it left and returned); time
  from its return until aligned.
- steady: nothing changes for `--minutes`; corrections made and spread.
Truth is the simulation's own: each member's delay line plus latency against what calibration aligned.
Noise at the microphone is set 10 dB under the median level of the programme's tracks at the microphone.
A naive baseline runs on the same recordings: the strongest peak of the microphone/group correlation, which
cannot say which member it sees (a single-speaker tracker).
sigma_check: every estimate's error against the truth (the simulated arrivals over the window, weighted by the
programme's energy) over the sigma it claimed, per programme kind and status, split by whether the member's
arrival held still within the window; estimate.VARIANCE_FACTOR is set from the still windows' robust scale.
Sparse programme (a few held notes: under 10 % of the band's bins carry it) cannot tell the members apart in a
4 s window: the window says "sparse" and a second, long one (16 s, every frame) is looked at, where only a member
that moved far (or returned) is searched for; the members in place are not measured there (their fit is biased
by samples), and known drift is followed by prediction. So a jump or a return during such a passage is found
after about 10-20 s of it when the moved member's response stands out of the held notes, and only once fuller
music plays when it does not (the figures say how often). A group whose first music is sparse has no drift known
yet and drifts apart until fuller music plays. Members are told apart by their own responses at the microphone
(reflections, colour, level); in a dry room, speakers of one model differ only in level and a moved one can be
taken for another; the room here is reverberant, as living rooms are.
The tracker runs with one BLAS thread (set below, before numpy loads; the daemon must do the same): with
OpenBLAS's default threads its CPU was 3x higher on this 2-core machine. tracker_memory_mb: audio kept and frame
spectra cached for one group (the daemon's RSS adds the interpreter and numpy).
Usage: python bench/tracking.py [--seeds 10] [--minutes 10] [--scenarios jump drift return steady] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

# One BLAS thread, as the daemon must run the tracker: the fit's products are 8 x 8000, and OpenBLAS's second
# thread on them costs 3x the CPU (measured: 7.9 % of a core with the default threads, 2.1 % with one).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402  (after the thread count: OpenBLAS reads it when it loads)

from pwgroup.calibrate import estimator as ce  # noqa: E402
from pwgroup.sim import acoustic, programme  # noqa: E402
from pwgroup.track import control, estimate  # noqa: E402

RATE = 48000
MEMBERS = 8
NOISE_DB = 10.0
HOP_BLOCKS = 6  # an estimate every 6 render blocks (1.02 s)
KINDS: tuple[programme.Kind, ...] = ("pop", "tonal", "speech")


@dataclass
class Run:
    scene: acoustic.Scene
    ctl: control.Controller
    bank: estimate.Bank
    listener: estimate.Listener
    start: list[float]  # each member's arrival when calibrated (truth)
    times: list[float] = field(default_factory=list)
    offsets: list[list[float]] = field(default_factory=list)  # truth: arrival minus calibrated, per member (ms)
    sounding: list[bool] = field(default_factory=list)
    naive: list[tuple[float, float]] = field(default_factory=list)  # (t, strongest peak lag, samples)
    statuses: dict[str, int] = field(default_factory=dict)
    cpu_s: float = 0.0
    cal: list[float] = field(default_factory=list)  # each member's arrival as calibration measured it (samples)
    marks: list[tuple[float, str]] = field(default_factory=list)  # (seconds, programme kind)
    truth: list[tuple[float, list[float]]] = field(default_factory=list)  # per block: (x energy, arrivals mid-block)
    errors: list[tuple[str, str, float, float]] = field(default_factory=list)  # (kind, status, error, sigma)
    long_sparse: bool = True  # sparse windows get a second, long look (estimate(sparse=True))
    held_bytes: int = 0  # the most the tracker held: audio kept, frame spectra cached, templates


def calibrated(seed: int, kind_or_playlist: str, seconds: float) -> Run:
    rng = np.random.default_rng([seed, 11])
    speakers = [
        acoustic.make_speaker(rng, acoustic.COLOURS[i % 3], float(rng.uniform(120, 260))) for i in range(MEMBERS)
    ]
    probe = ce.probe(1.0, seed=seed)
    templates, arrivals = [], []
    for i, spk in enumerate(speakers):  # calibration: each member alone, a probe, the room's own noise
        ref, rec = acoustic.calibration_recording(spk, probe, 1e-3, seed=seed * 100 + i)
        a = ce.measure(ref, rec, [(0, len(rec) - len(probe) // 2)])[0]
        templates.append(estimate.template_from_recording(ref, rec, a.samples))
        arrivals.append(a.samples)
    delays = [max(arrivals) - a for a in arrivals]
    if kind_or_playlist == "playlist":
        x, marks = programme.playlist(seconds, RATE, seed)
    else:
        x = programme.generate(kind_or_playlist, seconds, RATE, seed)  # type: ignore[arg-type]
        marks = [(0.0, kind_or_playlist)]  # type: ignore[list-item]
    level = reference_level(x, marks, speakers, delays, seconds)
    scene = acoustic.Scene(x, speakers, delays, level * 10 ** (-NOISE_DB / 20), RATE, seed)
    ctl = control.Controller(delays, [d + a for d, a in zip(delays, arrivals, strict=True)], RATE)
    bank = estimate.bank(templates)
    start = [scene.arrival(i) for i in range(MEMBERS)]
    cal = [d + a for d, a in zip(delays, arrivals, strict=True)]
    return Run(scene, ctl, bank, estimate.Listener(RATE), start, cal=cal, marks=list(marks))


def reference_level(
    x: np.ndarray,
    marks: list[tuple[float, programme.Kind]],
    speakers: list[acoustic.Speaker],
    delays: list[float],
    seconds: float,
) -> float:
    """The music's level at the microphone that noise is set 10 dB under: the median over the programme's tracks
    (10 s from each, tracks of different kinds reach the microphone several dB apart; one track's level alone
    would put the noise 10 dB under that track and nearer the others)."""
    ends = [a for a, _ in marks[1:]] + [seconds]
    levels = [
        acoustic.music_level(x, speakers, delays, min(10.0, end - a), start=a)
        for (a, kind), end in zip(marks, ends, strict=True)
        if kind != "silence" and end - a > 2.0
    ]
    return float(np.median(levels)) if levels else 0.0


def naive_lag(x: np.ndarray, y: np.ndarray, max_lag: int) -> float:
    """A single-speaker tracker: the strongest peak of the (partly whitened) correlation."""
    ir = ce.impulse_response(x, y)
    env = ce.envelope(ir[:max_lag])
    return float(np.argmax(env))


def step(run: Run, blocks: int, naive_every: int = 1, events: dict[int, Any] | None = None) -> None:
    """Render `blocks` blocks; estimate and correct every HOP_BLOCKS."""
    scene, ctl = run.scene, run.ctl
    ms = RATE / 1000
    hops = 0
    for b in range(blocks):
        if events and b in events:
            events[b](run)
        mid = [
            run.cal[i] + scene.arrival(i) - run.start[i] + scene.speakers[i].drift_ppm * 1e-6 * scene.block / 2
            for i in range(MEMBERS)
        ]
        x, y = scene.render()
        run.truth.append((float(np.sum(x.astype(np.float64) ** 2)), mid))
        t0 = time.process_time()
        run.listener.feed(x, y)
        run.cpu_s += time.process_time() - t0
        now = run.listener.end / RATE
        run.times.append(now)
        run.offsets.append([(scene.arrival(i) - run.start[i]) / ms for i in range(MEMBERS)])
        run.sounding.append(bool(np.any(np.abs(x) > 1e-4)))
        if (b + 1) % HOP_BLOCKS:
            continue
        hops += 1
        t0 = time.process_time()
        lst = run.listener
        window = lst.window
        guess = ctl.predicted((lst.end - window) / RATE, lst.end / RATE)
        base = estimate.base_for(guess, run.bank)
        spec = lst.spectra(base)
        at = spec.middle / RATE
        predicted = ctl.predicted(spec.start / RATE, spec.stop / RATE, at)
        motion = ctl.motion([f / RATE for f in spec.frame_at], at)
        est = estimate.estimate(spec, run.bank, predicted, ctl.gains(), ctl.spread(at), motion)
        if est.status == "sparse" and run.long_sparse:
            # Held notes: a long window, where a member that moved far (or returned) can be found.
            spec = lst.spectra(base, lst.long_window, keep_sparse=True)
            at = spec.middle / RATE
            predicted = ctl.predicted(spec.start / RATE, spec.stop / RATE, at)
            motion = ctl.motion([f / RATE for f in spec.frame_at], at)
            long = estimate.estimate(spec, run.bank, predicted, ctl.gains(), ctl.spread(at), motion, sparse=True)
            if long.seen:
                est = long
        for c in ctl.update(est, now):
            scene.delays[c.member] = c.delay
        run.cpu_s += time.process_time() - t0
        record_errors(run, est, spec)  # the bench's own bookkeeping, outside the tracker's CPU
        held = lst._buf.nbytes + run.bank.spectra.nbytes
        held += sum(v.nbytes for v in lst._fx.values()) + sum(v.nbytes for v in lst._fy.values())
        run.held_bytes = max(run.held_bytes, held)
        key = est.status if est.status != "ok" else "ok:" + ",".join(sorted({m.status for m in est.members}))
        run.statuses[key] = run.statuses.get(key, 0) + 1
        if naive_every and hops % naive_every == 0:
            xs = lst.x[-window:]
            ys = lst.y[-window:]
            if np.any(xs):
                run.naive.append((now, naive_lag(xs, ys, int(0.6 * RATE))))


def record_errors(run: Run, est: estimate.Estimate, spec: estimate.Spectra) -> None:
    """Each member's estimated arrival against the truth over the window (the simulation's arrivals, weighted by
    the programme's energy block by block, as the fit weighs them), with the sigma it claimed."""
    if not est.seen:
        return
    blocks = run.truth[spec.start // acoustic.BLOCK : -(-spec.stop // acoustic.BLOCK)]
    energy = np.array([e for e, _ in blocks])
    if not len(blocks) or energy.sum() <= 0:
        return
    arrivals = np.array([a for _, a in blocks])
    truth = (energy[:, None] * arrivals).sum(axis=0) / energy.sum()
    if est.compensated:  # arrivals at the window's centre: the simulated ones there, between block middles
        mids = (np.arange(len(run.truth)) + 0.5) * acoustic.BLOCK
        table = np.array([a for _, a in run.truth])
        truth = np.array([np.interp(spec.middle, mids, table[:, i]) for i in range(MEMBERS)])
    moving = np.ptp(arrivals, axis=0) > 2.0  # a correction or drift of more than 2 samples within the window
    t = spec.middle / RATE
    kind = next((k for at, k in reversed(run.marks) if at <= t), "?")
    for i, m in enumerate(est.members):
        if m.status in ("ok", "uncertain") and math.isfinite(m.arrival):
            label = kind + ("~moving" if moving[i] else "")
            run.errors.append((label, m.status, float(m.arrival - truth[i]), float(m.sigma)))


def sigma_check(errors: list[tuple[str, str, float, float]]) -> dict[str, Any]:
    """How honest the reported sigma is, per programme kind and status: the robust scale of error/sigma (1.0:
    honest; the variance is off by its square), the share beyond 3 sigma, and the errors themselves (samples)."""
    out: dict[str, Any] = {}
    for kind in sorted({k for k, _, _, _ in errors}):
        for status in ("ok", "uncertain"):
            rows = [(e, s) for k, st, e, s in errors if k == kind and st == status and math.isfinite(s) and s > 0]
            if len(rows) < 5:
                continue
            err = np.array([e for e, _ in rows])
            z = err / np.array([s for _, s in rows])
            out[f"{kind}:{status}"] = {
                "n": len(rows),
                "z_scale": round(float(1.4826 * np.median(np.abs(z))), 3),
                "beyond_3_sigma": round(float(np.mean(np.abs(z) > 3)), 4),
                "abs_error_median": round(float(np.median(np.abs(err))), 3),
                "abs_error_p99": round(float(np.percentile(np.abs(err), 99)), 2),
            }
    return out


def spread(offsets: list[float], present: list[bool]) -> float:
    vals = [o for o, p in zip(offsets, present, strict=True) if p]
    return max(vals) - min(vals) if vals else 0.0


def settle_time(run: Run, since: float, within_ms: float, present: list[bool] | None = None) -> float | None:
    """Seconds after `since` from which the spread stays within `within_ms` to the end (None: never)."""
    present = present or [True] * MEMBERS
    last_bad = since
    for t, o in zip(run.times, run.offsets, strict=True):
        if t < since:
            continue
        if spread(o, present) > within_ms:
            last_bad = t
    end = run.times[-1]
    return None if last_bad >= end - 1.0 else round(last_bad - since, 2)


def blocks_for(seconds: float) -> int:
    return math.ceil(seconds * RATE / acoustic.BLOCK)


def jump(seed: int) -> dict[str, Any]:
    kind = KINDS[seed % len(KINDS)]
    at_s, after_s = 20.0, 75.0
    run = calibrated(seed, kind, at_s + after_s + 1)
    who = int(np.random.default_rng([seed, 3]).integers(MEMBERS))
    jump_block = blocks_for(at_s)
    t_jump = jump_block * acoustic.BLOCK / RATE

    def do_jump(r: Run) -> None:
        r.scene.speakers[who].latency += 37 * RATE / 1000

    step(run, blocks_for(at_s + after_s), 1, {jump_block: do_jump})
    return {
        "seed": seed,
        "kind": kind,
        "member": who,
        "to_1ms_s": settle_time(run, t_jump, 1.0),
        "to_0.1ms_s": settle_time(run, t_jump, 0.1),
        "corrections": len(run.ctl.corrections),
        "naive": naive_summary(run, t_jump, who),
        "cpu": run.cpu_s,
        "held_mb": round(run.held_bytes / 2**20, 1),
        "errors": run.errors,
        "audio_s": run.times[-1],
        "statuses": run.statuses,
    }


def naive_summary(run: Run, t_change: float, who: int) -> dict[str, Any]:
    """What the strongest correlation peak said about the moved member after the change."""
    before = [lag for t, lag in run.naive if t < t_change]
    after = [lag for t, lag in run.naive if t > t_change + estimate.WINDOW_S]
    if not before or not after:
        return {}
    ref = float(np.median(before))
    moved = [abs(lag - ref) / (RATE / 1000) for lag in after]
    return {
        "peak_moved_ms_median": round(float(np.median(moved)), 3),
        "saw_the_member_move_share": round(float(np.mean([min(abs(m - 37.0), abs(m - 60.0)) < 1.0 for m in moved])), 3),
    }


def returning(seed: int) -> dict[str, Any]:
    kind = KINDS[(seed + 1) % len(KINDS)]
    leave_s, back_s, after_s = 15.0, 25.0, 40.0
    run = calibrated(seed, kind, back_s + after_s + 1)
    who = int(np.random.default_rng([seed, 4]).integers(MEMBERS))
    b_leave, b_back = blocks_for(leave_s), blocks_for(back_s)
    t_back = b_back * acoustic.BLOCK / RATE

    def leave(r: Run) -> None:
        r.scene.speakers[who].present = False
        r.ctl.away(who)

    def back(r: Run) -> None:
        r.scene.speakers[who].present = True
        r.scene.speakers[who].latency += 60 * RATE / 1000
        r.ctl.returned(who)

    step(run, blocks_for(back_s + after_s), 1, {b_leave: leave, b_back: back})
    return {
        "seed": seed,
        "kind": kind,
        "member": who,
        "to_1ms_s": settle_time(run, t_back, 1.0),
        "to_0.1ms_s": settle_time(run, t_back, 0.1),
        "naive": naive_summary(run, t_back, who),
        "cpu": run.cpu_s,
        "held_mb": round(run.held_bytes / 2**20, 1),
        "errors": run.errors,
        "audio_s": run.times[-1],
        "statuses": run.statuses,
    }


def drift(seed: int, minutes: float) -> dict[str, Any]:
    seconds = minutes * 60
    run = calibrated(seed, "playlist", seconds + 1)
    rng = np.random.default_rng([seed, 5])
    rates = list(rng.uniform(-5, 5, MEMBERS))
    fast = rng.choice(MEMBERS, 4, replace=False)
    for k, i in enumerate(fast):
        rates[int(i)] = 100.0 if k % 2 == 0 else -100.0
    for i, r in enumerate(rates):
        run.scene.speakers[i].drift_ppm = float(r)
    step(run, blocks_for(seconds), 10)
    after = [(o, s) for t, o, s in zip(run.times, run.offsets, run.sounding, strict=True) if t >= 60.0]
    spreads = [spread(o, [True] * MEMBERS) for o, _ in after]
    kinds = [next((k for at, k in reversed(run.marks) if at <= t), "?") for t in run.times if t >= 60.0]
    by_kind = {
        k: round(max(sp for sp, kk in zip(spreads, kinds, strict=True) if kk == k), 4) for k in sorted(set(kinds))
    }
    sounding = [sp for sp, (_, s) in zip(spreads, after, strict=True) if s]
    uncorrected = max(abs(r) for r in rates) * 2e-6 * seconds * 1000
    largest = max((abs(c.change) for c in run.ctl.corrections if c.reason == "drift"), default=0.0)
    return {
        "seed": seed,
        "drift_ppm": [round(float(r), 1) for r in rates],
        "max_spread_ms_after_1min_sounding": round(max(sounding), 4) if sounding else None,
        "max_spread_ms_after_1min_all": round(max(spreads), 4),
        "p99_spread_ms_after_1min": round(float(np.percentile(spreads, 99)), 4),
        "share_of_time_above_0.25ms_after_1min": round(float(np.mean(np.array(spreads) > 0.25)), 4),
        "max_spread_ms_after_1min_by_programme": by_kind,
        "corrections": len(run.ctl.corrections),
        "largest_drift_step_ms": round(largest / (RATE / 1000), 4),
        "uncorrected_spread_ms": round(uncorrected, 1),
        "cpu": run.cpu_s,
        "held_mb": round(run.held_bytes / 2**20, 1),
        "errors": run.errors,
        "audio_s": run.times[-1],
        "statuses": run.statuses,
    }


def steady(seed: int, minutes: float) -> dict[str, Any]:
    seconds = minutes * 60
    run = calibrated(seed + 500, "playlist", seconds + 1)
    step(run, blocks_for(seconds), 10)
    spreads = [spread(o, [True] * MEMBERS) for o in run.offsets]
    return {
        "seed": seed,
        "corrections": len(run.ctl.corrections),
        "max_spread_ms": round(max(spreads), 4),
        "cpu": run.cpu_s,
        "held_mb": round(run.held_bytes / 2**20, 1),
        "errors": run.errors,
        "audio_s": run.times[-1],
        "statuses": run.statuses,
    }


def summary(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    vals = [r[key] for r in rows]
    got = [v for v in vals if v is not None]
    return {
        "median": round(float(np.median(got)), 3) if got else None,
        "worst": (None if len(got) < len(vals) else round(float(max(got)), 3)) if got else None,
        "never": len(vals) - len(got),
    }


def run_task(task: tuple[str, int, float]) -> dict[str, Any]:
    name, s, minutes = task
    if name == "jump":
        return jump(s)
    if name == "return":
        return returning(s)
    if name == "drift":
        return drift(s, minutes)
    return steady(s, minutes)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--scenarios", nargs="+", default=["jump", "drift", "return", "steady"])
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel (each its own process; CPU is per run)")
    args = ap.parse_args()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    report: dict[str, Any] = {
        "members": MEMBERS,
        "noise_db_under_music": NOISE_DB,
        "seeds": args.seeds,
        "minutes": args.minutes,
        "window_s": estimate.WINDOW_S,
        "hop_s": round(HOP_BLOCKS * acoustic.BLOCK / RATE, 3),
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "added_to_speakers": {
            "signal": "none: members are told apart by their calibrated responses; nothing is played",
            "worst_0.25s_window_db_under_music": None,
        },
    }
    cpu, audio, held = 0.0, 0.0, 0.0
    errors: list[tuple[str, str, float, float]] = []
    t_start = time.time()
    tasks = [(name, s, args.minutes) for name in args.scenarios for s in seeds]
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        done = pool.imap(run_task, tasks)
        results = {}
        for (name, s, _), row in zip(tasks, done, strict=True):
            results[(name, s)] = row
            shown = {k: v for k, v in row.items() if k not in ("errors", "cpu", "held_mb")}
            print(f"{name} seed {s}: {json.dumps(shown)}", file=sys.stderr, flush=True)
    for name in args.scenarios:
        rows = []
        for s in seeds:
            row = results[(name, s)]
            cpu += row.pop("cpu")
            held = max(held, row.pop("held_mb"))
            errors += row.pop("errors")
            audio += row["audio_s"]
            rows.append(row)
        out: dict[str, Any] = {"runs": rows}
        if name in ("jump", "return"):
            out["to_1ms_s"] = summary(rows, "to_1ms_s")
            out["to_0.1ms_s"] = summary(rows, "to_0.1ms_s")
        if name == "drift":
            out["max_spread_ms_after_1min_sounding"] = max(
                (r["max_spread_ms_after_1min_sounding"] for r in rows if r["max_spread_ms_after_1min_sounding"]),
                default=None,
            )
            out["max_spread_ms_after_1min_all"] = max(r["max_spread_ms_after_1min_all"] for r in rows)
        if name == "steady":
            out["corrections"] = sum(r["corrections"] for r in rows)
            out["max_spread_ms"] = max(r["max_spread_ms"] for r in rows)
        report[name] = out
    report["sigma_check"] = {
        "variance_factor": estimate.VARIANCE_FACTOR,
        "by_kind_and_status": sigma_check(errors),
        "still_ok": sigma_check([("still", st, e, sd) for k, st, e, sd in errors if "~" not in k]).get("still:ok"),
        "moving_ok": sigma_check([("moving", st, e, sd) for k, st, e, sd in errors if "~" in k]).get("moving:ok"),
    }
    report["cpu_percent_of_one_core"] = round(100 * cpu / audio, 2) if audio else None
    report["tracker_memory_mb"] = held  # audio kept and frame spectra cached, per group (the daemon's RSS adds Python)
    report["wall_s"] = round(time.time() - t_start, 1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
