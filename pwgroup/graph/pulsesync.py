"""The PulseAudio loopback controller: how a member's line joins muted and is heard once settled, and how a delay
change swaps a settled new line in for the old one. It decides; the adapter (pulse.py) does the server I/O.

The adapter hands itself in as the `LineServer`; this module reads none of the server's protocol and imports
nothing of the adapter at run time. Time is passed in: `wall` stamps a swap's deadline on the server (it must
outlive this process), and `joining(..., now)` reads those stamps against a given time.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from pwgroup.graph import layout

if TYPE_CHECKING:
    from pwgroup.graph.pulse import PaStream, Record

log = logging.getLogger(__name__)

# A loopback's latency_msec is an end-to-end target: it counts the speaker sink's own reported latency (and
# its port latency offset) inside it. A member with delay 0 therefore plays BASE_MS after the group sink's
# monitor, and a speaker whose sink reports more than that cannot be held to its delay.
BASE_MS = 150
# A new loopback starts a few samples to ~50 ms off its target (most off where its speaker's sink is new, as on
# a speaker's return); only its rate control brings it in, at up to 1 % (10 ms a second): without it a loopback
# keeps its first error for good. That control is what holds members together. PulseAudio 16.1 sets a
# whole-Hz rate once per adjust_time (module-loopback.c:353) and its drift filter learns 1/8 per step (line
# 64): at the default 1 s a settled member still wandered up to 17 samples (0.35 ms) off the others; at 0.1 s
# (the least 16.1 accepts) members hold within a sample of their targets in the room. In an earlier series at
# 0.1 s, run beside other test runs on the same 2 cores, the delay-change and re-add tests heard 70-210 ms gaps
# in 3 of 11 runs; not seen since (alone, and beside a second test run). Measured on PulseAudio 16.1 in the
# room (bench/delays.py, tests/test_integration_delays.py).
ADJUST_TIME_S = 0.1
ADJUST_THRESHOLD_USEC = 10
# How long a new loopback settles, muted, before it takes over from the old one at a delay change (with 3 s,
# the delay-change test heard gaps at the swap). Measured on PulseAudio 16.1.
CONVERGE_S = 5.0
# A joining loopback (a member added, or its speaker back) stays muted until its rate control has pulled its
# start error in, so a speaker is never heard off its delay. PulseAudio shows the rate that control sets on the
# sink input: up to 1 % off while it pulls, then steady within drift, and in step with the group's other lines
# once its error is theirs (line_settled). Seen in the room: a returning speaker's line ~475 Hz off for ~6 s,
# then 7-10 Hz off like the others (the null sinks' ~190 ppm); a new group's lines all pulling together.
SETTLED_OFF = 0.005
SETTLED_JITTER_HZ = 4
SETTLED_STEADY_S = 1.0
SETTLED_START_S = 3.0
JOIN_TIMEOUT_S = 15.0
# How long a delay change may take before its new line is taken for one left by a pwgroup that stopped midway.
SWAP_GRACE_S = CONVERGE_S + JOIN_TIMEOUT_S + 10.0
FILL_MARGIN_S = 0.3  # a fresh loopback plays its initial silence for its latency; this much more, it holds audio
# The record of a delay change's new line: until this wall-clock second its muted line stands in as the member's
# link beside the old one; after it (the pwgroup that made it stopped mid-change) it is a joining line.
PROP_SWAP_UNTIL = "pwgroup.swap.until"


# ---------------------------------------------------------------- the rules (pure)


def joining(records: Iterable[Record], links: Iterable[tuple[PaStream, int]], now: float) -> set[int]:
    """Sink inputs of loopbacks still settling, muted: not links yet. Except a delay change's new line, muted
    beside the old one that plays, while its change is under way (PROP_SWAP_UNTIL, against `now`).
    `links` are the loopbacks as (sink input, index of the record source it reads)."""
    by_source = {r.source.index: r for r in records}

    def member(source: int) -> tuple[str, str] | None:
        return (by_source[source].group, by_source[source].member) if source in by_source else None

    def swapping(source: int) -> bool:
        until = by_source[source].source.props.get(PROP_SWAP_UNTIL, "") if source in by_source else ""
        return until.isdigit() and int(until) > now

    lines = list(links)
    playing = {(member(src), si.target) for si, src in lines if not si.mute}
    return {si.index for si, src in lines if si.mute and not (swapping(src) and (member(src), si.target) in playing)}


def line_settled(seen: Sequence[tuple[float, int, float | None]], base: int) -> bool:
    """Whether a joining loopback has pulled its start error in, from what was seen of it every adjust_time:
    (monotonic time, its rate, the median rate of the group's playing lines or None). Settled: its control has
    begun (the rate left `base` once, or SETTLED_START_S went by: an idle group sink may first render after
    2 s), and for SETTLED_STEADY_S the rate was steady, not pulling (within SETTLED_OFF of `base`), and in step
    with the other lines, which means the same error as theirs."""
    if not seen or seen[-1][0] - seen[0][0] < SETTLED_STEADY_S:
        return False
    now = seen[-1][0]
    started = any(r != base for _, r, _ in seen) or now - seen[0][0] >= SETTLED_START_S
    recent = [(r, o) for t, r, o in seen if t >= now - SETTLED_STEADY_S]
    rates = [r for r, _ in recent]
    return (
        started
        and max(rates) - min(rates) <= SETTLED_JITTER_HZ
        and all(abs(r - base) <= SETTLED_OFF * base for r in rates)
        and all(o is None or abs(r - o) <= SETTLED_JITTER_HZ for r, o in recent)
    )


# ---------------------------------------------------------------- what the controller asks of the adapter


class LineServer(Protocol):
    """The adapter's side: its latest snapshot of the server, re-read on request, and the module changes."""

    def records(self) -> list[Record]:
        """Every member record in the latest snapshot, oldest first."""
        ...

    def lines(self) -> list[tuple[PaStream, int]]:
        """pwgroup's loopbacks in the latest snapshot, as (sink input, record source index)."""
        ...

    def source_read_by(self, module: int | None) -> int | None:
        """The source a module's source output reads, in the latest snapshot."""
        ...

    async def reread(self) -> None:
        """Read the server again into the snapshot."""
        ...

    async def load_record(self, group: str, member: str, delay_ms: int, monitor: int, swap_until: int) -> Record:
        """A new record of `member` over the monitor source `monitor`, stamped with its swap deadline."""
        ...

    async def load_line(self, rec: Record, sink: int) -> PaStream:
        """A loopback from `rec` into `sink`, muted before it can be heard."""
        ...

    async def unload(self, module: int | None) -> None: ...

    async def unmute_line(self, index: int) -> None:
        """Unmute a line; one already gone is left be."""
        ...

    async def swap_mutes(self, unmute: Sequence[int], mute: Sequence[int]) -> None:
        """Unmute and mute lines in one write, in that order."""
        ...

    async def group_line_rates(self, group: str | None) -> list[tuple[int, int, bool]] | None:
        """(sink input, rate, muted) of each line of `group`, None if the server refused."""
        ...

    async def line_base_rate(self, line: PaStream) -> int | None:
        """The rate a line reads its record at (its source output's), None if it is gone or the server refused."""
        ...

    async def wait_gone(self, source: int, timeout: float, what: str) -> None:
        """Until the source is gone from the server."""
        ...


class LoopbackSync:
    """Joins and swaps of member lines, over one adapter. `wall` is the clock a swap's deadline is stamped in."""

    def __init__(self, server: LineServer, wall: Callable[[], float] = time.time) -> None:
        self.server = server
        self.wall = wall
        self._joins: dict[int, asyncio.Task[None]] = {}

    def joining_now(self) -> set[int]:
        return joining(self.server.records(), self.server.lines(), self.wall())

    async def take_up(self, rec: Record, sink: int) -> PaStream | None:
        """The line of `rec` into `sink` that is still to join, loaded muted if there is none; None if it plays
        (a line left muted by a pwgroup that stopped meanwhile is not a link, and is taken up again here). The
        caller holds the snapshot fresh and keeps two of these for one member from running side by side."""
        for si, src in self.server.lines():
            if src == rec.source.index and si.target == sink:
                return si if si.index in self.joining_now() else None
        return await self.server.load_line(rec, sink)

    async def join(self, line: PaStream) -> None:
        """Until `line` is heard: it settles muted, then is unmuted. One join per line, however many ask."""
        task = self._joins.get(line.index)
        if task is None:
            task = self._joins[line.index] = asyncio.create_task(self._join(line))
            task.add_done_callback(functools.partial(self._forget_join, line.index))
        await asyncio.shield(task)

    def _forget_join(self, index: int, _task: asyncio.Task[None]) -> None:
        self._joins.pop(index, None)

    def close(self) -> None:
        for task in self._joins.values():
            task.cancel()

    async def _join(self, si: PaStream) -> None:
        started = time.monotonic()
        settled = await self.wait_settled(si)
        if settled is None:
            return  # gone with its speaker or its record
        await self.server.unmute_line(si.index)
        await self._retire_others(si)
        took = time.monotonic() - started
        if settled:
            log.info("loopback %d settled on its delay in %.1f s; unmuted", si.index, took)
        else:
            log.warning("loopback %d did not settle within %.0f s; unmuted anyway", si.index, took)

    async def _retire_others(self, si: PaStream) -> None:
        """Once a line plays, any other line of its member to the same speaker, and any older record of that member
        left without a line, is what a delay change cut short left behind (its old half): unloaded."""
        server = self.server
        await server.reread()
        mine = server.source_read_by(si.owner_module) if si.owner_module is not None else None
        records = server.records()
        rec = next((r for r in records if r.source.index == mine), None)
        if rec is None:
            return
        older = [r for r in records if (r.group, r.member) == (rec.group, rec.member) and r.source.index != mine]
        for old in older:
            for line in self._lines_of(old.source.index):
                if line.target == si.target:
                    log.info("unloading loopback %d, left by a delay change cut short", line.index)
                    await server.unload(line.owner_module)
        await server.reread()
        for old in older:
            if not self._lines_of(old.source.index):
                await server.unload(old.source.owner_module)

    def _lines_of(self, source_index: int) -> list[PaStream]:
        return [si for si, src in self.server.lines() if src == source_index]

    async def wait_settled(self, si: PaStream, timeout: float = JOIN_TIMEOUT_S) -> bool | None:
        """Whether the loopback settled (see line_settled) before `timeout`; None if it went away."""
        group = si.props.get(layout.PROP_GROUP)
        seen: list[tuple[float, int, float | None]] = []
        base: int | None = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = await self.server.group_line_rates(group)
            if lines is None:
                return None
            if base is None:
                base = await self.server.line_base_rate(si)
            own = [rate for index, rate, _ in lines if index == si.index]
            if not own or base is None:
                return None
            others = [rate for index, rate, muted in lines if index != si.index and not muted]
            seen.append((time.monotonic(), own[0], statistics.median(others) if others else None))
            if line_settled(seen, base):
                return True
            await asyncio.sleep(ADJUST_TIME_S)
        log.debug("loopback %d unsettled: base %s, last (rate, others) %s", si.index, base, [x[1:] for x in seen[-10:]])
        return False

    async def swap(self, old: Record, new_ms: int, monitor: int, at_once: bool = False) -> None:
        """A new record and loopback at the new delay are built beside the old ones, the loopback muted; once it
        has settled (CONVERGE_S) the two swap mutes in one write, new one first, then the old pair is unloaded.
        Measured: no doubled audio, a dip of up to 20 ms in one change of ten (bench/delays.py)."""
        server = self.server
        old_links = self._lines_of(old.source.index)
        swap_until = int(self.wall() + SWAP_GRACE_S)
        new_rec = await server.load_record(old.group, old.member, new_ms, monitor, swap_until)
        fresh = [await server.load_line(new_rec, si.target) for si in old_links]
        if fresh and not at_once:
            # Muted, the new line fills and its rate control settles on the target before it is heard.
            await asyncio.gather(
                asyncio.sleep(max(CONVERGE_S, (BASE_MS + new_ms) / 1000.0 + FILL_MARGIN_S)),
                *(self.wait_settled(si) for si in fresh),
            )
        # Both requests leave in one write: the server applies them in order, usually in the same block.
        await server.swap_mutes([si.index for si in fresh], [si.index for si in old_links])
        for si in old_links:
            await server.unload(si.owner_module)
        await server.unload(old.source.owner_module)
        await server.wait_gone(old.source.index, 5.0, "the old record")
