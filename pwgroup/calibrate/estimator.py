"""Latency estimation from a microphone recording: numpy only, no I/O.

The excitation is an exponential sine sweep kept inside the band A2DP codecs carry (about 150 Hz to 12 kHz).
The recording is cross-correlated with the reference that was really played (generalised cross-correlation
with a partial whitening, `beta`), giving a band-limited impulse response. Its analytic envelope is searched
for the **first arrival**: the earliest lobe that stands out of the noise and is within `first_db` of the
strongest lobe, so a loud reflection never wins over a quieter direct sound. The lobe's peak is refined to a
fraction of a sample by band-limited (FFT) interpolation. Each estimate carries its peak-to-noise ratio, and a
speaker that is silent, drowned in noise or clipped is reported as such instead of being given a delay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

RATE = 48000
F_LOW = 150.0
F_HIGH = 12000.0

Status = Literal["ok", "not-heard", "clipped"]
MIN_SNR_DB = 18.0  # below this peak-to-noise ratio (dB) an arrival is not trusted
EARLY_DB = 15.0  # how far out of the noise an arrival earlier than the strongest must stand (noise: ~1e-14 per lag)
LOBE = 24  # samples (0.5 ms): paths closer than this to the direct sound merge with it
FAINT_DB = 40.0  # an arrival this far under the loudest speaker's is leakage from it (sidelobes), not a speaker
TRACE_BINS = 60  # the plotted impulse response: 60 bins of 1 ms, from 5 ms before the arrival
TRACE_BIN_MS = 1.0
TRACE_BEFORE_MS = 5.0
TRACE_FLOOR_DB = 48.0
CLIP_LEVEL = 0.999  # |sample| at or above this counts as clipped (integer microphones saturate at 1.0)


@dataclass(frozen=True)
class Arrival:
    """One speaker's first arrival in a recording."""

    status: Status
    samples: float  # delay of the first arrival, in samples after the reference (nan when not heard)
    snr_db: float  # peak-to-noise ratio of the arrival in the impulse response
    level_db: float  # peak level relative to a perfect unit-gain path, in dB
    # The impulse response's envelope around the arrival, for a person to look at: dB under its peak (0 is the
    # peak, -TRACE_FLOOR_DB the floor), TRACE_BINS bins of TRACE_BIN_MS from TRACE_BEFORE_MS before the arrival.
    trace: tuple[float, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def ms(self, rate: int = RATE) -> float:
        return self.samples * 1000.0 / rate


def sweep(
    duration: float = 0.5,
    rate: int = RATE,
    f_low: float = F_LOW,
    f_high: float = F_HIGH,
    level: float = 0.5,
    fade: float = 0.01,
) -> np.ndarray:
    """An exponential sine sweep (Farina) with short raised-cosine fades, float32."""
    n = round(duration * rate)
    t = np.arange(n) / rate
    k = math.log(f_high / f_low)
    x = np.sin(2 * math.pi * f_low * duration / k * (np.exp(t * k / duration) - 1.0))
    nf = max(1, round(fade * rate))
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, nf))
    x[:nf] *= ramp
    x[-nf:] *= ramp[::-1]
    return (level * x).astype(np.float32)


def probe(
    duration: float = 0.5,
    rate: int = RATE,
    seed: int = 0,
    f_low: float = F_LOW,
    f_high: float = F_HIGH,
    rms: float = 0.2,
    fade: float = 0.01,
) -> np.ndarray:
    """A band-limited noise burst with a flat spectrum and a low crest factor, float32; each `seed` gives one
    that is uncorrelated with the others, so several speakers can be measured at once, each by its own.

    Random phases over a flat band, then a few rounds of clipping the peaks and restoring the flat magnitude
    (the classic crest-factor reduction for multisines): louder for the same peak than plain noise.
    """
    n = round(duration * rate)
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    band = (freqs >= f_low) & (freqs <= f_high)
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0.0, 2 * math.pi, len(freqs))
    x = np.zeros(n)
    for _ in range(8):
        x = np.fft.irfft(band * np.exp(1j * phase), n)
        limit = 2.0 * float(np.sqrt(np.mean(x**2)))
        phase = np.angle(np.fft.rfft(np.clip(x, -limit, limit), n))
    x *= rms / float(np.sqrt(np.mean(x**2)))
    nf = max(1, round(fade * rate))
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, nf))
    x[:nf] *= ramp
    x[-nf:] *= ramp[::-1]
    return x.astype(np.float32)


def _band_window(freqs: np.ndarray, f_low: float, f_high: float) -> np.ndarray:
    """1 inside [f_low, f_high], raised-cosine tapers of an octave below and a half octave above, 0 outside."""
    w = np.zeros_like(freqs)
    inside = (freqs >= f_low) & (freqs <= f_high)
    w[inside] = 1.0
    lo = (freqs >= f_low / 2) & (freqs < f_low)
    w[lo] = 0.5 - 0.5 * np.cos(math.pi * (np.log2(freqs[lo] / (f_low / 2))))
    hi = (freqs > f_high) & (freqs <= f_high * 1.5)
    w[hi] = 0.5 + 0.5 * np.cos(math.pi * np.log2(freqs[hi] / f_high) / math.log2(1.5))
    return w


def impulse_response(
    reference: np.ndarray,
    recording: np.ndarray,
    rate: int = RATE,
    f_low: float = F_LOW,
    f_high: float = F_HIGH,
    beta: float = 0.3,
) -> np.ndarray:
    """The band-limited impulse response from `reference` to `recording` (same time base), index = lag.

    Normalised so that a path of unit gain and integer delay d gives a peak of 1.0 at index d. `beta` is the
    whitening exponent: 0 is the plain matched filter, 1 full deconvolution.
    """
    ref = np.asarray(reference, dtype=np.float64)
    rec = np.asarray(recording, dtype=np.float64)
    n = 1 << math.ceil(math.log2(len(ref) + len(rec)))
    spec_x = np.fft.rfft(ref, n)
    spec_y = np.fft.rfft(rec, n)
    power = np.abs(spec_x) ** 2
    band = _band_window(np.fft.rfftfreq(n, 1.0 / rate), f_low, f_high)
    floor = 1e-9 * float(power.max() or 1.0)
    weight = band / np.power(power + floor, beta)
    # The response of a unit path under this weighting, to normalise peaks to path gain.
    unit = float(np.fft.irfft(power * weight, n)[0])
    if unit <= 0:
        return np.zeros(len(rec))
    ir = np.fft.irfft(spec_y * np.conj(spec_x) * weight, n) / unit
    return ir[: len(rec)]


def envelope(x: np.ndarray) -> np.ndarray:
    """Magnitude of the analytic signal (Hilbert envelope)."""
    n = len(x)
    spec = np.fft.fft(x)
    h = np.zeros(n)
    h[0] = 1.0
    if n % 2 == 0:
        h[n // 2] = 1.0
        h[1 : n // 2] = 2.0
    else:
        h[1 : (n + 1) // 2] = 2.0
    return np.abs(np.fft.ifft(spec * h))


def _refine(ir: np.ndarray, index: int, half: int = 32, up: int = 32) -> float:
    """Sub-sample position of the envelope peak near `index`, by band-limited interpolation."""
    lo = max(0, index - half)
    seg = ir[lo : index + half]
    m = len(seg)
    spec = np.fft.fft(seg * np.hanning(m))
    padded = np.zeros(m * up, dtype=complex)
    # Analytic signal, upsampled: keep the positive half of the spectrum only.
    padded[: m // 2] = 2.0 * spec[: m // 2]
    padded[0] = spec[0]
    env = np.abs(np.fft.ifft(padded)) * up
    centre = (index - lo) * up
    win = slice(max(0, centre - up), min(len(env), centre + up + 1))
    k = win.start + int(np.argmax(env[win]))
    if 0 < k < len(env) - 1:
        a, b, c = env[k - 1], env[k], env[k + 1]
        den = a - 2 * b + c
        frac = 0.5 * (a - c) / den if den != 0 else 0.0
    else:
        frac = 0.0
    return lo + (k + frac) / up


def first_arrival(
    ir: np.ndarray,
    start: int = 0,
    stop: int | None = None,
    first_db: float = 12.0,
    min_snr_db: float = MIN_SNR_DB,
) -> Arrival:
    """The first arrival in `ir[start:stop]` (positions are absolute indices of `ir`)."""
    stop = len(ir) if stop is None else min(stop, len(ir))
    seg = ir[start:stop]
    if len(seg) < 64 or not np.any(seg):
        return Arrival("not-heard", math.nan, -math.inf, -math.inf)
    env = envelope(seg)
    peak_i = int(np.argmax(env))
    peak = float(env[peak_i])
    # Noise: the envelope's median is dominated by the noise floor when arrivals are a small part of the span;
    # a Rayleigh envelope's RMS is its median times about 1.2.
    noise = float(np.median(env)) * 1.2 + 1e-30
    snr_db = 20 * math.log10(peak / noise)
    level_db = 20 * math.log10(peak) if peak > 0 else -math.inf
    if snr_db < min_snr_db:
        return Arrival("not-heard", math.nan, snr_db, level_db)
    # The earliest lobe within first_db of the strongest that also stands EARLY_DB out of the noise (noise
    # envelopes have long tails); the strongest lobe always qualifies.
    threshold = min(peak, max(peak * 10 ** (-first_db / 20), noise * 10 ** (EARLY_DB / 20)))
    above = np.flatnonzero(env >= threshold)
    # The arrival's main lobe: its shoulders may ripple, so take the top within LOBE of the first crossing.
    i = int(above[0])
    i += int(np.argmax(env[i : i + LOBE]))
    return Arrival("ok", start + _refine(seg, i), snr_db, level_db)


def clipped(recording: np.ndarray, start: int = 0, stop: int | None = None, level: float = CLIP_LEVEL) -> bool:
    """True when the span has flat tops at full scale: three or more equal samples in a row at |x| >= level."""
    seg = np.asarray(recording[start:stop], dtype=np.float64)
    if len(seg) < 3:
        return False
    hot = np.abs(seg) >= level
    flat = np.abs(np.diff(seg)) <= 1e-6
    runs = hot[:-2] & hot[1:-1] & hot[2:] & flat[:-1] & flat[1:]
    return bool(runs.any())


def measure(
    reference: np.ndarray,
    recording: np.ndarray,
    windows: list[tuple[int, int]],
    rate: int = RATE,
) -> list[Arrival]:
    """First arrivals of `recording` against `reference`, one per lag window (start, stop) in samples.

    A window whose part of the recording is clipped is reported as clipped, with its estimate kept for display.
    """
    ir = impulse_response(reference, recording, rate)
    span = int(np.count_nonzero(np.abs(reference) > 0))
    out = []
    for start, stop in windows:
        arrival = first_arrival(ir, start, stop)
        if arrival.ok:
            at = int(arrival.samples)
            shape = trace(ir, arrival.samples, rate)
            state: Status = "clipped" if clipped(recording, at, at + span) else "ok"
            arrival = Arrival(state, arrival.samples, arrival.snr_db, arrival.level_db, shape)
        out.append(arrival)
    return drop_faint(out)


def trace(ir: np.ndarray, at: float, rate: int = RATE) -> tuple[float, ...]:
    """The envelope of `ir` around an arrival at `at` (samples), as TRACE_BINS bins of dB under the arrival's
    peak, floored at -TRACE_FLOOR_DB: the direct sound near the start, then what the room adds."""
    width = rate * TRACE_BIN_MS / 1000
    start = round(at - rate * TRACE_BEFORE_MS / 1000)
    lo, hi = max(0, start), min(len(ir), start + round(TRACE_BINS * width))
    if hi - lo < 2:
        return ()
    env = np.zeros(round(TRACE_BINS * width))
    env[lo - start : hi - start] = envelope(np.asarray(ir[lo:hi], dtype=np.float64))
    bins = np.array([env[round(i * width) : round((i + 1) * width)].max() for i in range(TRACE_BINS)])
    peak = float(bins.max())
    if peak <= 0:
        return ()
    db = 20 * np.log10(np.maximum(bins / peak, 10 ** (-TRACE_FLOOR_DB / 20)))
    return tuple(round(float(v), 1) for v in db)


def drop_faint(arrivals: list[Arrival], within_db: float = FAINT_DB) -> list[Arrival]:
    """Mark as not heard any arrival more than `within_db` under the loudest one. In a quiet room the noise
    floor is so low that the far sidelobes of a loud speaker stand out of it, in a window where a silent
    speaker should be; no real speaker in a group is 40 dB quieter than another at the same microphone."""
    levels = [a.level_db for a in arrivals if a.ok]
    if not levels:
        return arrivals
    floor = max(levels) - within_db
    return [
        Arrival("not-heard", math.nan, a.snr_db, a.level_db) if a.ok and a.level_db < floor else a for a in arrivals
    ]


def fractional_delay(x: np.ndarray, delay: float, length: int | None = None) -> np.ndarray:
    """`x` delayed by a fractional number of samples (exact band-limited shift, by FFT)."""
    length = len(x) + math.ceil(delay) + 1 if length is None else length
    n = 1 << math.ceil(math.log2(length + len(x)))
    spec = np.fft.rfft(np.asarray(x, dtype=np.float64), n)
    freqs = np.fft.rfftfreq(n)
    y = np.fft.irfft(spec * np.exp(-2j * math.pi * freqs * delay), n)
    return y[:length]
