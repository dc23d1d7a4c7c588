"""Programme material for tests, benchmarks and the demo: music-like signals generated here, never downloaded.

Pure numpy, no I/O. Kinds: dense pop (drums, bass, chords), sparse tonal passages (a few sustained partials,
the hard case for correlation), speech-like (voiced syllables through formants, fricatives, pauses) and
silence; `playlist` strings tracks of several kinds together with silence between them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

RATE = 48000
Kind = Literal["pop", "tonal", "speech", "silence"]
KINDS: tuple[Kind, ...] = ("pop", "tonal", "speech", "silence")
LEVEL_DBFS = -18.0  # every kind is brought to this RMS over its sounding part
PEAK = 0.95
TABLE = 4096  # wavetable length for periodic tones


def _table(amplitudes: np.ndarray, phases: np.ndarray | None = None) -> np.ndarray:
    """One period of a waveform with the given harmonic amplitudes (harmonic 1 first)."""
    spec = np.zeros(TABLE // 2 + 1, dtype=complex)
    n = min(len(amplitudes), TABLE // 2 - 1)
    ph = np.zeros(n) if phases is None else phases[:n]
    spec[1 : n + 1] = amplitudes[:n] * np.exp(1j * ph)
    return np.fft.irfft(spec, TABLE) * TABLE / 2


def _tone(table: np.ndarray, freq: np.ndarray | float, n: int, rate: int, phase0: float = 0.0) -> np.ndarray:
    """`n` samples of a wavetable tone; `freq` a constant or one value per sample (a glide)."""
    step = np.broadcast_to(np.asarray(freq, dtype=np.float64) / rate, (n,))
    phase = (phase0 + np.cumsum(step) - step[0]) % 1.0
    return table[(phase * TABLE).astype(np.int64) % TABLE]


def _limit_harmonics(freq: float, amplitudes: np.ndarray, rate: int) -> np.ndarray:
    keep = int((rate / 2 * 0.9) // max(freq, 1.0))
    return amplitudes[: max(1, keep)]


def _envelope(n: int, rate: int, attack: float, decay: float, sustain: float, release: float) -> np.ndarray:
    t = np.arange(n) / rate
    env = np.minimum(1.0, t / max(attack, 1e-4))
    after = np.maximum(0.0, t - attack)
    env = np.where(t < attack, env, sustain + (1 - sustain) * np.exp(-after / max(decay, 1e-4)))
    rel = max(1, round(release * rate))
    if rel < n:
        env[-rel:] *= np.linspace(1.0, 0.0, rel)
    return env


def _add(out: np.ndarray, at: int, wave: np.ndarray) -> None:
    if at >= len(out):
        return
    end = min(len(out), at + len(wave))
    out[at:end] += wave[: end - at]


def _bandpass_noise(rng: np.random.Generator, n: int, rate: int, lo: float, hi: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / rate)
    spec[(f < lo) | (f > hi)] = 0
    x = np.fft.irfft(spec, n)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
PROGRESSIONS = ([0, 4, 5, 3], [0, 5, 3, 4], [5, 3, 0, 4], [0, 3, 4, 4], [0, 5, 1, 4])


def _pop(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    n = round(seconds * rate)
    out = np.zeros(n)
    bpm = rng.uniform(96, 132)
    beat = 60.0 / bpm
    key = 45 + int(rng.integers(0, 12))  # MIDI note of the key's bass root (A2 .. G#3)
    prog = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
    bar = 4 * beat
    chord_table = _table(np.array([1.0, 0.5, 0.35, 0.2, 0.12, 0.08]), rng.uniform(0, 2 * np.pi, 6))
    bass_table = _table(1.0 / np.arange(1, 9) ** 1.3, rng.uniform(0, 2 * np.pi, 8))
    nbars = math.ceil(seconds / bar)
    for b in range(nbars):
        t0 = b * bar
        degree = prog[b % len(prog)]
        root = key + MAJOR[degree % 7]
        # Chords: a triad an octave and a half above the bass, sustained for the bar.
        m = round(bar * rate)
        env = _envelope(m, rate, 0.02, 0.6, 0.5, 0.08)
        for step in (0, 2, 4):
            d = degree + step
            note = key + 12 + 12 * (d // 7) + MAJOR[d % 7] + 12 * (step == 0)
            f = 440.0 * 2 ** ((note - 69) / 12) * (1 + rng.uniform(-0.002, 0.002))
            _add(out, round(t0 * rate), 0.11 * env * _tone(chord_table, f, m, rate, rng.uniform()))
        # Bass: eighth notes on the root, plucked.
        f_bass = 440.0 * 2 ** ((root - 12 - 69) / 12)
        k = round(beat / 2 * rate)
        pluck = _envelope(k, rate, 0.004, 0.12, 0.25, 0.02)
        for e in range(8):
            if rng.uniform() < 0.85:
                wave = 0.32 * pluck * _tone(bass_table, f_bass * (2 if e == 7 and rng.uniform() < 0.3 else 1), k, rate)
                _add(out, round((t0 + e * beat / 2) * rate), wave)
        # Drums: kick on 1 and 3 (and a pickup), snare on 2 and 4, hats on eighths.
        for e in range(8):
            at = round((t0 + e * beat / 2) * rate)
            if e in (0, 4) or (e == 5 and rng.uniform() < 0.3):
                kn = round(0.3 * rate)
                t = np.arange(kn) / rate
                f = 50 + 110 * np.exp(-t / 0.03)
                _add(out, at, 0.7 * np.exp(-t / 0.12) * np.sin(2 * np.pi * np.cumsum(f) / rate))
            if e in (2, 6):
                sn = round(0.2 * rate)
                t = np.arange(sn) / rate
                body = 0.25 * np.sin(2 * np.pi * 185 * t) * np.exp(-t / 0.05)
                _add(out, at, body + 0.3 * np.exp(-t / 0.07) * _bandpass_noise(rng, sn, rate, 300, 9000))
            hn = round(0.06 * rate)
            t = np.arange(hn) / rate
            accent = 1.0 if e % 2 == 0 else 0.6
            _add(out, at, 0.12 * accent * np.exp(-t / 0.015) * _bandpass_noise(rng, hn, rate, 6000, 15000))
    return out


def _tonal(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A few sustained notes at a time, each of one to three partials, with slow attacks: little to correlate."""
    n = round(seconds * rate)
    out = np.zeros(n)
    scale = 57 + MAJOR  # A3 major-ish pitch set, over two octaves
    for voice in range(int(rng.integers(1, 4))):
        t = rng.uniform(0, 1.5) + voice * 0.7
        while t < seconds:
            dur = rng.uniform(2.0, 4.5)
            note = int(scale[int(rng.integers(len(scale)))]) + 12 * int(rng.integers(0, 2))
            f = 440.0 * 2 ** ((note - 69) / 12)
            parts = int(rng.integers(1, 4))
            amps = _limit_harmonics(f, 0.6 ** np.arange(parts), rate)
            m = round(dur * rate)
            env = _envelope(m, rate, rng.uniform(0.15, 0.5), 1.5, 0.7, 0.6)
            vib = 1 + 0.003 * np.sin(2 * np.pi * rng.uniform(4, 6) * np.arange(m) / rate)
            _add(out, round(t * rate), 0.25 * env * _tone(_table(amps), f * vib, m, rate, rng.uniform()))
            t += dur * rng.uniform(0.7, 1.1)
    return out


def _formant_table(f0: float, formants: Sequence[tuple[float, float]], rate: int) -> np.ndarray:
    """One period of a voiced sound: a glottal source's harmonics (falling 12 dB/octave) shaped by formants."""
    h = np.arange(1, int(5000 // f0) + 1)
    fh = h * f0
    amp = 1.0 / h
    env = np.zeros_like(fh)
    for fc, bw in formants:
        env += 1.0 / (1.0 + ((fh - fc) / (bw / 2)) ** 2)
    return _table(amp * (0.05 + env))


VOWELS = ([(730, 90), (1090, 110), (2440, 150)], [(270, 60), (2290, 100), (3010, 150)],
          [(300, 60), (870, 90), (2240, 150)], [(530, 80), (1840, 110), (2480, 150)],
          [(570, 80), (840, 100), (2410, 150)], [(660, 90), (1720, 110), (2410, 150)])  # fmt: skip


def _speech(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    n = round(seconds * rate)
    out = np.zeros(n)
    t = rng.uniform(0.0, 0.3)
    base = rng.uniform(95, 210)
    while t < seconds:
        phrase = int(rng.integers(4, 14))  # syllables in a phrase, then a pause
        for s in range(phrase):
            dur = rng.uniform(0.12, 0.28)
            m = round(dur * rate)
            f0 = base * (1.15 - 0.3 * s / phrase) * np.linspace(1.0, rng.uniform(0.9, 1.1), m)
            vowel = VOWELS[int(rng.integers(len(VOWELS)))]
            env = _envelope(m, rate, 0.02, 0.08, 0.7, 0.04)
            wave = 0.5 * env * _tone(_formant_table(float(f0.mean()), vowel, rate), f0, m, rate)
            _add(out, round(t * rate), wave)
            t += dur
            if rng.uniform() < 0.35:  # a fricative or plosive between syllables
                fn = round(rng.uniform(0.04, 0.11) * rate)
                fric = _bandpass_noise(rng, fn, rate, rng.uniform(2500, 4500), 9000)
                _add(out, round(t * rate), 0.12 * _envelope(fn, rate, 0.01, 0.05, 0.6, 0.02) * fric)
                t += fn / rate
            t += rng.uniform(0.01, 0.06)
        t += rng.uniform(0.25, 0.8)
    return out


def _normalise(x: np.ndarray) -> np.ndarray:
    sounding = np.abs(x) > 1e-6
    if not sounding.any():
        return x.astype(np.float32)
    rms = float(np.sqrt(np.mean(x[sounding] ** 2)))
    x = x * (10 ** (LEVEL_DBFS / 20) / rms)
    peak = float(np.max(np.abs(x)))
    if peak > PEAK:  # a soft limit, not a clip: scale the loud moments down
        x = np.tanh(x / PEAK) * PEAK
    return x.astype(np.float32)


def generate(kind: Kind, seconds: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """`seconds` of programme of the given kind: float32 mono in [-1, 1], the same for the same seed."""
    if kind not in KINDS:
        raise ValueError(f"unknown programme kind {kind!r}: one of {', '.join(KINDS)}")
    if seconds <= 0:
        return np.zeros(0, dtype=np.float32)
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    if kind == "silence":
        return np.zeros(round(seconds * rate), dtype=np.float32)
    make = {"pop": _pop, "tonal": _tonal, "speech": _speech}[kind]
    x = make(seconds, rate, rng)
    # Tracks fade in and out over 20 ms, as decoders and players do.
    fade = min(len(x) // 2, round(0.02 * rate))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        x[:fade] *= ramp
        x[-fade:] *= ramp[::-1]
    return _normalise(x)


def playlist(
    seconds: float,
    rate: int = RATE,
    seed: int = 0,
    kinds: tuple[Kind, ...] = ("pop", "tonal", "speech"),
    track_s: tuple[float, float] = (25.0, 70.0),
    gap_s: tuple[float, float] = (1.0, 3.0),
) -> tuple[np.ndarray, list[tuple[float, Kind]]]:
    """Tracks of the given kinds in turn (random lengths), silence between them: the programme and where each
    part starts (seconds, kind)."""
    rng = np.random.default_rng([seed, 99])
    parts: list[np.ndarray] = []
    marks: list[tuple[float, Kind]] = []
    at, i = 0.0, int(rng.integers(len(kinds)))
    while at < seconds:
        kind = kinds[i % len(kinds)]
        dur = min(seconds - at, float(rng.uniform(*track_s)))
        marks.append((at, kind))
        parts.append(generate(kind, dur, rate, seed * 1000 + len(parts)))
        at += dur
        if at < seconds:
            gap = min(seconds - at, float(rng.uniform(*gap_s)))
            marks.append((at, "silence"))
            parts.append(np.zeros(round(gap * rate), dtype=np.float32))
            at += gap
        i += 1
    x = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return x[: round(seconds * rate)], marks
