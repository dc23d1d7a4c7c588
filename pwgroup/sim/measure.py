"""End-to-end timing checks on recordings: where a known signal arrives, and what a channel is made of.

Used by tests and benchmarks on the truth channels; never by playback.
"""

from __future__ import annotations

import numpy as np


def lag(reference: np.ndarray, signal: np.ndarray) -> int:
    """The whole-sample delay of `signal` against `reference`, by FFT cross-correlation."""
    n = 1 << int(np.ceil(np.log2(len(reference) + len(signal))))
    corr = np.fft.irfft(np.fft.rfft(signal, n) * np.conj(np.fft.rfft(reference, n)), n)
    k = int(np.argmax(np.abs(corr)))
    return k if k < n // 2 else k - n


def shifted(x: np.ndarray, delay: int) -> np.ndarray:
    out = np.zeros_like(x)
    if delay >= 0:
        out[delay:] = x[: len(x) - delay]
    else:
        out[:delay] = x[-delay:]
    return out


def decompose(reference: np.ndarray, signal: np.ndarray, delays: tuple[int, int], window: int = 240) -> np.ndarray:
    """Per window, least-squares weights of reference delayed by each of `delays`, and the residual share.

    Rows: (start, weight_a, weight_b, residual energy / signal energy). A clean crossfade shows weights moving
    from (g, 0) to (0, g) with a tiny residual; stale or skipped audio shows up as residual.
    """
    a, b = shifted(reference, delays[0]), shifted(reference, delays[1])
    rows = []
    for start in range(0, len(signal) - window, window):
        sl = slice(start, start + window)
        basis = np.stack([a[sl], b[sl]], axis=1)
        y = signal[sl]
        energy = float(np.dot(y, y))
        if energy < 1e-9 and float(np.sum(basis**2)) < 1e-9:
            rows.append((start, 0.0, 0.0, 0.0))
            continue
        coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
        resid = y - basis @ coef
        rows.append((start, float(coef[0]), float(coef[1]), float(np.dot(resid, resid)) / max(energy, 1e-12)))
    return np.array(rows)
