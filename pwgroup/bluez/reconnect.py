"""Bringing an absent speaker back: Connect() with exponential backoff and jitter, a cap, reset on success,
and a stop after repeated authentication failures (retrying a rejected key only floods the speaker).

`Reconnect` is the pure policy (time and randomness passed in); `reconnect()` drives it from asyncio.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from pwgroup.bluez.errors import AuthenticationFailed, BluetoothError

State = Literal["idle", "waiting", "connecting", "connected", "gave-up"]


@dataclass(frozen=True)
class Backoff:
    """Attempt n (from 0) waits min(cap, first * factor**n), then +-jitter of that, never above cap."""

    first: float = 1.0
    factor: float = 2.0
    cap: float = 60.0
    jitter: float = 0.2  # a fraction: speakers that dropped together do not all retry in the same instant
    max_auth_failures: int = 3

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.cap, self.first * self.factor ** min(attempt, 64))
        return min(self.cap, max(0.0, base * (1.0 + self.jitter * (2.0 * rng.random() - 1.0))))


class Reconnect:
    """One speaker's reconnect state. Feed it what happened; ask it when to try next and what to show."""

    def __init__(self, backoff: Backoff | None = None, rng: random.Random | None = None) -> None:
        self.backoff = backoff or Backoff()
        self.rng = rng or random.Random()
        self.state: State = "idle"
        self.failures = 0  # consecutive failed attempts, for the schedule
        self.auth_failures = 0  # consecutive authentication failures
        self.next_at: float | None = None
        self.last_error = ""

    def lost(self, now: float) -> None:
        """The speaker is absent: try at once (a fresh loss is usually a short one)."""
        if self.state in ("idle", "connected"):
            self.state = "waiting"
            self.next_at = now

    def due(self, now: float) -> bool:
        return self.state == "waiting" and self.next_at is not None and now >= self.next_at

    def attempting(self) -> None:
        self.state = "connecting"

    def succeeded(self) -> None:
        self.state = "connected"
        self.failures = self.auth_failures = 0
        self.next_at = None
        self.last_error = ""

    def failed(self, now: float, error: BluetoothError) -> None:
        self.last_error = error.reason or error.name or error.message
        if isinstance(error, AuthenticationFailed):
            self.auth_failures += 1
            if self.auth_failures >= self.backoff.max_auth_failures:
                self.state = "gave-up"
                self.next_at = None
                return
        else:
            self.auth_failures = 0
        self.next_at = now + self.backoff.delay(self.failures, self.rng)
        self.failures += 1
        self.state = "waiting"

    def status(self, now: float) -> str:
        """What a user sees: 'waiting 8 s', 'connecting', 'connected', 'giving up: auth failed'."""
        if self.state == "waiting" and self.next_at is not None:
            return f"waiting {max(0, round(self.next_at - now))} s"
        if self.state == "gave-up":
            return "giving up: auth failed"
        return self.state


async def reconnect(
    address: str,
    connect: Callable[[str], Awaitable[None]],
    policy: Reconnect,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_status: Callable[[str, str], None] | None = None,
) -> bool:
    """Call `connect(address)` on the policy's schedule until it succeeds (True) or the policy gives up
    (False). `on_status(address, text)` hears every change; cancel the task to stop early."""

    def tell() -> None:
        if on_status is not None:
            on_status(address, policy.status(clock()))

    policy.lost(clock())
    while True:
        if policy.state == "gave-up":
            tell()
            return False
        if not policy.due(clock()):
            tell()
            await sleep(max(0.0, (policy.next_at or clock()) - clock()))
            continue
        policy.attempting()
        tell()
        try:
            await connect(address)
        except BluetoothError as err:
            policy.failed(clock(), err)
            continue
        policy.succeeded()
        tell()
        return True
