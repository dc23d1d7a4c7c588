"""The latency estimator on synthetic recordings: fractional delays, reflections, noise, silence, clipping."""

from __future__ import annotations

import numpy as np
import pytest

from pwgroup.calibrate import estimator as est

RATE = est.RATE
X = est.sweep(0.5)
LENGTH = len(X) + RATE // 2


def _reference() -> np.ndarray:
    ref = np.zeros(LENGTH)
    ref[: len(X)] = X
    return ref


def _path(delay: float, gain: float = 0.5, reflections: tuple[tuple[float, float], ...] = ()) -> np.ndarray:
    y = gain * est.fractional_delay(X, delay, LENGTH)
    for extra_ms, rel in reflections:
        y += gain * rel * est.fractional_delay(X, delay + extra_ms * RATE / 1000, LENGTH)
    return y


@pytest.mark.parametrize("delay", [4800.0, 7211.25, 13333.5, 9999.875])
def test_fractional_delays_to_a_hundredth_of_a_sample(delay: float) -> None:
    arrival = est.measure(_reference(), _path(delay), [(0, LENGTH)])[0]
    assert arrival.ok
    assert abs(arrival.samples - delay) < 0.01
    assert arrival.level_db == pytest.approx(20 * np.log10(0.5), abs=0.5)  # coarse peak: informational


def test_first_arrival_beats_a_louder_reflection() -> None:
    # The direct sound is quieter than a reflection 3 ms later (a speaker facing the wall).
    y = _path(6000.3, gain=0.2, reflections=((3.0, 2.5), (11.0, 1.2)))
    arrival = est.measure(_reference(), y, [(0, LENGTH)])[0]
    assert arrival.ok and abs(arrival.samples - 6000.3) < 0.05


def test_noise_at_minus_10_db_keeps_the_estimate_within_a_sample() -> None:
    rng = np.random.default_rng(7)
    y = _path(8765.4, reflections=((2.0, 0.6), (9.0, 0.4)))
    active = y[8765 : 8765 + len(X)]
    y = y + rng.normal(0, np.sqrt(np.mean(active**2)) * 10 ** (10 / 20), LENGTH)
    arrival = est.measure(_reference(), y, [(0, LENGTH)])[0]
    assert arrival.ok and abs(arrival.samples - 8765.4) < 1.0
    assert 15 < arrival.snr_db < 60


def test_silence_and_pure_noise_are_not_heard() -> None:
    rng = np.random.default_rng(3)
    assert est.measure(_reference(), np.zeros(LENGTH), [(0, LENGTH)])[0].status == "not-heard"
    noise_only = est.measure(_reference(), rng.normal(0, 0.1, LENGTH), [(0, LENGTH)])[0]
    assert noise_only.status == "not-heard" and np.isnan(noise_only.samples)


def test_a_clipped_speaker_is_reported_as_clipped() -> None:
    y = np.clip(_path(5000.0, gain=3.0), -1.0, 1.0)
    arrival = est.measure(_reference(), y, [(0, LENGTH)])[0]
    assert arrival.status == "clipped"
    # Loud but unclipped float audio is not clipping.
    assert est.measure(_reference(), _path(5000.0, gain=1.5), [(0, LENGTH)])[0].status == "ok"


def test_staggered_windows_separate_speakers_in_one_recording() -> None:
    # Three speakers on one timeline, each shifted by a known stagger of 0.4 s plus its own latency.
    stagger = int(0.4 * RATE)
    latencies = [5000.5, 11000.25, 7000.0]
    length = len(X) + 3 * stagger + RATE // 2
    y = np.zeros(length)
    for i, lat in enumerate(latencies):
        y += 0.3 * est.fractional_delay(X, i * stagger + lat, length)
    ref = np.zeros(length)
    ref[: len(X)] = X
    windows = [(i * stagger, (i + 1) * stagger) for i in range(3)]
    got = [a.samples - i * stagger for i, a in enumerate(est.measure(ref, y, windows))]
    assert np.allclose(got, latencies, atol=0.05)


def test_sweep_stays_in_band() -> None:
    spec = np.abs(np.fft.rfft(X, 1 << 16)) ** 2
    freqs = np.fft.rfftfreq(1 << 16, 1 / RATE)
    outside = spec[(freqs > 16000)].sum() / spec.sum()
    assert outside < 1e-4 and np.max(np.abs(X)) <= 0.5 + 1e-6


def test_probes_measured_at_once_each_find_their_own_speaker() -> None:
    # Three speakers play their own probe at the same time; one recording; each found by its reference.
    delays, gains = [4800.25, 9000.5, 12345.75], [0.5, 0.3, 0.6]
    length = RATE // 2 + 16000
    refs = [np.concatenate([est.probe(0.5, seed=i + 1), np.zeros(length - RATE // 2)]) for i in range(3)]
    heard = sum(
        g * est.fractional_delay(r[: RATE // 2], d, length) for r, d, g in zip(refs, delays, gains, strict=True)
    )
    heard = heard + np.random.default_rng(3).normal(0.0, 0.05, length)
    for ref, d in zip(refs, delays, strict=True):
        arrival = est.measure(ref, heard, [(0, length)])[0]
        assert arrival.ok and abs(arrival.samples - d) < 0.25, (arrival, d)  # 5 µs: the others are noise here


def test_probes_are_mutually_uncorrelated_and_low_crest() -> None:
    a, b = est.probe(0.5, seed=1).astype(float), est.probe(0.5, seed=2).astype(float)
    assert np.abs(est.impulse_response(a, b)).max() < 0.06  # vs 1.0 for a probe against itself
    for x in (a, b):
        assert np.abs(x).max() / np.sqrt(np.mean(x**2)) < 2.6  # plain Gaussian noise: about 4


def test_far_sidelobes_of_a_loud_speaker_are_not_taken_for_a_silent_one() -> None:
    # Noise-free: window 2 holds nothing but the tail of speaker 1's response, far above a zero noise floor.
    y = _path(4800.0, gain=0.9)
    windows = [(0, 9000), (9000, LENGTH)]
    first, second = est.measure(_reference(), y, windows)
    assert first.ok and second.status == "not-heard"
    loud, faint = est.Arrival("ok", 10.0, 60.0, -3.0), est.Arrival("ok", 20.0, 30.0, -50.0)
    assert [a.status for a in est.drop_faint([loud, faint])] == ["ok", "not-heard"]
    assert est.drop_faint([faint]) == [faint]  # alone, a quiet speaker is still a speaker


def test_trace_shows_the_arrival_and_a_reflection_where_they_are() -> None:
    # Direct sound at 6000 samples, a reflection 20 ms later at half the amplitude (-6 dB).
    arrival = est.measure(_reference(), _path(6000.0, reflections=((20.0, 0.5),)), [(0, LENGTH)])[0]
    trace = arrival.trace
    assert len(trace) == est.TRACE_BINS
    before = int(est.TRACE_BEFORE_MS / est.TRACE_BIN_MS)
    assert trace[before] == 0.0  # the arrival's own bin holds the peak
    reflection = before + int(20.0 / est.TRACE_BIN_MS)
    assert trace[reflection] == pytest.approx(-6.0, abs=1.0)
    quiet = [trace[i] for i in range(len(trace)) if abs(i - before) > 2 and abs(i - reflection) > 2]
    assert max(quiet) < -20.0  # nothing else: band-limited lobes are under 1 ms wide
    assert min(trace) >= -est.TRACE_FLOOR_DB
    silent = est.measure(_reference(), np.zeros(LENGTH), [(0, LENGTH)])[0]
    assert not silent.ok and silent.trace == ()
