"""From successive estimates, which member's delay to change, by how much and when: pure, no I/O.

Each member's latency (its arrival at the microphone minus the delay pwgroup gives it) is followed by a small
Kalman filter of latency and drift rate, so a clock drifting at 100 ppm is followed ahead of the measurement's
lag rather than behind it. An arrival far from where it was expected is a jump only once two windows agree (one
odd window changes nothing). Corrections close the gap between each member and the group's common arrival (the
median of the members', so the members that did not move are left alone): at once for a jump (the speaker has
already skipped; one correction puts it back), in small steps for drift, and not at all inside a dead band or
while the estimate is not sure (steady playback makes no correction). Nothing changes while the tracker cannot
see (silence, noise louder than the music, a member not heard), except that through sparse programme and
silence a member whose drift rate is clearly known is followed by its prediction in drift steps (its clock goes
on; nothing is measured or found then, and noise louder than the music still changes nothing).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from pwgroup.track.estimate import Estimate

RATE = 48000

Reason = Literal["jump", "drift", "return"]
TrackState = Literal["tracking", "lost", "away"]


@dataclass(frozen=True)
class Settings:
    """The controller's thresholds, in milliseconds and seconds (`[tracking]` keys may set them)."""

    deadband_ms: float = 0.04  # a member this close to the others is left alone
    jump_ms: float = 1.0  # off by more than this: corrected in one go (the speaker already skipped)
    step_ms: float = 0.25  # the largest drift step
    significance: float = 3.0  # a gap must be this many standard deviations wide before it is corrected
    outlier_ms: float = 0.25  # an arrival this far (and 5 sigma) from the prediction is a jump candidate
    confirm: int = 2  # windows that must agree before a jump (or a returning member) is believed
    sigma_floor_ms: float = 0.006  # no estimate is surer than this (templates age, rooms change)
    settle_s: float = 0.2  # a window that began less than this after a large correction is not used
    max_delay_ms: float = 1000.0  # the delay element's limit
    latency_walk_ms: float = 0.002  # per sqrt(s): how fast a latency may wander without a jump
    rate_walk_ppm: float = 0.2  # per sqrt(s): how fast a drift rate may change
    rate_prior_ppm: float = 150.0  # drift rates are this large at most, at first
    reacquire_ms: float = 0.25  # a prediction less sure than this (one sd) is re-found: two windows must agree
    follow_uncertain: bool = True  # unsure (not ambiguous) estimates follow a member already found
    lead_s: float = 0.5  # corrections aim this far ahead (half the time between windows): drift is split around 0
    coast_s: float = 8.0  # a member seen this lately, its drift known, is followed through windows it sat out
    blind_coast_s: float = 180.0  # through sparse programme (music the estimator cannot split), this long
    follow_drift_when: tuple[str, ...] = ("sparse", "silent")  # blind windows through which known drift is followed
    coast_min_ppm: float = 1.0  # a drift this small (or not clearly known) is not followed blind


@dataclass(frozen=True)
class Correction:
    member: int
    delay: float  # the member's new delay, samples
    change: float  # samples (positive: later)
    reason: Reason
    at: float  # seconds (the controller's timeline) it was decided


@dataclass
class Member:
    """What the controller believes about one member."""

    latency: float  # samples: arrival minus delay, at time `t`
    rate: float = 0.0  # samples per second
    cov: np.ndarray = field(default_factory=lambda: np.diag([1.0, 1.0]))
    t: float = 0.0
    state: TrackState = "tracking"
    gain: float = 1.0
    pending: list[tuple[float, float, float]] = field(default_factory=list)  # (t, measured latency, variance)
    last_seen: float | None = None
    sigma: float = math.inf  # samples, of the last estimate used
    history: list[tuple[float, float]] = field(default_factory=list)  # (t, delay) from when it holds

    def latency_at(self, t: float) -> float:
        return self.latency + self.rate * (t - self.t)


@dataclass(frozen=True)
class View:
    """One member as status shows it."""

    member: int
    state: TrackState
    offset_ms: float | None  # its arrival against the group's, now (positive: late)
    sigma_ms: float | None
    drift_ppm: float | None
    last_seen_s: float | None
    delay_ms: float


class Controller:
    """Keeps a group aligned from estimates. `delays`: each member's delay now (samples); `arrivals`: each
    member's arrival at the microphone with those delays, as calibration measured it (samples)."""

    def __init__(
        self,
        delays: Sequence[float],
        arrivals: Sequence[float],
        rate: int = RATE,
        settings: Settings | None = None,
        start: float = 0.0,
    ) -> None:
        self.rate = rate
        self.s = settings or Settings()
        ms = rate / 1000.0
        self.ms = ms
        prior_rate = self.s.rate_prior_ppm * 1e-6 * rate
        self.members = [
            Member(a - d, 0.0, np.diag([(self.s.sigma_floor_ms * ms) ** 2, prior_rate**2]), start, history=[(-1e9, d)])
            for d, a in zip(delays, arrivals, strict=True)
        ]
        self.corrections: list[Correction] = []
        self.seeing: str = "not yet"  # ok | silent | noisy | not yet: what the last window said
        self.now = start

    # --- what the caller tells it

    def delay(self, i: int, at: float | None = None) -> float:
        return self.members[i].history[-1][1]

    def set_delay(self, i: int, delay: float, at: float) -> None:
        """The member's delay as it really is from `at` (seconds): after a correction or an outside change."""
        self.members[i].history.append((at, float(delay)))
        del self.members[i].history[:-64]

    def away(self, i: int) -> None:
        m = self.members[i]
        m.state, m.pending = "away", []

    def returned(self, i: int) -> None:
        """The member is back (perhaps with another latency): found again from the music before it is used."""
        m = self.members[i]
        m.state, m.pending = "lost", []

    # --- what the estimator needs

    def _mean_delay(self, i: int, a: float, b: float) -> float:
        hist = self.members[i].history
        total, t = 0.0, a
        for k, (since, d) in enumerate(hist):
            until = hist[k + 1][0] if k + 1 < len(hist) else math.inf
            lo, hi = max(since, a), min(until, b)
            if hi > lo:
                total += d * (hi - lo)
                t = hi
        del t
        return total / (b - a) if b > a else self.delay(i)

    def _smear(self, i: int, a: float, b: float) -> float:
        """How far the member's arrival moved within the window a..b (samples): its drift as known and its
        delay's changes. The estimate fits one place to it; the spread of places is the measurement's own error
        beyond what the fit can see (uniform: variance smear^2 / 12)."""
        m = self.members[i]
        moved = abs(m.rate) * (b - a)
        hist = m.history
        for k in range(1, len(hist)):
            if a <= hist[k][0] <= b:
                moved += abs(hist[k][1] - hist[k - 1][1])
        return moved

    def _changed_within(self, i: int, a: float, b: float) -> bool:
        """A large change of the member's delay between a and b."""
        hist = self.members[i].history
        for k in range(1, len(hist)):
            if a - self.s.settle_s <= hist[k][0] <= b and abs(hist[k][1] - hist[k - 1][1]) > self.s.jump_ms * self.ms:
                return True
        return False

    def predicted(self, start: float, stop: float, at: float | None = None) -> list[float | None]:
        """Where each member should arrive in a window from `start` to `stop` (seconds) whose measurement holds
        at `at` (default: the middle)."""
        mid = (start + stop) / 2 if at is None else at
        out: list[float | None] = []
        for i, m in enumerate(self.members):
            delay = self._mean_delay(i, start, stop) if at is None else self.delay_at(i, at)
            out.append(None if m.state != "tracking" else delay + m.latency_at(mid))
        return out

    def delay_at(self, i: int, t: float) -> float:
        """The member's delay at time t (seconds), from its history."""
        d = self.members[i].history[0][1]
        for since, value in self.members[i].history:
            if since <= t:
                d = value
        return d

    def motion(self, frames: Sequence[float], at: float) -> np.ndarray:
        """Members x frames: how far each member's arrival is at each frame time (seconds) from where it is at
        `at`, by what the controller knows: its own corrections and each member's measured drift."""
        out = np.zeros((len(self.members), len(frames)))
        for i, m in enumerate(self.members):
            if m.state != "tracking":
                continue
            ref = self.delay_at(i, at)
            out[i] = [self.delay_at(i, t) - ref + m.rate * (t - at) for t in frames]
        return out

    def spread(self, at: float) -> list[float]:
        """How unsure each prediction is at `at` (standard deviation, samples; inf when not tracking): grows while
        the tracker is blind by what an unknown drift rate could have moved the member since it was last seen."""
        out = []
        for m in self.members:
            if m.state != "tracking":
                out.append(math.inf)
                continue
            dt = max(0.0, at - m.t)
            var = m.cov[0, 0] + 2 * dt * m.cov[0, 1] + dt * dt * m.cov[1, 1]
            var += (self.s.latency_walk_ms * self.ms) ** 2 * dt
            out.append(math.sqrt(max(var, 0.0)))
        return out

    def gains(self) -> list[float]:
        return [m.gain for m in self.members]

    # --- the loop

    def update(self, est: Estimate, now: float) -> list[Correction]:
        """Take one estimate (its span on the controller's timeline, seconds = samples / rate) and return the
        corrections to make now; the caller makes them and they are recorded as made (`set_delay` otherwise)."""
        self.now = now
        self.seeing = est.status
        if est.status in self.s.follow_drift_when:
            # Music too sparse to tell the members apart, or none: a member whose drift is clearly known is
            # followed by its prediction in drift-sized steps (its clock does not stop because the music thinned
            # out or paused); nothing is measured, found, moved far or re-found. Noise changes nothing.
            return self._decide(now, set(), blind=True)
        if not est.seen:
            return []
        a, b = est.span[0] / self.rate, est.span[1] / self.rate
        mid = est.at / self.rate if a <= est.at / self.rate <= b else (a + b) / 2
        fresh = set()
        for i, (m, e) in enumerate(zip(self.members, est.members, strict=True)):
            if m.state == "away" or (not est.compensated and self._changed_within(i, a, b)):
                continue
            if est.compensated:  # measured at the centre, the member's own moves taken out
                z = e.arrival - self.delay_at(i, mid)
                var = max(e.sigma, self.s.sigma_floor_ms * self.ms) ** 2
            else:
                z = e.arrival - self._mean_delay(i, a, b)
                var = max(e.sigma, self.s.sigma_floor_ms * self.ms) ** 2 + self._smear(i, a, b) ** 2 / 12
            if e.status == "uncertain" and not e.moved and not e.ambiguous and self.s.follow_uncertain:
                # Sparse programme: not sure enough to find a member, sure enough to follow one already found.
                if self._follow(m, mid, z, var):
                    fresh.add(i)
                continue
            if e.status != "ok":
                continue
            m.gain = 0.8 * m.gain + 0.2 * e.gain
            if self._measure(m, mid, z, var):
                fresh.add(i)
        if est.sparse:
            # A long window over sparse programme: a member found far away is moved as usual; the others were
            # not measured, and their known drift is followed as through any sparse passage.
            made = self._decide(now, fresh, only=fresh)
            return made + self._decide(now, set(), blind=True, skip=fresh)
        return self._decide(now, fresh)

    def _predict(self, m: Member, t: float) -> None:
        dt = t - m.t
        if dt <= 0:
            return
        f = np.array([[1.0, dt], [0.0, 1.0]])
        q_l = (self.s.latency_walk_ms * self.ms) ** 2 * dt
        q_r = (self.s.rate_walk_ppm * 1e-6 * self.rate) ** 2 * dt
        m.latency, m.t = m.latency + m.rate * dt, t
        m.cov = f @ m.cov @ f.T + np.diag([q_l, q_r])

    def _measure(self, m: Member, t: float, z: float, var: float) -> bool:
        """Take one measured latency; True when the member's state now rests on it."""
        if m.state == "lost":
            return self._confirm(m, t, z, var, returning=True)
        self._predict(m, t)
        innovation = z - m.latency
        s = m.cov[0, 0] + var
        if m.cov[0, 0] > (self.s.reacquire_ms * self.ms) ** 2:
            # Blind long enough for an unknown drift to have moved it: the estimator looked for it widely, so one
            # window's answer could be anything there; it is believed when two agree, as a jump is.
            return self._confirm(m, t, z, var, returning=False)
        if abs(innovation) > max(5 * math.sqrt(s), self.s.outlier_ms * self.ms):
            return self._confirm(m, t, z, var, returning=False)
        m.pending = []
        self._kalman(m, z, var)
        m.last_seen, m.sigma = t, math.sqrt(var)
        return True

    @staticmethod
    def _kalman(m: Member, z: float, var: float) -> None:
        """The measurement update of latency and rate by one measured latency (the state already predicted)."""
        innovation = z - m.latency
        s = m.cov[0, 0] + var
        gain = m.cov[:, 0] / s
        m.latency += gain[0] * innovation
        m.rate += gain[1] * innovation
        m.cov = m.cov - np.outer(gain, m.cov[0, :])

    def _follow(self, m: Member, t: float, z: float, var: float) -> bool:
        """An unsure measurement, used only to follow a member whose place is known: taken when it agrees with
        the prediction (3 sd of both), never to find, re-find or move a member far (that needs sure windows)."""
        if m.state != "tracking" or m.last_seen is None:
            return False
        dt = max(0.0, t - m.t)
        p00 = m.cov[0, 0] + 2 * dt * m.cov[0, 1] + dt * dt * m.cov[1, 1]
        if p00 > (self.s.reacquire_ms * self.ms) ** 2 or var > (self.s.reacquire_ms * self.ms / 2) ** 2:
            return False
        if abs(z - m.latency_at(t)) > 3 * math.sqrt(p00 + var):
            return False
        self._predict(m, t)
        self._kalman(m, z, var)
        m.last_seen, m.sigma = t, math.sqrt(var)
        return True

    def _confirm(self, m: Member, t: float, z: float, var: float, returning: bool) -> bool:
        """A jump (or a return) is believed when `confirm` windows in a row put the member at one place."""
        near = 0.5 * self.ms + 3 * math.sqrt(var)
        if m.pending and abs(z - (m.pending[-1][1] + m.rate * (t - m.pending[-1][0]))) > near:
            m.pending = []
        m.pending.append((t, z, var))
        if len(m.pending) < self.s.confirm:
            return False
        # Start again from the first agreeing window and filter the others in, so the windows that confirmed
        # the place also say how fast it moves (a re-found drifting member keeps its drift known).
        points, m.pending = m.pending, []
        prior_rate = self.s.rate_prior_ppm * 1e-6 * self.rate
        t0, z0, v0 = points[0]
        m.latency, m.t = z0, t0
        m.cov = np.diag([v0, m.cov[1, 1] if not returning else prior_rate**2])
        if returning:
            m.rate = 0.0
        for tk, zk, vk in points[1:]:
            self._predict(m, tk)
            self._kalman(m, zk, vk)
        m.state = "tracking"
        m.last_seen, m.sigma = t, math.sqrt(var)
        return True

    def _target(self, t: float, blind: bool = False) -> float | None:
        live = [(i, m) for i, m in enumerate(self.members) if m.state == "tracking"]
        if not live:
            return None
        lat = {i: self._blind_latency(m, t) if blind else m.latency_at(t) for i, m in live}
        arrivals = [self.delay(i) + lat[i] for i, _ in live]
        target = statistics.median(arrivals)
        slowest, fastest = max(lat.values()), min(lat.values())
        return min(max(target, slowest), fastest + self.s.max_delay_ms * self.ms)

    def _blind_latency(self, m: Member, t: float) -> float:
        """Where a member is while the tracker cannot tell the members apart: moved on by its drift if that is
        clearly known, else where it was last seen (an unknown rate's noise is not followed)."""
        if m.last_seen is None or not self._drift_known(m, m.last_seen):
            return m.latency_at(m.t)
        return m.latency_at(min(t, m.last_seen + self.s.blind_coast_s))

    def _coasting(self, m: Member, now: float) -> bool:
        """A member not measured in this window (its window straddled its own last correction) whose drift is
        known well enough to follow for a few seconds more: seen lately, its prediction still sure."""
        if m.last_seen is None or now - m.last_seen > self.s.coast_s:
            return False
        dt = max(0.0, now - m.t)
        var = m.cov[0, 0] + 2 * dt * m.cov[0, 1] + dt * dt * m.cov[1, 1]
        return var < (self.s.reacquire_ms * self.ms / 2) ** 2

    def _drift_known(self, m: Member, now: float) -> bool:
        """Its drift followed blind: seen within `blind_coast_s`, its drift rate (as last measured: it does not
        change while blind, so neither does this answer) clearly away from zero, `significance` standard
        deviations and at least `coast_min_ppm`."""
        if m.last_seen is None or now - m.last_seen > self.s.blind_coast_s:
            return False
        rate_sd = math.sqrt(max(m.cov[1, 1], 0.0))
        return abs(m.rate) > max(self.s.significance * rate_sd, self.s.coast_min_ppm * 1e-6 * self.rate)

    def _decide(
        self,
        now: float,
        fresh: set[int],
        blind: bool = False,
        only: set[int] | None = None,
        skip: frozenset[int] | set[int] = frozenset(),
    ) -> list[Correction]:
        """Corrections for the members measured just now (`fresh`), or measured lately with their drift known
        (`_coasting`); after a window that saw, or (`blind`) one whose programme was too sparse to split, where
        only members whose drift is clearly known are followed, by their prediction, in drift steps."""
        aim = now + self.s.lead_s  # drift is corrected for the middle of the time until the next window
        target = self._target(aim, blind)
        if target is None:
            return []
        out = []
        for i, m in enumerate(self.members):
            if m.state != "tracking" or i in skip or (only is not None and i not in only):
                continue
            if blind:
                # Every member follows the known drifts, its own (`_blind_latency`) or the group's (the target
                # moves when the member that sets it drifts, or was found far away in a long sparse window).
                pass
            elif not (i in fresh or self._coasting(m, now)):
                continue
            current = self.delay(i)
            gap = target - (self._blind_latency(m, aim) if blind else m.latency_at(aim)) - current
            sure = math.sqrt(max(m.cov[0, 0], 0.0))
            if blind:
                # The prediction's own error grows while blind, but the drift it follows is known: the gap the
                # known rate opened is closed in drift steps. A jump only when the target itself jumped (another
                # member found far away): nothing measured about this one says it moved.
                if abs(gap) <= self.s.deadband_ms * self.ms:
                    continue
                limit = self.s.step_ms * self.ms
                change, reason = max(-limit, min(limit, gap)), "drift"
                if abs(gap) > self.s.jump_ms * self.ms:
                    change, reason = gap, "jump"
            elif abs(gap) > self.s.jump_ms * self.ms:
                change, reason = gap, "jump"
            elif abs(gap) > self.s.deadband_ms * self.ms and abs(gap) > self.s.significance * sure:
                limit = self.s.step_ms * self.ms
                change, reason = max(-limit, min(limit, gap)), "drift"
            else:
                continue
            new = min(max(current + change, 0.0), self.s.max_delay_ms * self.ms)
            if new == current:
                continue
            c = Correction(i, new, new - current, reason, now)  # type: ignore[arg-type]
            self.set_delay(i, new, now)
            self.corrections.append(c)
            out.append(c)
        return out

    def view(self, now: float) -> list[View]:
        target = self._target(now)
        out = []
        for i, m in enumerate(self.members):
            tracked = m.state == "tracking" and target is not None
            offset = (self.delay(i) + m.latency_at(now) - target) / self.ms if tracked and target is not None else None
            out.append(
                View(
                    i,
                    m.state,
                    offset,
                    math.sqrt(max(m.cov[0, 0], 0.0)) / self.ms if tracked else None,
                    m.rate / self.rate * 1e6 if tracked else None,
                    m.last_seen,
                    self.delay(i) / self.ms,
                )
            )
        return out
