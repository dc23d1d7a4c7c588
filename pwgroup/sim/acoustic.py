"""An offline acoustic model of speakers in a room, for benchmarks and unit tests: numpy, no I/O, no server.

Each speaker has a tonal colour (full range, a small one with no bass below ~200 Hz, one with a treble lift),
a distance to the microphone (delay and level), reflections and a reverberant tail, and a time-varying delay
(its latency: clock drift in ppm of either sign, jumps with no graph event, absences). `Scene.render` turns the
group's signal into what the microphone hears, block by block, with noise at the microphone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

RATE = 48000
SOUND_MPS = 343.0
Colour = Literal["full", "small", "bright"]
COLOURS: tuple[Colour, ...] = ("full", "small", "bright")
BLOCK = 8192  # render block: delays are constant within one (a 100 ppm drift moves 0.8 samples per block)


def _min_phase(magnitude: np.ndarray, n: int) -> np.ndarray:
    """A minimum-phase FIR of length n with the given magnitude on rfft bins of size 2n (cepstral method)."""
    log_mag = np.log(np.maximum(magnitude, 1e-6))
    cep = np.fft.irfft(log_mag, 2 * n)
    fold = np.zeros_like(cep)
    fold[0] = cep[0]
    fold[1:n] = 2 * cep[1:n]
    fold[n] = cep[n]
    h = np.fft.irfft(np.exp(np.fft.rfft(fold)), 2 * n)[:n]
    return h * np.hanning(2 * n)[n:]  # a gentle fade of the tail


def colour_response(colour: Colour, rate: int = RATE, n: int = 1024) -> np.ndarray:
    """A speaker's own impulse response: its tonal colour, minimum phase (a real driver's is close to it)."""
    f = np.fft.rfftfreq(2 * n, 1.0 / rate)
    f = np.maximum(f, 1.0)
    # Every speaker: 2nd-order roll-offs at its low corner and at 16 kHz.
    low = {"full": 60.0, "small": 200.0, "bright": 90.0}[colour]
    order = {"full": 2, "small": 4, "bright": 2}[colour]
    mag = 1.0 / np.sqrt(1 + (low / f) ** (2 * order)) / np.sqrt(1 + (f / 16000.0) ** 4)
    if colour == "bright":  # a shelf: +8 dB above ~4 kHz
        mag = mag * (1 + (10 ** (8 / 20) - 1) / (1 + (4000.0 / f) ** 2))
    if colour == "small":  # a small box: a bump at its resonance
        mag = mag * (1 + 0.6 / (1 + ((f - 260.0) / 60.0) ** 2))
    return _min_phase(mag, n)


@dataclass(frozen=True)
class Placement:
    distance_m: float
    reflections: tuple[tuple[float, float], ...]  # (extra path in metres, gain relative to the direct sound)
    rt60_s: float  # reverberation time of the diffuse tail
    tail_db: float  # level of the tail's start relative to the direct sound


def place(rng: np.random.Generator, reverberant: bool = True) -> Placement:
    """A random spot in a living room: 1.5-5 m from the microphone, 5-9 early reflections, a diffuse tail."""
    distance = float(rng.uniform(1.5, 5.0))
    count = int(rng.integers(5, 10)) if reverberant else 0
    refl = tuple(
        (float(rng.uniform(0.4, 9.0)), float(rng.uniform(0.25, 0.7)) * float(rng.choice([1.0, 1.0, -1.0])))
        for _ in range(count)
    )
    return Placement(distance, refl, float(rng.uniform(0.3, 0.6)) if reverberant else 0.0, -12.0)


def room_response(p: Placement, rng: np.random.Generator, rate: int = RATE, length: int = 14000) -> np.ndarray:
    """The room's impulse response from a speaker to the microphone: direct sound at its distance, reflections
    (image sources, each a little duller), and an exponentially decaying diffuse tail."""
    h = np.zeros(length)
    direct = p.distance_m / SOUND_MPS * rate

    def put(at: float, gain: float) -> None:
        i = int(at)
        frac = at - i
        taps = np.arange(-8, 9)
        kernel = np.sinc(taps - frac) * np.blackman(19)[1:-1]
        lo = i - 8
        if lo >= 0 and lo + 17 <= length:
            h[lo : lo + 17] += gain * kernel

    put(direct, 1.0 / p.distance_m)
    for extra, g in p.reflections:
        put(direct + extra / SOUND_MPS * rate, g / (p.distance_m + extra))
    if p.rt60_s > 0:
        start = int(direct + 0.004 * rate)
        t = np.arange(length - start) / rate
        tail = rng.standard_normal(len(t)) * np.exp(-6.91 * t / p.rt60_s)
        tail *= np.minimum(1.0, t / 0.01)  # the diffuse field builds up over ~10 ms
        h[start:] += tail * 10 ** (p.tail_db / 20) / p.distance_m
        h[-256:] *= np.linspace(1.0, 0.0, 256)
    return h


@dataclass
class Speaker:
    """One speaker as the microphone hears it, and its latency now (samples, float: drift moves it smoothly)."""

    response: np.ndarray  # colour and room: what one sample sent to this speaker becomes at the microphone
    latency: float  # samples from the group's signal to the speaker's output (its buffer, its codec)
    drift_ppm: float = 0.0  # its clock against the host's: the latency grows by drift_ppm * 1e-6 per sample
    present: bool = True  # False while it is away (disconnected): it plays nothing


def make_speaker(
    rng: np.random.Generator,
    colour: Colour,
    latency_ms: float,
    rate: int = RATE,
    reverberant: bool = True,
    length: int = 14000,
) -> Speaker:
    room = room_response(place(rng, reverberant), rng, rate, length)
    h = np.convolve(room, colour_response(colour, rate))[:length]
    return Speaker(h, latency_ms * rate / 1000)


class Scene:
    """Speakers fed by one group signal through delay lines, heard by one microphone, rendered block by block.

    The delay of speaker i at a block is `delays[i] + speaker.latency` (the controller sets `delays`; the
    speaker's latency drifts, jumps, or it is away). Delays hold for a block; the fractional part is applied as
    a phase ramp on the speaker's response, the whole part by indexing the programme.
    """

    def __init__(
        self,
        programme: np.ndarray,
        speakers: Sequence[Speaker],
        delays: Sequence[float],
        noise_rms: float = 0.0,
        rate: int = RATE,
        seed: int = 0,
        block: int = BLOCK,
    ) -> None:
        self.x = np.asarray(programme, dtype=np.float64)
        self.speakers = list(speakers)
        self.delays = [float(d) for d in delays]
        self.noise_rms = noise_rms
        self.rate = rate
        self.block = block
        self.rng = np.random.default_rng([seed, 7])
        longest = max(len(s.response) for s in self.speakers)
        self.nfft = 1 << math.ceil(math.log2(block + longest + 32))
        self.spectra = [np.fft.rfft(s.response, self.nfft) for s in self.speakers]
        self.omega = 2 * np.pi * np.fft.rfftfreq(self.nfft)
        self.pos = 0  # next sample to render
        self.tail = np.zeros(self.nfft)

    def arrival(self, i: int) -> float:
        """Speaker i's whole delay now (delay line + latency), samples; what alignment keeps equal across."""
        return self.delays[i] + self.speakers[i].latency

    def _chunk(self, start: int, n: int) -> np.ndarray:
        out = np.zeros(n)
        lo, hi = max(0, start), min(len(self.x), start + n)
        if hi > lo:
            out[lo - start : hi - start] = self.x[lo:hi]
        return out

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        """The next block: (group signal, microphone), float64, both on the group signal's timeline. Drifting
        latencies advance by one block."""
        n, start = self.block, self.pos
        acc = np.zeros(self.nfft // 2 + 1, dtype=complex)
        for i, spk in enumerate(self.speakers):
            if not spk.present:
                continue
            d = self.arrival(i) + spk.drift_ppm * 1e-6 * n / 2  # the block's middle
            whole = math.floor(d)
            chunk = self._chunk(start - whole, n)
            acc += np.fft.rfft(chunk, self.nfft) * self.spectra[i] * np.exp(-1j * self.omega * (d - whole))
        out = np.fft.irfft(acc, self.nfft)
        out[: self.nfft - n] += self.tail[n:]
        self.tail = out
        mic = out[:n].copy()
        if self.noise_rms > 0:
            mic += self.rng.normal(0.0, self.noise_rms, n)
        for spk in self.speakers:
            spk.latency += spk.drift_ppm * 1e-6 * n
        self.pos += n
        return self._chunk(start, n), mic


def music_level(programme: np.ndarray, speakers: Sequence[Speaker], delays: Sequence[float], seconds: float = 20.0,
                rate: int = RATE, start: float = 0.0) -> float:  # fmt: skip
    """RMS of the music at the microphone over the sounding part of `seconds` of programme from `start`: what
    noise at the microphone is set against."""
    a = round(start * rate)
    part = np.asarray(programme[a : a + round(seconds * rate)], dtype=np.float64)
    scene = Scene(part, [Speaker(s.response, s.latency) for s in speakers], delays, 0.0, rate)
    mic = np.concatenate([scene.render()[1] for _ in range(math.ceil(len(part) / scene.block))])
    level = np.convolve(mic**2, np.ones(rate // 10) / (rate // 10), "same")
    loud = level > 1e-4 * float(level.max() or 1.0)
    return float(np.sqrt(np.mean(mic[loud] ** 2))) if loud.any() else 0.0


def calibration_recording(
    speaker: Speaker, signal: np.ndarray, noise_rms: float = 0.0, rate: int = RATE, seed: int = 0, tail_s: float = 0.8
) -> tuple[np.ndarray, np.ndarray]:
    """What calibration records when `signal` is played to one speaker alone (delay line at zero): the
    reference on the recording's timeline and the microphone."""
    n = len(signal) + round(tail_s * rate)
    ref = np.zeros(n)
    ref[: len(signal)] = signal
    scene = Scene(ref, [Speaker(speaker.response, speaker.latency)], [0.0], noise_rms, rate, seed)
    mic = np.concatenate([scene.render()[1] for _ in range(math.ceil(n / scene.block))])[:n]
    return ref, mic
