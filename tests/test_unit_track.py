"""Tracking on synthetic mixes: 8 members in a simulated room, told apart by their calibrated responses while they
all play the same programme; and the controller's decisions from successive estimates."""

from __future__ import annotations

import functools
import math
from dataclasses import replace

import numpy as np
import pytest

from pwgroup.calibrate import estimator as ce
from pwgroup.sim import acoustic, programme
from pwgroup.track import control, estimate
from pwgroup.track.estimate import Estimate, MemberEstimate

RATE = 48000
MS = RATE / 1000


@functools.cache
def _room(seed: int, reverberant: bool = True) -> tuple[tuple[acoustic.Speaker, ...], tuple[estimate.Template, ...],
                                                         tuple[float, ...]]:  # fmt: skip
    """8 speakers (three colours, random places) and their templates as calibration measures them."""
    rng = np.random.default_rng(seed)
    speakers = tuple(
        acoustic.make_speaker(rng, acoustic.COLOURS[i % 3], 150 + 11 * i, reverberant=reverberant) for i in range(8)
    )
    probe = ce.probe(1.0, seed=seed)
    templates, arrivals = [], []
    for i, spk in enumerate(speakers):
        ref, rec = acoustic.calibration_recording(spk, probe, 1e-3, seed=i)
        a = ce.measure(ref, rec, [(0, len(rec) - len(probe) // 2)])[0]
        templates.append(estimate.template_from_recording(ref, rec, a.samples))
        arrivals.append(a.samples)
    return speakers, tuple(templates), tuple(arrivals)


def _mix(
    seed: int,
    kind: programme.Kind,
    moves: dict[int, float],
    seconds: float = 5.0,
    noise_db: float = 10.0,
    reverberant: bool = True,
    programme_gain: float = 1.0,
) -> tuple[Estimate, list[float]]:
    """Members aligned by calibration, some moved by `moves` (ms); the estimate and each member's true arrival."""
    speakers, templates, arrivals = _room(seed, reverberant)
    delays = [max(arrivals) - a for a in arrivals]
    x = programme.generate(kind, seconds, RATE, seed) * programme_gain
    live = [acoustic.Speaker(s.response, s.latency + moves.get(i, 0.0) * MS) for i, s in enumerate(speakers)]
    level = acoustic.music_level(programme.generate(kind, seconds, RATE, seed), live, delays, seconds)
    scene = acoustic.Scene(x, live, delays, level * 10 ** (-noise_db / 20), RATE, seed)
    blocks = [scene.render() for _ in range(len(x) // scene.block)]
    xs = np.concatenate([b[0] for b in blocks])
    ys = np.concatenate([b[1] for b in blocks])
    predicted = [d + a for d, a in zip(delays, arrivals, strict=True)]
    truth = [p + moves.get(i, 0.0) * MS for i, p in enumerate(predicted)]
    return estimate.window_estimate(xs, ys, list(templates), predicted), truth


@pytest.mark.parametrize(("seed", "who", "move_ms"), [(1, 4, 37.0), (2, 0, -12.5), (3, 7, 60.0)])
def test_the_moved_member_is_named_among_8_with_sign_and_size(seed: int, who: int, move_ms: float) -> None:
    est, truth = _mix(seed, "pop", {who: move_ms})
    assert est.status == "ok"
    assert [i for i, m in enumerate(est.members) if m.moved] == [who]
    for i, m in enumerate(est.members):
        assert m.status == "ok", (i, m)
        assert abs(m.arrival - truth[i]) < 1.0, (i, m.arrival - truth[i])  # within a sample (0.02 ms)
    moved = est.members[who].arrival - (truth[who] - move_ms * MS)
    assert moved == pytest.approx(move_ms * MS, abs=1.0)


def test_small_moves_of_several_members_are_each_measured() -> None:
    moves = {1: 0.1, 5: -0.08, 6: 0.05}  # drift-sized: 2-5 samples
    est, truth = _mix(4, "speech", moves)
    assert est.status == "ok"
    errors = [m.arrival - t for m, t in zip(est.members, truth, strict=True)]
    assert max(abs(e) for e in errors) < 1.0, errors
    assert all(m.status == "ok" and not m.moved for m in est.members)


@pytest.mark.parametrize("seed", [4, 5])
def test_sparse_tonal_programme_says_it_cannot_tell_the_members_apart_and_changes_nothing(seed: int) -> None:
    # A few held notes carry ~2 % of the band: estimates there were biased by samples or whole cycles while
    # claiming sub-sample sigma, and in the bench two such windows agreed on a 3.5 ms "jump" that never happened.
    est, _ = _mix(seed, "tonal", {2: 37.0}, seconds=6.0)
    assert est.status == "sparse" and "too sparse" in est.reason
    assert not any(m.seen for m in est.members)
    ctl = control.Controller([0.0] * 8, [1000.0] * 8)
    assert ctl.update(est, 6.0) == [] and ctl.seeing == "sparse"


def _long_tonal(seed: int, moves: dict[int, float]) -> tuple[Estimate, list[float]]:
    """17 s of sparse tonal programme, some members moved by `moves` (ms), measured as the tracker does once the
    short window says "sparse": one long window of every frame, each member expected where calibration put it."""
    speakers, templates, arrivals = _room(seed)
    delays = [max(arrivals) - a for a in arrivals]
    x = programme.generate("tonal", 17.0, RATE, seed)
    live = [acoustic.Speaker(s.response, s.latency + moves.get(i, 0.0) * MS) for i, s in enumerate(speakers)]
    level = acoustic.music_level(x, live, delays, 10.0)
    scene = acoustic.Scene(x, live, delays, level * 10 ** (-10 / 20), RATE, seed)
    listener = estimate.Listener(RATE)
    for _ in range(len(x) // scene.block):
        listener.feed(*scene.render())
    predicted = [d + a for d, a in zip(delays, arrivals, strict=True)]
    bank = estimate.bank(list(templates))
    base = estimate.base_for(predicted, bank)
    assert estimate.estimate(listener.spectra(base), bank, predicted).status == "sparse"
    spec = listener.spectra(base, listener.long_window, keep_sparse=True)
    truth = [p + moves.get(i, 0.0) * MS for i, p in enumerate(predicted)]
    return estimate.estimate(spec, bank, predicted, sparse=True), truth


def test_a_long_window_over_sparse_programme_finds_the_member_that_moved_far() -> None:
    # A few held notes over 4 s cannot tell 8 members apart; over 16 s enough notes pass to find the one member
    # that no longer fits where it was. The others are not measured there (their fit is biased by samples).
    est, truth = _long_tonal(4, {5: 37.0})
    assert est.status == "ok" and est.sparse
    assert [i for i, m in enumerate(est.members) if m.seen] == [5]
    assert est.members[5].moved and abs(est.members[5].arrival - truth[5]) < 2.0
    assert all(m.status != "ok" and (m.ambiguous or m.status == "not-heard") for m in est.members[:5] + est.members[6:])


@pytest.mark.parametrize(("seed", "who", "move_ms"), [(5, 1, 37.0), (7, 0, -60.0), (9, 3, 60.0)])
def test_a_long_window_over_sparse_programme_names_no_wrong_member_or_place(
    seed: int, who: int, move_ms: float
) -> None:
    # Not every moved member stands out of 16 s of held notes (these do not: bench/tracking.py counts how often);
    # what is said must still be right: no other member moved, no place that is not the member's.
    est, truth = _long_tonal(seed, {who: move_ms})
    for i, m in enumerate(est.members):
        assert not m.seen or (i == who and abs(m.arrival - truth[i]) < 2.0), (i, m)


def test_a_long_window_over_sparse_programme_with_nothing_moved_moves_nothing() -> None:
    est, _ = _long_tonal(6, {})
    assert est.sparse and not any(m.seen or m.moved for m in est.members)
    ctl = control.Controller([0.0] * 8, [1000.0] * 8)
    assert ctl.update(est, 17.0) == []


def test_a_reverberant_room_gives_sub_sample_arrivals() -> None:
    # What tells members apart is each one's own reflections; in a dry room, speakers of one model differ only in
    # level and cannot be told apart this way (a known limit, in bench/tracking.py's docstring).
    est, truth = _mix(6, "pop", {3: 5.0}, reverberant=True)
    errors = [abs(m.arrival - t) for m, t in zip(est.members, truth, strict=True) if m.status == "ok"]
    assert len(errors) == 8 and max(errors) < 1.0, errors


def test_silence_is_said_and_changes_nothing() -> None:
    est, _ = _mix(1, "pop", {4: 37.0}, programme_gain=0.0)
    assert est.status == "silent" and "silent" in est.reason
    ctl = control.Controller([0.0] * 8, [1000.0] * 8)
    assert ctl.update(est, 5.0) == [] and ctl.seeing == "silent"


def test_noise_louder_than_the_music_is_said_and_changes_nothing() -> None:
    est, _ = _mix(2, "pop", {4: 37.0}, noise_db=-6.0)
    assert est.status == "noisy" and "louder than the music" in est.reason
    assert all(not m.seen for m in est.members)
    ctl = control.Controller([0.0] * 8, [1000.0] * 8)
    assert ctl.update(est, 5.0) == []


def test_a_member_not_playing_is_not_heard() -> None:
    speakers, templates, arrivals = _room(1)
    delays = [max(arrivals) - a for a in arrivals]
    x = programme.generate("pop", 5.0, RATE, 1)
    live = [acoustic.Speaker(s.response, s.latency, present=i != 6) for i, s in enumerate(speakers)]
    scene = acoustic.Scene(x, live, delays, 0.01, RATE, 1)
    blocks = [scene.render() for _ in range(len(x) // scene.block)]
    xs, ys = np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])
    est = estimate.window_estimate(xs, ys, list(templates), [d + a for d, a in zip(delays, arrivals, strict=True)])
    assert est.members[6].status == "not-heard"
    assert sum(m.status == "ok" for m in est.members) == 7


# --- the controller, on estimates made up to the sample


def _est(at_s: float, arrivals: list[float], sigma: float = 0.2, status: str = "ok") -> Estimate:
    a, b = round((at_s - 2.0) * RATE), round((at_s + 2.0) * RATE)
    members = tuple(MemberEstimate("ok", x, sigma, 1.0, 30.0) for x in arrivals)
    return Estimate(status, (a + b) / 2, members, 10.0, -20.0, "", 20, (a, b))  # type: ignore[arg-type]


def _run(latency: list[float], seconds: int, noise: float, drift: list[float] | None = None,
         jump: tuple[int, float, float] | None = None, seed: int = 0,
         headroom: float = 100.0) -> tuple[control.Controller, list[float]]:  # fmt: skip
    """Simulated members whose latencies drift (samples/s) or jump (member, at s, samples); each second an
    estimate of every arrival with Gaussian error `noise`; corrections applied. Returns the true spreads."""
    rng = np.random.default_rng(seed)
    lat = list(latency)
    delays = [max(lat) - v + headroom for v in lat]
    ctl = control.Controller(delays, [d + v for d, v in zip(delays, lat, strict=True)])
    spreads = []
    for t in range(1, seconds + 1):
        for i in range(len(lat)):
            lat[i] += (drift or [0.0] * len(lat))[i]
        if jump and t == jump[1]:
            lat[jump[0]] += jump[2]
        mid = t - 2.0 + 0.0
        # each member's arrival at the window's middle (its latency then, its delay then)
        arrivals = [
            ctl._mean_delay(i, mid - 2, mid + 2) + lat[i] - 2 * (drift or [0.0] * 8)[i] for i in range(len(lat))
        ]
        arrivals = [a + rng.normal(0, noise) for a in arrivals]
        for c in ctl.update(_est(mid, arrivals, max(noise, 0.05)), float(t)):
            assert c.delay >= 0
        arr = [ctl.delay(i) + lat[i] for i in range(len(lat))]
        spreads.append(max(arr) - min(arr))
    return ctl, spreads


def test_ten_minutes_of_steady_playback_make_no_correction() -> None:
    ctl, spreads = _run([7000.0 + 300 * i for i in range(8)], 600, noise=0.3)
    assert ctl.corrections == []
    assert max(spreads) == 0.0


def test_a_37_ms_jump_is_corrected_at_once_after_two_windows_agree() -> None:
    ctl, spreads = _run([7000.0 + 300 * i for i in range(8)], 30, noise=0.3, jump=(3, 10, 37 * MS), headroom=2000.0)
    jumps = [c for c in ctl.corrections if c.reason == "jump"]
    assert [c.member for c in jumps] == [3] and jumps[0].change == pytest.approx(-37 * MS, abs=2.0)
    assert jumps[0].at <= 16  # the window sees it about 2 s later; a second window confirms
    assert max(spreads[20:]) < 0.1 * MS


def test_the_slowest_member_jumping_moves_the_others_instead() -> None:
    lat = [7000.0 + 300 * i for i in range(8)]
    ctl, spreads = _run(lat, 30, noise=0.3, jump=(7, 10, 37 * MS))  # member 7 has no delay left to give
    assert {c.member for c in ctl.corrections} == set(range(8))
    assert ctl.delay(7) == 0.0  # it gives what delay it had, the others wait for it
    assert max(spreads[20:]) < 0.1 * MS


def test_drift_is_followed_in_small_steps() -> None:
    drift = [4.8, -4.8, 0.0, 0.0, 4.8, 0.0, -4.8, 0.0]  # +/-100 ppm at 48 kHz, samples per second
    ctl, spreads = _run([7000.0 + 300 * i for i in range(8)], 300, noise=0.3, drift=drift)
    assert ctl.corrections and all(c.reason == "drift" for c in ctl.corrections)
    assert max(abs(c.change) for c in ctl.corrections) <= 0.25 * MS
    assert max(spreads[60:]) < 0.25 * MS, max(spreads[60:])


def test_one_odd_window_changes_nothing() -> None:
    lat = [7000.0 + 300 * i for i in range(8)]
    delays = [max(lat) - v for v in lat]
    ctl = control.Controller(delays, [d + v for d, v in zip(delays, lat, strict=True)])
    good = [d + v for d, v in zip(delays, lat, strict=True)]
    odd = list(good)
    odd[2] += 37 * MS
    assert ctl.update(_est(3.0, good), 5.0) == []
    assert ctl.update(_est(4.0, odd), 6.0) == []
    assert ctl.update(_est(5.0, good), 7.0) == []
    assert ctl.corrections == [] and not math.isnan(ctl.members[2].latency)


def test_a_returning_member_is_found_again_before_it_is_moved() -> None:
    lat = [7000.0 + 300 * i for i in range(8)]
    delays = [max(lat) - v + 5000 for v in lat]
    ctl = control.Controller(delays, [d + v for d, v in zip(delays, lat, strict=True)])
    ctl.away(4)
    assert ctl.predicted(0, 4)[4] is None
    ctl.returned(4)
    back = [d + v for d, v in zip(delays, lat, strict=True)]
    back[4] += 60 * MS
    assert ctl.update(_est(3.0, back), 5.0) == []  # one window: not yet believed
    made = ctl.update(_est(4.0, back), 6.0)
    assert [(c.member, round(c.change)) for c in made] == [(4, round(-60 * MS))]


# --- after a blind passage (bench seed 3: a sparse tonal track hid four members drifting at +/-100 ppm for 40 s)


def test_after_a_blind_passage_members_that_drifted_are_found_where_they_are_not_where_they_were() -> None:
    # The window that failed in the bench: the end of a tonal track, silence, the start of speech. Members 0 and 6
    # had drifted 4.5 ms either way unseen; with every member arriving at one time, the others' sound fitted their
    # templates at the stale place and they were reported "ok" there (5 ms wrong, sigma 0.5 samples), then
    # believed. The controller now says how unsure its predictions are after 40 s blind, and the estimator looks
    # that wide.
    speakers, templates, arrivals = _room(1)
    delays = [max(arrivals) - a for a in arrivals]
    x = programme.playlist(43.5, RATE, 3)[0][round(38.5 * RATE) :]
    moves = {0: 4.6, 6: -4.5, 3: -0.2}
    drift = {0: 100.0, 6: -100.0, 3: -100.0, 4: 100.0}
    live = [acoustic.Speaker(s.response, s.latency + moves.get(i, 0.0) * MS, drift.get(i, 0.0))
            for i, s in enumerate(speakers)]  # fmt: skip
    level = acoustic.music_level(x, speakers, delays, 5.0)
    scene = acoustic.Scene(x, live, delays, level * 10 ** (-10 / 20), RATE, 1)
    blocks = [scene.render() for _ in range(len(x) // scene.block)]
    listener = estimate.Listener(RATE)
    listener.feed(np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks]))
    predicted = [d + a for d, a in zip(delays, arrivals, strict=True)]
    ctl = control.Controller(delays, predicted, start=0.0)
    for t in range(1, 41):  # 40 s blind: nothing changes, and the predictions grow unsure
        assert ctl.update(_est(float(t), predicted, status="noisy"), float(t)) == []
    bank = estimate.bank(list(templates))
    spec = listener.spectra(estimate.base_for(predicted, bank))
    at = 40.0 + spec.middle / RATE
    assert min(ctl.spread(at)) > 4.5 * MS / 4  # 150 ppm a priori over 40 s: the drift is inside 4 sd
    est = estimate.estimate(spec, bank, ctl.predicted(at - 2, at + 2, at), None, ctl.spread(at))
    truth = [p + moves.get(i, 0.0) * MS + drift.get(i, 0.0) * 1e-6 * spec.middle for i, p in enumerate(predicted)]
    assert est.status == "ok"
    for i, m in enumerate(est.members):
        if m.status in ("ok", "uncertain"):
            assert abs(m.arrival - truth[i]) < 10, (i, m.arrival - truth[i], m.sigma)  # 0.2 ms (drift in window)
    assert est.members[0].seen and est.members[6].seen


def test_after_a_blind_passage_a_member_is_re_found_by_two_windows_and_its_drift_learned() -> None:
    lat = [7000.0 + 300 * i for i in range(8)]
    delays = [max(lat) - v + 2000 for v in lat]
    arrival0 = [d + v for d, v in zip(delays, lat, strict=True)]
    ctl = control.Controller(delays, arrival0)
    rate = [4.8 if i == 2 else -4.8 if i == 5 else 0.0 for i in range(8)]  # +/-100 ppm, samples per second
    for t in range(1, 41):
        assert ctl.update(_est(float(t), arrival0, status="noisy"), float(t) + 2) == []
    assert ctl.corrections == []
    wide = ctl.spread(41.0)
    assert wide[2] > 4 * MS / 4 and wide[5] > 4 * MS / 4
    # Seeing again. One odd window during re-acquisition moves nothing: it must be confirmed.
    odd = [ctl.delay(i) + lat[i] + rate[i] * 41 for i in range(8)]
    odd[2] += 600.0
    assert ctl.update(_est(41.0, odd, sigma=0.3), 43.0) == []
    for t in range(42, 80):
        now = [ctl._mean_delay(i, t - 2, t + 2) + lat[i] + rate[i] * t for i in range(8)]
        for c in ctl.update(_est(float(t), now, sigma=0.3), float(t) + 2):
            assert c.reason != "jump" or abs(c.change) > 3 * MS  # the 4 ms each drifted, corrected once seen
    arr = [ctl.delay(i) + lat[i] + rate[i] * 81 for i in range(8)]  # the last update was made at 81 s
    assert max(arr) - min(arr) < 0.25 * MS
    view = ctl.view(81.0)
    assert view[2].drift_ppm == pytest.approx(100, abs=10) and view[5].drift_ppm == pytest.approx(-100, abs=10)


def _blind_run(drift: list[float], seeing_s: int, blind_s: int, status: str) -> tuple[control.Controller, list[float]]:
    """Members drifting (samples/s), seen for `seeing_s` seconds, then `blind_s` seconds of windows that say
    `status`; corrections applied. Each window measured as the bench's are, the members' known moves taken out
    (arrivals at the window's centre), with error 0.15 samples (the bench's median for drifting members).
    Returns the true spreads while blind."""
    rng = np.random.default_rng(5)
    lat = [7000.0 + 300 * i for i in range(8)]
    delays = [max(lat) - v + 2000 for v in lat]
    ctl = control.Controller(delays, [d + v for d, v in zip(delays, lat, strict=True)])
    spreads = []
    for t in range(1, seeing_s + blind_s + 1):
        lat = [v + r for v, r in zip(lat, drift, strict=True)]
        mid = t - 2.0
        arrivals = [ctl.delay_at(i, mid) + lat[i] - 2 * drift[i] + rng.normal(0, 0.15) for i in range(8)]
        est = replace(_est(mid, arrivals, 0.15, "ok" if t <= seeing_s else status), compensated=True)
        ctl.update(est, float(t))
        if t > seeing_s:
            arr = [ctl.delay(i) + lat[i] for i in range(8)]
            spreads.append(max(arr) - min(arr))
    return ctl, spreads


def test_known_drift_is_followed_through_sparse_programme_in_small_steps() -> None:
    # Bench drift runs: four members at +/-100 ppm, a 40-70 s tonal track the estimator cannot split; frozen
    # there, the group was 12-15 ms apart when it could see again. Their drift, measured before, is followed.
    drift = [4.8, -4.8, 0.0, 0.0, 4.8, 0.0, -4.8, 0.0]
    ctl, spreads = _blind_run(drift, 60, 60, "sparse")
    blind = [c for c in ctl.corrections if c.at > 60]
    assert blind and all(c.reason == "drift" and abs(c.change) <= 0.25 * MS for c in blind)
    assert {c.member for c in blind} <= {0, 1, 4, 6}  # the steady members' delays are left alone
    assert max(spreads) < 0.25 * MS, max(spreads)


def test_steady_members_get_no_correction_through_sparse_programme() -> None:
    ctl, spreads = _blind_run([0.0] * 8, 60, 120, "sparse")
    assert ctl.corrections == [] and max(spreads) == 0.0


def test_noise_louder_than_the_music_changes_nothing_even_with_drift_known() -> None:
    drift = [4.8, -4.8, 0.0, 0.0, 4.8, 0.0, -4.8, 0.0]
    ctl, spreads = _blind_run(drift, 60, 20, "noisy")
    assert [c for c in ctl.corrections if c.at > 60] == []
    assert spreads[-1] > spreads[0] + 0.1 * MS  # so the group drifts apart, said, until the music is heard


def test_a_window_straddling_music_and_a_sparse_passage_measures_the_music_only() -> None:
    # In the bench such windows (a pop track's end, then held notes) measured a blend several samples off while
    # claiming a fraction of one, and steady playback got corrections it did not need.
    speakers, templates, arrivals = _room(2)
    delays = [max(arrivals) - a for a in arrivals]
    x = np.concatenate([programme.generate("pop", 2.5, RATE, 2), programme.generate("tonal", 2.5, RATE, 2)])
    moves = {3: 0.05}
    live = [acoustic.Speaker(s.response, s.latency + moves.get(i, 0.0) * MS) for i, s in enumerate(speakers)]
    scene = acoustic.Scene(x, live, delays, acoustic.music_level(x, speakers, delays, 5.0) * 10 ** (-1 / 2), RATE, 2)
    blocks = [scene.render() for _ in range(len(x) // scene.block)]
    listener = estimate.Listener(RATE)
    listener.feed(np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks]))
    predicted = [d + a for d, a in zip(delays, arrivals, strict=True)]
    bank = estimate.bank(list(templates))
    spec = listener.spectra(estimate.base_for(predicted, bank))
    assert spec.dropped_sparse >= 3 and spec.frames >= estimate.MIN_FRAMES
    est = estimate.estimate(spec, bank, predicted)
    truth = [p + moves.get(i, 0.0) * MS for i, p in enumerate(predicted)]
    assert est.status == "ok"
    for i, m in enumerate(est.members):
        assert m.seen and abs(m.arrival - truth[i]) < 0.5, (i, m.arrival - truth[i], m.sigma)


def test_the_first_second_says_it_has_no_window_yet() -> None:
    speakers, templates, arrivals = _room(1)
    delays = [max(arrivals) - a for a in arrivals]
    x = programme.generate("pop", 1.1, RATE, 1)
    scene = acoustic.Scene(x, speakers, delays, 0.001, RATE, 1)
    blocks = [scene.render() for _ in range(len(x) // scene.block)]
    listener = estimate.Listener(RATE)
    listener.feed(np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks]))
    predicted = [d + a for d, a in zip(delays, arrivals, strict=True)]
    bank = estimate.bank(list(templates))
    est = estimate.estimate(listener.spectra(estimate.base_for(predicted, bank)), bank, predicted)
    assert est.status == "silent" and est.reason == "no window yet"
