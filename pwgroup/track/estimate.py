"""Each member's arrival at the microphone, from a few seconds of the group's own signal and the microphone.

All members play the same music, so a plain correlation sees one blur. What tells them apart is what
calibration measured: each member's own response at the microphone (its `Template`: level, tonal colour,
reflections), which differs from the others'. The microphone's cross-spectrum with the group signal (Welch
frames, the group signal shifted by a common `base` lag) is fitted as the sum of every member's template, each
at its own sub-sample shift and with its own gain, by weighted least squares in the frequency domain:

    C(f) ~ P(f) * sum_i g_i T_i(f) exp(-j w(f) u_i)

(C: cross-spectrum, P: the group signal's power). A member that moved far is found by a matched filter on the
residual; its template's shape, not its level alone, says which member it is. Nothing is added to any speaker's
signal. Each estimate says how sure it is (standard deviation from the fit, peak-to-noise, ambiguity between
cycles of narrow-band programme), and the window as a whole says when it cannot see: silence, or noise at the
microphone louder than the music, or programme too sparse to tell the members apart. After a sparse window the
caller may take a long one (`Listener.long_window` of every frame, `estimate(..., sparse=True)`): over 16 s of
held notes a member that moved far or returned can be found, while those in place are not measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from pwgroup.calibrate import estimator as calib

RATE = 48000
FRAME = 32768  # Welch frame: 0.68 s, so members up to ~0.2 s either side of the base lag are in view
HOP = 8192
WINDOW_S = 4.0  # seconds of programme per estimate
F_LOW = calib.F_LOW
F_HIGH = calib.F_HIGH
TEMPLATE_LEN = 12000  # 250 ms of each member's response: sustained notes excite the whole reverberant tail
PRE = 64  # template samples kept before the first arrival
SEARCH = 0.28  # a member is looked for up to this fraction of FRAME either side of the base lag (~190 ms)
LOCAL = 48  # samples either side of the prediction searched before a member counts as moved
SILENT_DBFS = -70.0  # the group signal's in-band RMS under this: nothing to listen to
MIN_MIC_SNR_DB = -3.0  # music at the microphone (as fitted, which under-counts it by a few dB) against the rest
MIN_PEAK_DB = 14.0  # a member found away from its prediction must stand this far out of the matched filter
MIN_GAIN = 0.35  # a member heard at less than this share of its calibrated level is not heard
OK_SIGMA = 1.0  # samples (sd, calibrated scale): an arrival less sure than this is reported as uncertain
AMBIGUOUS = 0.85  # a rival cycle this close to the best one: narrow-band programme, the cycle is a guess
# Welch bins are not independent and the model's error is not noise: the fit's variance times this. Calibrated on
# bench/tracking.py's own errors (seeds 2-3, 1.5 min, every scenario; windows where the member's arrival held
# still): error/sigma had a robust scale (1.4826 x median |z|) of 0.367 at 16.0, so 16 x 0.367^2 = 2.2; 0.5 % of
# those windows were beyond 3 sigma. A member moving within the window (drift, a correction) is not one shift:
# the controller adds that smear (control.py), the estimator cannot see it.
VARIANCE_FACTOR = 2.2
FAST_GAIN = 0.7  # every member at least this loud where expected: steady playback, no search
FAR_FACTOR = 2.0  # a member moves far only where its response explains this many times more than near
SPARSE_BINS = 0.1  # a frame (window) whose programme carries fewer than this share of the band's bins is sparse
MIN_FRAMES = 8  # Welch frames (of ~20 in a window) with music enough to tell members apart, or nothing is said
WHITEN = 0.7  # how far the search filter is whitened (0: plain matched filter, 1: phase only)
LONG_S = 16.0  # seconds of sparse programme one long window integrates (measured: 12 s too few notes, 16 s enough)
MIN_LONG_BINS = 40  # a long window whose programme carries fewer bins than this shows nothing at all
ALIAS = 3.0  # samples: a member placed this far from a sure prediction in a long sparse window is a suspect

WindowStatus = Literal["ok", "silent", "noisy", "sparse"]
MemberStatus = Literal["ok", "uncertain", "not-heard", "not-seen"]


@dataclass(frozen=True)
class Template:
    """One member's response at the microphone, as calibration measured it: `samples` from the group signal to
    the microphone (band-limited), its first arrival at index `arrival` (fractional)."""

    samples: np.ndarray
    arrival: float


def template_from_recording(
    reference: np.ndarray,
    recording: np.ndarray,
    arrival: float,
    rate: int = RATE,
    length: int = TEMPLATE_LEN,
    pre: int = PRE,
) -> Template:
    """A member's template from a calibration recording where only that member played `reference` (the group
    signal on the recording's timeline), its first arrival at `arrival` samples (calibrate.estimator's)."""
    ir = deconvolve(reference, recording, rate)
    start = math.floor(arrival) - pre
    seg = np.zeros(length)
    lo, hi = max(0, start), min(len(ir), start + length)
    if hi > lo:
        seg[lo - start : hi - start] = ir[lo:hi]
    return Template(taper(seg), arrival - start)


def deconvolve(reference: np.ndarray, recording: np.ndarray, rate: int = RATE) -> np.ndarray:
    """The in-band transfer from `reference` to `recording` as an impulse response (index = lag), at its true
    gain: regularised division of spectra, band-limited to what A2DP carries."""
    ref = np.asarray(reference, dtype=np.float64)
    rec = np.asarray(recording, dtype=np.float64)
    n = 1 << math.ceil(math.log2(len(ref) + len(rec)))
    sx, sy = np.fft.rfft(ref, n), np.fft.rfft(rec, n)
    power = np.abs(sx) ** 2
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    band = np.zeros_like(freqs)
    inside = (freqs >= F_LOW) & (freqs <= F_HIGH)
    band[inside] = 1.0
    # Half-octave raised-cosine skirts, so the response has no long ringing from a brick-wall band.
    lo = (freqs >= F_LOW / 1.41) & (freqs < F_LOW)
    band[lo] = 0.5 - 0.5 * np.cos(math.pi * np.log2(freqs[lo] * 1.41 / F_LOW) / 0.5)
    hi = (freqs > F_HIGH) & (freqs <= F_HIGH * 1.41)
    band[hi] = 0.5 + 0.5 * np.cos(math.pi * np.log2(freqs[hi] / F_HIGH) / 0.5)
    floor = 1e-6 * float(power.max() or 1.0)
    return np.fft.irfft(sy * np.conj(sx) * band / (power + floor), n)[: len(rec)]


def taper(samples: np.ndarray, share: float = 0.15) -> np.ndarray:
    """The template's last `share` faded out, so its cut is not a step."""
    seg = np.array(samples, dtype=np.float64)
    n = max(1, int(len(seg) * share))
    seg[-n:] *= 0.5 + 0.5 * np.cos(np.linspace(0.0, math.pi, n))
    return seg


@dataclass(frozen=True)
class Spectra:
    """Welch sums over one window: cross-spectrum C of microphone and group signal (the group signal `base`
    samples earlier), the group signal's power P and the microphone's Q, on the in-band bins `bins`."""

    base: int
    start: int  # absolute sample (microphone timeline) of the first frame's start
    stop: int  # ... and of the last frame's end
    frames: int
    frame: int
    bins: np.ndarray
    cross: np.ndarray
    power_x: np.ndarray
    power_y: np.ndarray
    rate: int = RATE
    centre: float | None = None  # the group signal's energy-weighted middle of the frames (absolute sample)
    frame_at: tuple[int, ...] = ()  # each frame's middle (absolute sample, microphone timeline)
    frame_power: np.ndarray | None = None  # each frame's group-signal power on the bins, frames x bins
    dropped_sparse: int = 0  # frames left out: their programme too sparse to tell members apart
    dropped_silent: int = 0  # ... or silent

    @property
    def middle(self) -> float:
        """When the window's measurement holds: the middle of its programme, weighted by the programme's energy
        (a window half silence measures its sounding half; under drift the difference is samples)."""
        return (self.start + self.stop) / 2 if self.centre is None else self.centre

    def mean_square(self, power: np.ndarray) -> float:
        """In-band mean square of a signal from its Welch power sum (Parseval, Hann frames)."""
        if self.frames == 0:
            return 0.0
        return float(2 * power.sum() / (self.frame * self.frames * 3 * self.frame / 8))


_WINDOW: dict[int, np.ndarray] = {}


def _hann(n: int) -> np.ndarray:
    if n not in _WINDOW:
        _WINDOW[n] = 0.5 - 0.5 * np.cos(2 * math.pi * np.arange(n) / n)
    return _WINDOW[n]


def band_bins(frame: int = FRAME, rate: int = RATE) -> np.ndarray:
    return np.arange(math.ceil(F_LOW * frame / rate), math.floor(F_HIGH * frame / rate) + 1)


class Listener:
    """The last few seconds of group signal and microphone on one timeline, kept in memory only, and the spectra
    of their frames (each frame's FFT is computed once and reused by the windows that overlap it)."""

    def __init__(
        self,
        rate: int = RATE,
        window_s: float = WINDOW_S,
        frame: int = FRAME,
        hop: int = HOP,
        max_base_s: float = 1.5,
        long_s: float = LONG_S,
    ) -> None:
        self.rate, self.frame, self.hop = rate, frame, hop
        self.window = max(frame, round(window_s * rate))
        self.long_window = max(self.window, round(long_s * rate))  # for sparse programme (`estimate(sparse=True)`)
        self.keep = self.long_window + round(max_base_s * rate) + frame
        self.bins = band_bins(frame, rate)
        # Both signals in one buffer twice as long as what is kept: a block is copied in, and the kept part
        # moved to the front only when the buffer fills (not the whole history re-joined every block).
        self._buf = np.zeros((2, 2 * self.keep))
        self._lo = self._hi = 0
        self.offset = 0  # absolute index of self.x[0]
        self._fx: dict[int, np.ndarray] = {}
        self._fy: dict[int, np.ndarray] = {}

    @property
    def x(self) -> np.ndarray:
        """The group signal kept (read-only view)."""
        return self._buf[0, self._lo : self._hi]

    @property
    def y(self) -> np.ndarray:
        """The microphone kept (read-only view)."""
        return self._buf[1, self._lo : self._hi]

    @property
    def end(self) -> int:
        """Samples fed so far (the absolute index one past the newest)."""
        return self.offset + self._hi - self._lo

    def feed(self, x: np.ndarray, y: np.ndarray) -> None:
        if len(x) != len(y):
            raise ValueError("group signal and microphone blocks must have the same length (one timeline)")
        n = len(x)
        if self._hi + n > self._buf.shape[1]:
            kept = self._hi - self._lo
            if kept + n > self._buf.shape[1]:
                self._buf = np.concatenate([self._buf, np.zeros((2, kept + n))], axis=1)
            self._buf[:, :kept] = self._buf[:, self._lo : self._hi]
            self._lo, self._hi = 0, kept
        self._buf[0, self._hi : self._hi + n] = x
        self._buf[1, self._hi : self._hi + n] = y
        self._hi += n
        extra = self._hi - self._lo - self.keep
        if extra > 0:
            self._lo += extra
            self.offset += extra
        oldest = self.offset
        self._fx = {k: v for k, v in self._fx.items() if k >= oldest}
        self._fy = {k: v for k, v in self._fy.items() if k >= oldest}

    def clear(self) -> None:
        """Forget everything heard (a graph change made the past useless)."""
        self.offset = self.end
        self._buf[:] = 0.0
        self._lo = self._hi = 0
        self._fx.clear()
        self._fy.clear()

    def _fft(self, cache: dict[int, np.ndarray], buf: np.ndarray, at: int) -> np.ndarray | None:
        if at in cache:
            return cache[at]
        i = at - self.offset
        if i < 0 or i + self.frame > len(buf):
            return None
        spec = np.fft.rfft(buf[i : i + self.frame] * _hann(self.frame))[self.bins]
        cache[at] = spec
        return spec

    def spectra(self, base: int, window: int | None = None, keep_sparse: bool = False) -> Spectra:
        """The Welch sums of the newest window, the group signal taken `base` samples before the microphone.
        `keep_sparse`: frames of sparse programme are kept (a long window over a sparse passage)."""
        window = self.window if window is None else window
        last = (self.end - self.frame) // self.hop * self.hop
        first = max(self.end - window, self.offset + base, 0)
        n = len(self.bins)
        cross, px, py = np.zeros(n, dtype=complex), np.zeros(n), np.zeros(n)
        frames, lo, hi = 0, last + self.frame, last
        at = last
        weight, moment = 0.0, 0.0
        mids, powers = [], []
        sparse = silent = 0
        floor = 10 ** (SILENT_DBFS / 10) * self.frame * 3 * self.frame / 16  # a frame's power sum at SILENT_DBFS
        while at >= first:
            fy = self._fft(self._fy, self.y, at)
            fx = self._fft(self._fx, self.x, at - base)
            if fy is None or fx is None:
                break
            p = fx.real**2 + fx.imag**2
            start, at = at, at - self.hop
            lo, hi = start, max(hi, start + self.frame)
            # Frames of silence or of a few held notes are left out: a window straddling a pop track's end and a
            # sparse passage measured a blend, several samples off while claiming a fraction of one.
            total = float(p.sum())
            if total < floor:
                silent += 1
                continue
            if not keep_sparse and float(np.sum(p / (p + 1e-3 * total / len(p)))) < SPARSE_BINS * n:
                sparse += 1
                continue
            cross += fy * np.conj(fx)
            px += p
            py += fy.real**2 + fy.imag**2
            e = float(p.sum())
            weight, moment = weight + e, moment + e * (start + self.frame / 2)
            mids.append(start + self.frame // 2)
            powers.append(p)
            frames += 1
        centre = moment / weight if weight > 0 else None
        fp = np.array(powers) if powers else None
        return Spectra(
            base,
            lo,
            hi,
            frames,
            self.frame,
            self.bins,
            cross,
            px,
            py,
            self.rate,
            centre,
            tuple(mids),
            fp,
            sparse,
            silent,
        )


@dataclass(frozen=True)
class Bank:
    """Every member's template on the spectra's bins."""

    spectra: np.ndarray  # members x bins
    arrivals: np.ndarray  # each template's first arrival (samples into the template)
    length: int
    frame: int
    energy: np.ndarray  # each template's in-band energy, to normalise gains

    @property
    def members(self) -> int:
        return len(self.arrivals)


def bank(templates: Sequence[Template], frame: int = FRAME, rate: int = RATE) -> Bank:
    bins = band_bins(frame, rate)
    specs = np.array([np.fft.rfft(t.samples, frame)[bins] for t in templates])
    energy = np.sum(np.abs(specs) ** 2, axis=1) if len(templates) else np.zeros(0)
    length = max((len(t.samples) for t in templates), default=0)
    return Bank(specs, np.array([t.arrival for t in templates]), length, frame, energy)


BASE_STEP = 512  # the common lag moves in these steps: each move re-transforms every frame of the group signal


def base_for(predicted: Sequence[float | None], templates: Bank) -> int:
    """The common lag for the group signal: members' template starts centred on zero, to the nearest BASE_STEP
    (11 ms: nothing against the ~190 ms searched either side; a lag that followed every sample of drift made
    every frame's transform anew, and kept the old ones, each window: 3x the CPU and memory in drift runs)."""
    starts = [p - a for p, a in zip(predicted, templates.arrivals, strict=True) if p is not None and math.isfinite(p)]
    return BASE_STEP * round(float(np.median(starts)) / BASE_STEP) if starts else 0


@dataclass(frozen=True)
class MemberEstimate:
    status: MemberStatus
    arrival: float  # samples after the group signal (nan when not heard)
    sigma: float  # standard deviation of `arrival`, samples (inf when not heard)
    gain: float  # level against calibration's (1.0: as calibrated)
    peak_db: float  # the member's matched-filter peak over that filter's noise
    moved: bool = False  # found away from where it was predicted
    ambiguous: bool = False  # another cycle or place fits nearly as well: uncertain which, not just how exactly

    @property
    def seen(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Estimate:
    status: WindowStatus
    at: float  # absolute sample (microphone timeline) the window is centred on
    members: tuple[MemberEstimate, ...]
    mic_snr_db: float  # music at the microphone against everything else, as fitted
    programme_dbfs: float  # the group signal's in-band level
    reason: str = ""
    frames: int = 0
    span: tuple[int, int] = (0, 0)  # absolute samples (microphone timeline) the window covers
    extra: dict[str, float] = field(default_factory=dict)
    compensated: bool = False  # measured with the members' known moves taken out (arrivals at the centre)
    sparse: bool = False  # a long window over sparse programme: only far moves (or a return) are measured

    @property
    def seen(self) -> bool:
        return self.status == "ok"


def _not(status: MemberStatus) -> MemberEstimate:
    return MemberEstimate(status, math.nan, math.inf, 0.0, -math.inf)


class _Fit:
    """The weighted least-squares problem of one window."""

    def __init__(self, spec: Spectra, templates: Bank, motion: np.ndarray | None = None) -> None:
        p = spec.power_x
        eps = 1e-3 * float(p.mean() or 1.0)
        scale = 1.0 / np.sqrt(p + eps)
        self.a = p * scale  # P / sqrt(P + eps)
        self.c = spec.cross * scale
        self.t = templates.spectra
        self.omega = 2 * math.pi * spec.bins / spec.frame
        self.frame = spec.frame
        self.bins = spec.bins
        self.eff = float(np.sum(p / (p + eps)))  # bins that carry programme
        self.q = float(spec.power_y.sum())
        self.power = p
        self.at = self.a[:, None] * self.t.T  # a T_i, bins x members: every column's shape, once
        if motion is not None and spec.frame_power is not None:
            # A member whose arrival moves within the window by known amounts (its delay corrected, its clock's
            # drift as known): frame k's cross-spectrum carries exp(-j w d_k), so its column's power is the
            # frames' powers each turned by its own offset, not their plain sum; the fit then measures the
            # member at the window's centre instead of a blur of places.
            for i in range(self.t.shape[0]):
                d = motion[i]
                if not np.any(np.abs(d) > 0.05):
                    continue
                turned = (spec.frame_power.T * self.phasors(d)).sum(axis=1)
                self.at[:, i] = turned * scale * self.t[i]

    def phasors(self, shifts: np.ndarray) -> np.ndarray:
        """exp(-j w u) for each shift, bins x shifts: the bins are contiguous, so a running product of one step
        (far cheaper than a complex exponential per bin; its rounding error stays under 1e-12)."""
        shifts = np.asarray(shifts, dtype=np.float64)
        steps = np.exp(-1j * (self.omega[1] - self.omega[0]) * shifts)
        out = np.empty((len(self.omega), len(shifts)), dtype=complex)
        out[0] = np.exp(-1j * self.omega[0] * shifts)
        out[1:] = steps
        return np.cumprod(out, axis=0)

    def columns(self, idx: Sequence[int], u: np.ndarray) -> np.ndarray:
        """a T_i exp(-j w u_i), one column per member in idx."""
        return self.at[:, list(idx)] * self.phasors(u[list(idx)])

    def residual(self, idx: Sequence[int], u: np.ndarray, g: np.ndarray) -> np.ndarray:
        if not len(idx):
            return self.c.copy()
        return self.c - self.columns(idx, u) @ g[list(idx)]

    def gains(self, idx: Sequence[int], u: np.ndarray, prior: np.ndarray, ridge: float = 0.05) -> np.ndarray:
        """Least-squares gains at fixed shifts, pulled toward `prior` (narrow-band programme cannot tell them)."""
        b = self.columns(idx, u)
        a = (b.conj().T @ b).real
        lam = ridge * float(np.mean(np.diag(a)) or 1.0)
        rhs = (b.conj().T @ self.c).real + lam * prior[list(idx)]
        return np.asarray(np.linalg.solve(a + lam * np.eye(len(idx)), rhs))

    def matched(self, i: int, r: np.ndarray) -> np.ndarray:
        """Member i's matched filter over every shift (real: the fit), scaled so its value at the member's shift
        is the member's gain there. A real inverse transform: half the cost of the analytic signal."""
        half = np.zeros(self.frame // 2 + 1, dtype=complex)
        half[self.bins] = self.at[:, i].conj() * r
        energy = float(np.sum(np.abs(self.at[:, i]) ** 2)) or 1.0
        return np.fft.irfft(half, self.frame) * (self.frame / 2) / energy

    def weighted_energy(self, i: int) -> float:
        return float(np.sum(self.a**2 * np.abs(self.t[i]) ** 2))

    def whitened(self, i: int, r: np.ndarray, beta: float = WHITEN) -> np.ndarray:
        """Member i's matched filter, partly whitened: programme with a few strong bands (bass, held notes) gives
        broad correlation lobes; dividing them down makes a moved member's peak stand out of them."""
        weight = np.abs(self.at[:, i]) ** 2
        d = np.power(weight + 1e-2 * float(weight.mean() or 1.0), beta)
        # Its envelope only is used, to find where to look: on every second shift (the band ends at a quarter of
        # the rate, so the analytic signal sampled at half the rate loses nothing), a transform half as long.
        n = self.frame // 2
        full = np.zeros(n, dtype=complex)
        keep = self.bins < n
        full[self.bins[keep]] = (self.at[:, i].conj() * r / d)[keep]
        env = np.fft.ifft(full) * n / (float(np.sum(weight / d)) or 1.0)
        return np.repeat(env, 2)  # back on every shift: the coarse search's resolution is two samples

    def _normal(self, cols: np.ndarray, g: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """J^T J and J^T r (real parts) of the residual's Jacobian in shifts then gains, J = [j w c_k g_k | -c_k],
        from three small products of the columns (never the bins x 2m Jacobian itself: 5x cheaper)."""
        w = cols * self.omega[:, None]
        ch = cols.conj().T
        s0, s1, s2 = ch @ cols, ch @ w, w.conj().T @ w
        v0, v1 = ch @ r, w.conj().T @ r
        gg = np.outer(g, g)
        h11 = gg * s2.real
        h12 = -g[:, None] * s1.imag
        h = np.block([[h11, h12], [h12.T, s0.real]])
        grad = np.concatenate([g * v1.imag, -v0.real])
        return h, grad

    def refine(self, idx: list[int], u: np.ndarray, g: np.ndarray, iterations: int = 10) -> tuple[np.ndarray, ...]:
        """Levenberg-Marquardt on every shift and gain of `idx` together; returns u, g, covariance, cost."""
        u, g = u.copy(), g.copy()
        m = len(idx)
        mu = 1e-3
        cols = self.columns(idx, u)
        r = self.c - cols @ g[idx]
        cost = float(np.vdot(r, r).real)
        for _ in range(iterations):
            h, grad = self._normal(cols, g[idx], r)
            accepted = False
            while mu <= 1e6:
                step = -np.linalg.solve(h + mu * np.diag(np.diag(h) + 1e-30), grad)
                step[:m] = np.clip(step[:m], -2.0, 2.0)
                un, gn = u.copy(), g.copy()
                un[idx] += step[:m]
                gn[idx] += step[m:]
                cols_n = self.columns(idx, un)
                r_n = self.c - cols_n @ gn[idx]
                new = float(np.vdot(r_n, r_n).real)
                if new <= cost:
                    u, g, cost, cols, r = un, gn, new, cols_n, r_n
                    mu = max(mu / 10, 1e-9)
                    accepted = True
                    break
                mu *= 10
            if not accepted or np.max(np.abs(step[:m])) < 1e-2:  # a hundredth of a sample: far inside sigma
                break
        h, _ = self._normal(cols, g[idx], r)
        dof = max(1.0, 2 * self.eff - 2 * m)
        try:
            cov = np.linalg.inv(h) * (cost / dof) * VARIANCE_FACTOR
        except np.linalg.LinAlgError:
            cov = np.full((2 * m, 2 * m), np.inf)
        return u, g, cov, np.array([cost])


def _wrap(k: int, n: int) -> int:
    return k - n if k >= n // 2 else k


def _best_cycle(real: np.ndarray, centre: float, half: int) -> tuple[int, float]:
    """The shift within `half` of `centre` where the matched filter's real part peaks (ties within 10% go to
    the one nearest the prediction), and the rival ratio: the best other cycle's peak over the chosen one's."""
    n = len(real)
    c = round(centre)
    shifts = np.arange(c - half, c + half + 1)
    vals = real[shifts % n]
    best = float(vals.max())
    if best <= 0:
        return c, 1.0
    # local maxima
    inner = (vals[1:-1] >= vals[:-2]) & (vals[1:-1] >= vals[2:])
    peaks = np.flatnonzero(inner) + 1
    if not len(peaks):
        peaks = np.array([int(np.argmax(vals))])
    peaks = np.union1d(peaks, [int(np.argmax(vals))])
    strong = peaks[vals[peaks] >= 0.9 * best]
    chosen = int(strong[np.argmin(np.abs(shifts[strong] - centre))])
    others = peaks[np.abs(peaks - chosen) > 6]
    rival = float(vals[others].max()) / float(vals[chosen]) if len(others) else 0.0
    return int(shifts[chosen]), max(0.0, rival)


def estimate(
    spec: Spectra,
    templates: Bank,
    predicted: Sequence[float | None],
    gains: Sequence[float] | None = None,
    spread: Sequence[float] | None = None,
    motion: np.ndarray | None = None,
    sparse: bool = False,
) -> Estimate:
    """Every member's arrival in one window. `predicted`: where each member is expected (samples after the
    group signal; None: unknown, look everywhere); `gains`: each member's level last seen (default 1.0);
    `spread`: how unsure each prediction is (standard deviation, samples; default: sure to within LOCAL/4). A
    member whose prediction is unsure (the tracker was blind while its clock drifted) is looked for over 4
    standard deviations either side with no preference for the prediction: with every member arriving at one
    time, the others' sound fits a missing member's template at the stale place well enough to pass for it.
    `motion`: members x frames, how far each member's arrival is, in each frame of `spec` (`spec.frame_at`),
    from where it is at the window's centre (`spec.middle`), as the caller knows it (its own corrections, the
    drift it has measured); the arrivals returned are then each member's at the centre.
    `sparse`: `spec` is a long window over sparse programme (`Listener.long_window`, `keep_sparse`), taken when the
    short one said "sparse": only a member that moved far (or returned) is looked for, see `_estimate_sparse`."""
    if sparse:
        result = _estimate_sparse(spec, templates, predicted, gains, spread, motion)
    else:
        result = _estimate(spec, templates, predicted, gains, spread, motion)
    return replace(result, compensated=True) if motion is not None and result.seen else result


def _estimate(
    spec: Spectra,
    templates: Bank,
    predicted: Sequence[float | None],
    gains: Sequence[float] | None,
    spread: Sequence[float] | None,
    motion: np.ndarray | None,
    sparse: bool = False,
    local_only: bool = False,
) -> Estimate:
    n = templates.members
    if len(predicted) != n or (spread is not None and len(spread) != n):
        raise ValueError("one prediction per template")
    x_db = 10 * math.log10(max(spec.mean_square(spec.power_x), 1e-30))

    def blind(state: WindowStatus, why: str) -> Estimate:
        """A window that shows no member: every one not seen, and why."""
        not_seen = tuple(_not("not-seen") for _ in range(n))
        return Estimate(state, spec.middle, not_seen, -math.inf, x_db, why, spec.frames, (spec.start, spec.stop))

    if not sparse and spec.frames < MIN_FRAMES and spec.dropped_sparse > spec.dropped_silent:
        why = f"the programme is too sparse to tell the members apart ({spec.dropped_sparse} sparse frames)"
        return blind("sparse", why)
    if spec.frames < MIN_FRAMES or x_db < SILENT_DBFS:
        why = (
            "no window yet"
            if spec.frames + spec.dropped_silent < MIN_FRAMES
            else f"the group signal is silent ({spec.dropped_silent} silent frames)"
        )
        return blind("silent", why)
    p = spec.power_x
    carrying = float(np.sum(p / (p + 1e-3 * float(p.mean() or 1.0))))  # as _Fit.eff
    if carrying < (MIN_LONG_BINS if sparse else SPARSE_BINS * len(spec.bins)):
        # A few held notes: each member's template is seen at a handful of frequencies, too few to tell eight
        # members apart or to choose between cycles (measured: 110-200 of 8000 bins carry sparse tonal passages,
        # 6000 speech, 7900 pop; estimates there were biased by several samples and sometimes whole cycles
        # while claiming sub-sample sigma). Blind, as in silence: nothing changes until the music fills out.
        why = f"the programme is too sparse to tell the members apart ({carrying:.0f} of {len(spec.bins)} bins)"
        return blind("sparse", why)
    fit = _Fit(spec, templates, motion)
    prior = np.array([1.0] * n if gains is None else [max(0.0, float(v)) for v in gains])
    known = [i for i in range(n) if predicted[i] is not None and math.isfinite(float(predicted[i] or 0.0))]
    u = np.zeros(n)
    for i in known:
        u[i] = float(predicted[i]) - spec.base - templates.arrivals[i]  # type: ignore[arg-type]
    g = np.zeros(n)
    if known:
        g[known] = fit.gains(known, u, prior)
    limit = int(SEARCH * spec.frame)
    half = {i: LOCAL for i in known}
    if spread is not None:
        for i in known:
            sd = float(spread[i])
            half[i] = limit if not math.isfinite(sd) else int(min(limit, max(LOCAL, math.ceil(4 * sd))))
    wide = {i for i in known if half[i] > LOCAL}
    if local_only and len(known) == n:
        # Every member fitted where expected, no search (a long sparse window's first look, see _estimate_sparse).
        return _finish(
            spec, templates, fit, list(range(n)), u, g, prior, np.zeros(n), np.full(n, math.nan), set(), x_db
        )
    if len(known) == n and not wide and all(g[i] >= FAST_GAIN * max(prior[i], 0.5) for i in known):
        # Everyone where expected (steady playback): a local fit only, no search.
        fast = _finish(
            spec, templates, fit, list(range(n)), u, g, prior, np.zeros(n), np.full(n, math.nan), set(), x_db
        )
        if all(
            m.status != "not-heard" and abs(m.arrival - float(p or 0.0)) < LOCAL
            for m, p in zip(fast.members, predicted, strict=True)
        ):
            return fast
    active = set(known) - wide
    for i in wide:
        g[i] = 0.0
    expected = {i: float(u[i]) for i in known}
    rivals = np.zeros(n)
    peaks = np.full(n, -math.inf)
    moved: set[int] = set()
    narrow = [i for i in known if i not in wide]
    order = sorted(narrow, key=lambda i: -prior[i]) + sorted(wide) + [i for i in range(n) if i not in known]
    # Coordinate descent with global moves: each member in turn, against what the others (as they stand)
    # leave, either stays near where it was expected, moves to where its own response fits much better, or is
    # not heard. A member that moved far is found by its template's shape at the new place.
    for _sweep in range(3):
        changed = False
        for i in order:
            r = fit.residual(sorted(active - {i}), u, g)
            # In a long sparse window only the wide (suspect) or unplaced members are searched far: the others
            # are held where expected (a search each, every sweep, was most of the tracker's CPU under drift).
            held = sparse and i in expected and i not in wide
            mf = fit.matched(i, r)
            white = mf if held else np.abs(fit.whitened(i, r))
            energy = fit.weighted_energy(i)
            best_local = (-1.0, 0, 0.0)  # (gain, shift, rival)
            if i in expected and i not in wide:
                shift, rival = _best_cycle(mf, expected[i], LOCAL)
                best_local = (float(mf[shift % spec.frame]), shift, rival)
            if held:
                k, pk, far_shift, far_rival = best_local[1], -math.inf, best_local[1], best_local[2]
            elif i in wide:  # unsure where: the best peak near the prediction, none preferred
                within = (expected[i] - half[i], expected[i] + half[i])
                k, _, pk = _global_peak(white, limit, None, within)
                far_shift, far_rival = _best_cycle(mf, k, 6)
                far_rival = max(far_rival, _rival_peak(white, k, within))
            else:
                k, _, pk = _global_peak(white, limit, expected.get(i))
                far_shift, far_rival = _best_cycle(mf, k, 6)
            far_gain = float(mf[far_shift % spec.frame])
            peaks[i] = pk
            red_local = max(best_local[0], 0.0) ** 2 * energy
            red_far = max(far_gain, 0.0) ** 2 * energy if pk >= MIN_PEAK_DB else 0.0
            floor = MIN_GAIN * max(prior[i], 0.5)
            if red_far > FAR_FACTOR * red_local and far_gain >= floor:
                new = (far_shift, far_gain, far_rival, True)
            elif best_local[0] >= floor:
                new = (best_local[1], best_local[0], best_local[2], False)
            else:
                if i in active:
                    active.discard(i)
                    g[i] = 0.0
                    changed = True
                continue
            far = new[3] and (i not in wide or abs(new[0] - expected[i]) > LOCAL)
            if i not in active or abs(new[0] - u[i]) > 1.5 or far != (i in moved):
                changed = True
            u[i], g[i], rivals[i] = new[0], new[1], new[2]
            active.add(i)
            if far:
                moved.add(i)
            else:
                moved.discard(i)
        if not changed:
            break
    placed = sorted(active)
    if not placed:
        none = tuple(_not("not-heard") for _ in range(n))
        return Estimate(
            "ok", spec.middle, none, -math.inf, x_db, "no member heard", spec.frames, (spec.start, spec.stop)
        )
    return _finish(spec, templates, fit, placed, u, g, prior, rivals, peaks, moved, x_db)


def _estimate_sparse(
    spec: Spectra,
    templates: Bank,
    predicted: Sequence[float | None],
    gains: Sequence[float] | None,
    spread: Sequence[float] | None,
    motion: np.ndarray | None,
) -> Estimate:
    """A long window over sparse programme (a few held notes): enough notes over 16 s to find a member that moved
    far, never sure enough to measure small moves (measured on bench tonal tracks: members in place fitted 1-5
    samples off, some a whole cycle, with sub-sample sigma). So each member is first fitted where expected; one
    that fits there badly (not heard, or placed off a sure prediction) is looked for widely while the others hold,
    and reported only if found far away, clearly (moved, not ambiguous). The members that stayed are reported
    "uncertain" and ambiguous: the controller follows nothing from them. A member not yet placed (returning) is
    looked for everywhere."""
    n = templates.members
    base = _estimate(spec, templates, predicted, gains, [0.5] * n, motion, sparse=True, local_only=True)
    if not base.seen:
        return base
    sd = [0.5] * n if spread is None else [float(v) for v in spread]
    out = list(base.members)
    suspects: list[tuple[float, int]] = []
    for i, m in enumerate(base.members):
        p = predicted[i]
        if p is None or not math.isfinite(float(p)):
            if not (m.status == "ok" and m.moved and not m.ambiguous):  # else found from nowhere (returning)
                out[i] = _not("not-heard")
            continue
        off = abs(m.arrival - float(p)) if math.isfinite(m.arrival) else math.inf
        if m.status != "not-heard":
            out[i] = replace(m, status="uncertain", ambiguous=True, moved=False)
        if m.status == "not-heard" or off > max(ALIAS, 3 * sd[i]):
            suspects.append((off, i))
    # One wide search per window, for the worst suspect (not heard, or farthest off): a jump moves one member;
    # several off at once (drift not yet known) would cost a search each, every window (measured: 15 % of a core).
    for _, i in sorted(suspects, reverse=True)[:1]:
        wide = [0.5] * n
        wide[i] = math.inf
        again = _estimate(spec, templates, predicted, gains, wide, motion, sparse=True).members[i]
        found = again.status == "ok" and again.moved and not again.ambiguous
        if found or again.status == "not-heard":
            out[i] = again
        else:
            out[i] = replace(again, status="uncertain", ambiguous=True, moved=False)
    why = "sparse programme: a long window, only far moves are looked for"
    return replace(base, members=tuple(out), reason=why, sparse=True)


def _finish(
    spec: Spectra,
    templates: Bank,
    fit: _Fit,
    placed: list[int],
    u: np.ndarray,
    g: np.ndarray,
    prior: np.ndarray,
    rivals: np.ndarray,
    peaks: np.ndarray,
    moved: set[int],
    x_db: float,
) -> Estimate:
    """The joint refinement of every placed member, the window's verdict and each member's."""
    n = templates.members
    u, g, cov, cost = fit.refine(placed, u, g)
    # The music at the microphone, as fitted: |X M|^2 summed, M the sum of the placed members' responses.
    response = (fit.t[placed].T * fit.phasors(u[placed])) @ g[placed]
    music = float(np.sum(np.abs(response) ** 2 * fit.power))
    rest = max(fit.q - music, 1e-30)
    mic_snr = 10 * math.log10(max(music, 1e-30) / rest)
    if mic_snr < MIN_MIC_SNR_DB:
        why = f"noise at the microphone is louder than the music ({mic_snr:.1f} dB)"
        return Estimate(
            "noisy",
            spec.middle,
            tuple(_not("not-seen") for _ in range(n)),
            mic_snr,
            x_db,
            why,
            spec.frames,
            (spec.start, spec.stop),
        )
    out = []
    for i in range(n):
        gain = float(g[i])
        if i not in placed or gain < MIN_GAIN * max(prior[i], 0.5):
            out.append(MemberEstimate("not-heard", math.nan, math.inf, max(gain, 0.0), float(peaks[i])))
            continue
        k = placed.index(i)
        var = float(cov[k, k])
        sigma = math.sqrt(var) if math.isfinite(var) and var >= 0 else math.inf
        arrival = spec.base + float(u[i]) + float(templates.arrivals[i])
        ambiguous = bool(rivals[i] > AMBIGUOUS)
        status: MemberStatus = "uncertain" if sigma > OK_SIGMA or ambiguous else "ok"
        out.append(MemberEstimate(status, arrival, sigma, gain, float(peaks[i]), i in moved, ambiguous))
    span = (spec.start, spec.stop)
    extra = {"cost": float(cost[0]), "bins_with_programme": fit.eff}
    return Estimate("ok", spec.middle, tuple(out), mic_snr, x_db, "", spec.frames, span, extra)


def _rival_peak(env: np.ndarray, k: int, within: tuple[float, float]) -> float:
    """The highest local maximum of the envelope in `within` (shifts) at least LOCAL from `k`, over the envelope
    at `k`: near 1, another place fits as well and the search cannot say which is the member."""
    n = len(env)
    lo, hi = math.ceil(within[0]), math.floor(within[1])
    shifts = np.arange(lo, hi + 1)
    vals = env[shifts % n]
    top = float(env[k % n])
    if len(vals) < 3 or top <= 0:
        return 0.0
    inner = (vals[1:-1] >= vals[:-2]) & (vals[1:-1] >= vals[2:])
    peaks = np.flatnonzero(inner) + 1
    peaks = peaks[np.abs(shifts[peaks] - k) > LOCAL]
    return float(vals[peaks].max()) / top if len(peaks) else 0.0


def _global_peak(
    env: np.ndarray, limit: int, away_from: float | None = None, within: tuple[float, float] | None = None
) -> tuple[int, float, float]:
    """The envelope's highest point within `limit` either side of zero shift, at least LOCAL from `away_from`
    and inside `within` (shifts) if given: (shift, height, dB over the envelope's median noise)."""
    n = len(env)
    idx = np.r_[0 : limit + 1, n - limit : n]
    seg = env[idx]
    noise = float(np.median(seg)) * 1.2 + 1e-30
    shifts = np.where(idx >= n // 2, idx - n, idx)
    if away_from is not None:
        seg = np.where(np.abs(shifts - away_from) > LOCAL, seg, 0.0)
    if within is not None:
        seg = np.where((shifts >= within[0]) & (shifts <= within[1]), seg, 0.0)
    k = int(np.argmax(seg))
    height = float(seg[k])
    return _wrap(int(idx[k]), n), height, 20 * math.log10(max(height, 1e-30) / noise)


def window_estimate(
    x: np.ndarray,
    y: np.ndarray,
    templates: Sequence[Template],
    predicted: Sequence[float | None],
    rate: int = RATE,
    gains: Sequence[float] | None = None,
) -> Estimate:
    """One estimate from a whole recording (group signal and microphone on one timeline): tests and `pwgroup
    track`'s one-shot measurement."""
    b = bank(templates, FRAME, rate)
    listener = Listener(rate, window_s=len(y) / rate)
    listener.feed(x, y)
    return estimate(listener.spectra(base_for(predicted, b)), b, predicted, gains)
