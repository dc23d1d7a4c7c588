"""Delays proven end to end on a real private PipeWire and a real private PulseAudio: a signal into the group
sink, recorded on the room's truth channels (each speaker's emission, after its hidden latency), located by
cross-correlation against the group's monitor recorded in the same stream."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from pwgroup.graph.pulse import CONVERGE_S
from pwgroup.sim.measure import decompose, lag
from pwgroup.sim.room import RATE

pytestmark = pytest.mark.integration


def slack(room) -> int:  # type: ignore[no-untyped-def]
    """Samples a member may land off its target, against the other members. PipeWire: none. PulseAudio: 16's
    module-loopback holds its latency by rate control (adjust_time=0.1, see pulse.py), which keeps it within
    about a sample of its target."""
    return 0 if room.backend == "pipewire" else 1


def ref_slack(room) -> int:  # type: ignore[no-untyped-def]
    """Samples a member may land off its target against the group's monitor. On PulseAudio the monitor reaches
    the recording through a loopback of its own (the server cannot record two devices in one stream), fresh for
    each recording and held by the same rate control, so its error adds to the member's."""
    return 0 if room.backend == "pipewire" else 2 * slack(room)


def applied_ms(room, ms: float) -> float:  # type: ignore[no-untyped-def]
    """What a backend can apply: whole samples on PipeWire; whole milliseconds on PulseAudio, whose loopback
    takes latency_msec as an integer."""
    if room.backend == "pipewire":
        return round(ms * RATE / 1000) * 1000 / RATE
    return float(round(ms))


def burst(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    sig = np.zeros(int(RATE * seconds))
    rng = np.random.default_rng(seed)
    sig[RATE // 4 : RATE // 4 + 4800] = rng.standard_normal(4800) * 0.3
    return np.stack([sig, sig], axis=1)


def arrivals(room, group: str, n: int) -> list[int]:  # type: ignore[no-untyped-def]
    """Lag of each truth channel behind the group sink's monitor, in samples."""
    with room.truth(group, n) as rec:
        time.sleep(0.2)
        room.play(group, burst()).start().wait()
        time.sleep(0.5 + room.lead_s)
        y = rec.stop()
    assert np.abs(y[:, 0]).max() > 0.1, "nothing reached the group sink"
    for ch in range(1, n + 1):
        assert np.abs(y[:, ch]).max() > 0.05, f"speaker {ch} emitted nothing"
    return [lag(y[:, 0], y[:, ch]) for ch in range(1, n + 1)]


def test_delays_land_exactly(sound_cli, sound_room, sound_group: str) -> None:
    cli, room, group = sound_cli, sound_room, sound_group
    delays = [0.0, 37.4, 120.0]  # 37.4, not 37.5: PulseAudio rounds to whole ms, and x.5 would tie
    # One member at a time: on PulseAudio, lines swapped side by side landed 2 samples apart in one run of two.
    for spk, ms in zip(room.speakers, delays, strict=False):
        cli("delay", "set", group, spk.address, str(ms), check=True)
    members = json.loads(cli("status", group, "--json", check=True)[1])["groups"][0]["members"]
    assert [m["delay_ms"] for m in members] == pytest.approx([applied_ms(room, ms) for ms in delays])
    got = arrivals(room, group, 3)
    want = [
        round(applied_ms(room, ms) * RATE / 1000) + spk.latency_samples
        for spk, ms in zip(room.speakers, delays, strict=False)
    ]
    assert all(abs(g - w) <= max(1, ref_slack(room)) for g, w in zip(got, want, strict=True)), (got, want)
    # What keeps speakers together: each member against the first (to the sample on PipeWire).
    relative = [g - got[0] - (w - want[0]) for g, w in zip(got, want, strict=True)]
    assert all(abs(r) <= max(1, slack(room)) for r in relative), (got, want)


# Glitch-freeness measured to the sample on 2 shared cores: an xrun from a CPU spike elsewhere (a process
# starting, the other room's recorder) breaks it without pwgroup doing anything. Seen in about one full run in
# four; each failure passed when run again alone. A rerun separates that from a real regression.
XRUN_RERUNS = pytest.mark.flaky(reruns=2, reruns_delay=1)


@XRUN_RERUNS
def test_equal_delays_are_sample_aligned(sound_cli, sound_room, sound_group: str) -> None:
    cli, room, group = sound_cli, sound_room, sound_group
    for spk in room.speakers[:3]:
        cli("delay", "set", group, spk.address, "50", check=True)
    got = arrivals(room, group, 3)
    beyond_hidden = [g - spk.latency_samples for g, spk in zip(got, room.speakers, strict=False)]
    assert all(abs(b - 2400) <= ref_slack(room) for b in beyond_hidden), beyond_hidden
    assert max(beyond_hidden) - min(beyond_hidden) <= slack(room), beyond_hidden


def landed(room, ref: np.ndarray, y: np.ndarray, want: int) -> int:  # type: ignore[no-untyped-def]
    """Where a delay landed in this recording, checked against where it should have."""
    got = lag(ref, y)
    assert abs(got - want) <= ref_slack(room), (got, want)
    return got


def level(ref: np.ndarray, y: np.ndarray, lags: tuple[int, ...], win: int = 480) -> np.ndarray:
    """Per 10 ms window while the noise plays (on a channel that lags the reference by any of `lags`): its RMS
    over the channel's median, which is the level of one clean copy. 1 while the member plays, 0 in a gap,
    about 1.4 where two copies (stale audio) overlap. The noise is white and steady, so it needs no alignment.
    (PulseAudio's convolving sink normalizes its impulse response, so the room's speaker gains do not show.)"""
    active = np.flatnonzero(np.abs(ref) > 1e-4)
    start, end = active[0] + max(lags) + 2 * win, active[-1] + min(lags) - 2 * win
    rows = [y[i : i + win] for i in range(start, end - win, win)]
    levels = np.array([np.sqrt(np.mean(r**2)) for r in rows])
    return levels / float(np.median(levels))


def _play_noise_while(room, group: str, seconds: float, action, n: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    x = rng.standard_normal(int(RATE * seconds)) * 0.2
    with room.truth(group, n) as rec:
        player = room.play(group, np.stack([x, x], axis=1)).start()
        time.sleep(min(seconds * 0.3, 1.0))
        worker = threading.Thread(target=action)
        worker.start()
        worker.join(30)
        player.wait()
        time.sleep(0.3 + room.lead_s)
        return rec.stop()


@XRUN_RERUNS
def test_delay_change_while_playing_has_no_stale_audio_and_no_gap(sound_cli, sound_room, sound_group: str) -> None:
    cli, room, group = sound_cli, sound_room, sound_group
    spk, other = room.speakers[0], room.speakers[1]
    cli("delay", "set", group, spk.address, "20", other.address, "10", check=True)
    # On PulseAudio a change waits, muted, for the new loopback to settle: play long enough to hear both sides.
    seconds = 3.0 if room.backend == "pipewire" else 6.0 + CONVERGE_S
    for old, new in ((20.0, 90.0), (90.0, 5.0)):
        y = _play_noise_while(
            room, group, seconds, lambda n=new: cli("delay", "set", group, spk.address, str(n), check=True), 2
        )
        ref = y[:, 0]
        third = len(y) // 4
        d_old = landed(room, ref[:third], y[:third, 1], round(old * RATE / 1000) + spk.latency_samples)
        d_new = landed(room, ref[-third:], y[-third:, 1], round(new * RATE / 1000) + spk.latency_samples)
        if room.backend == "pulse":
            # Rate control resamples by a hair, so the waveform is not the reference shifted by whole samples
            # and the decomposition below cannot apply; levels show a gap or a doubled (stale) stretch instead.
            lv = level(ref, y[:, 1], (d_old, d_new))
            off = np.sum((lv < 0.7) | (lv > 1.25))
            assert off <= 3, f"{off * 10} ms of gap or doubled audio around the change (min {lv.min():.2f})"
            d_other = landed(room, ref, y[:, 2], round(10 * RATE / 1000) + other.latency_samples)
            lv_o = level(ref, y[:, 2], (d_other,))
            assert np.all((lv_o > 0.8) & (lv_o < 1.2)), "the other member was disturbed"
            continue
        win = 120
        rows = decompose(ref, y[:, 1], (d_old, d_new), window=win)
        active = rows[(np.abs(rows[:, 1]) + np.abs(rows[:, 2])) > 0.05]
        # Trim the windows where the signal starts or ends inside the window.
        active = active[2:-2]
        assert len(active) > 200
        # Gains step at quantum edges; only a window that straddles a step may fit two constant weights badly.
        # Stale or skipped audio would leave whole windows that are neither delay.
        assert np.sum(active[:, 3] > 1e-3) <= 2, "audio other than the old or the new delay (stale or skipped)"
        clean = active[active[:, 3] <= 1e-3]
        total = clean[:, 1] + clean[:, 2]
        assert np.all(np.abs(total - spk.gain) < 0.05 * spk.gain), f"a gap or a level jump: {total.min():.3f}"
        mixed = active[(np.abs(active[:, 1]) > 0.02 * spk.gain) & (np.abs(active[:, 2]) > 0.02 * spk.gain)]
        assert len(mixed) * win / RATE <= 0.030, f"crossfade of {len(mixed) * win / RATE * 1000:.1f} ms"
        assert active[0, 1] > 0.95 * spk.gain and active[-1, 2] > 0.95 * spk.gain
        # The other member never noticed.
        d_other = landed(room, ref, y[:, 2], round(10 * RATE / 1000) + other.latency_samples)
        rows_o = decompose(ref, y[:, 2], (d_other, d_other + 1))
        act_o = rows_o[(np.abs(rows_o[:, 1]) + np.abs(rows_o[:, 2])) > 0.05][2:-2]
        assert act_o[:, 3].max() < 1e-3


@XRUN_RERUNS
def test_remove_and_readd_member_while_playing_leaves_others_untouched(sound_cli, sound_room, sound_group: str) -> None:
    cli, room, group = sound_cli, sound_room, sound_group
    spk3 = room.speakers[2]

    def churn() -> None:
        cli("group", "remove", group, spk3.address, check=True)
        cli("group", "add", group, spk3.address, "--delay", "30", check=True)

    # On PulseAudio the re-added member is heard once its loopback has settled on its delay (several seconds).
    y = _play_noise_while(room, group, 4.0 if room.backend == "pipewire" else 12.0, churn, 3)
    ref = y[:, 0]
    for ch in (1, 2):
        spk = room.speakers[ch - 1]
        d = landed(room, ref, y[:, ch], spk.latency_samples)
        if room.backend == "pulse":  # resampled by a hair: levels, not a whole-sample decomposition
            lv = level(ref, y[:, ch], (d,))
            assert np.all((lv > 0.8) & (lv < 1.2)), f"member {ch} was disturbed (level {lv.min():.2f}-{lv.max():.2f})"
            continue
        rows = decompose(ref, y[:, ch], (d, d + 1))
        act = rows[(np.abs(rows[:, 1]) + np.abs(rows[:, 2])) > 0.05][2:-2]
        assert len(act) > 300
        assert act[:, 3].max() < 1e-3, f"member {ch} was disturbed"
        assert np.all(np.abs(act[:, 1] + act[:, 2] - spk.gain) < 0.02 * spk.gain), f"member {ch} had a gap"
    # The re-added member plays again, at its new delay.
    tail = y[-int(1.5 * RATE) :, :]
    assert abs(lag(tail[:, 0], tail[:, 3]) - (round(30 * RATE / 1000) + spk3.latency_samples)) <= ref_slack(room)


def test_a_delayed_member_holds_its_sample_while_another_app_changes_the_quantum(cli, room, group: str) -> None:
    """PipeWire 1.4.2 skipped or garbled a quantum of what every delay line held whenever the graph's quantum
    changed under it (measured: a 90 ms member went 2 quanta early for ~40 ms while an app asking for 256 samples
    played, and 1 quantum early for the tail after the last stream ended); members lock the quantum where that
    happens (QUANTUM_SKIP). 0.3.65 needs no lock and passes without it."""
    from pwgroup.graph.capture import installed_stream_tools
    from pwgroup.graph.proc import tool

    spk = room.speakers[0]
    cli("delay", "set", group, spk.address, "90", check=True)
    rng = np.random.default_rng(11)
    x = rng.standard_normal(int(RATE * 3.0)) * 0.2
    argv = [tool("pw-cat"), "--playback", *installed_stream_tools().raw_stdin(), "--latency", "256", "--target",
            f"pwgroup.{group}", "--rate", "48000", "--channels", "2", "--format", "f32", "/dev/zero"]  # fmt: skip
    with room.truth(group, 1) as rec:
        player = room.play(group, np.stack([x, x], axis=1)).start()
        time.sleep(1.2)
        other = subprocess.Popen(argv, env=room.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.6)
        other.terminate()
        other.wait(5)
        player.wait()
        time.sleep(0.5)
        y = rec.stop()
    ref = y[:, 0]
    d = landed(room, ref, y[:, 1], round(90 * RATE / 1000) + spk.latency_samples)
    rows = decompose(ref, y[:, 1], (d, d + 1), window=120)
    active = rows[(np.abs(rows[:, 1]) + np.abs(rows[:, 2])) > 0.05][2:-2]
    assert len(active) > 1000
    off = active[active[:, 3] > 1e-3]
    assert len(off) == 0, f"{len(off)} windows of 2.5 ms not at the member's delay, from {off[0, 0] / RATE:.3f} s"


def test_a_delay_change_cut_short_is_finished_by_the_next_pass(pulse_room, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """PulseAudio: a delay change stopped midway (Ctrl-C on `delay set`, a daemon killed) leaves the old line
    playing and the new one muted beside it. Once the change is overdue, the next pass takes the new line up and
    retires the old: one line per member, at the new delay."""
    from pwgroup.graph import pulse, pulsesync
    from pwgroup.model import GroupSpec, MemberSpec
    from pwgroup.supervisor.executor import converge

    room = pulse_room
    first, second = room.speakers[0], room.speakers[1]
    run = [sys.executable, "-m", "pwgroup"]
    subprocess.run([*run, "group", "create", "cut", first.address, second.address], env=room.env, check=True)
    monkeypatch.setattr(pulsesync, "SWAP_GRACE_S", 1.0)

    def records(be: pulse.PulseBackend) -> list[pulse.Record]:
        return [r for r in pulse.all_records(be._snap) if r.group == "cut"]

    async def cut_short_then_pass() -> tuple[int, int, list[bool]]:
        be = await pulse.PulseBackend(room.env).open()
        try:
            rec = pulse.records_in(be._snap)[("cut", first.address)]
            change = asyncio.create_task(be.set_delay(pulse.record_ids(rec.source.index)[1], 60.0))
            await asyncio.sleep(1.5)  # the new line is loaded and muted, the swap not yet done
            change.cancel()
            await asyncio.gather(change, return_exceptions=True)
            await be.refresh()
            left = len(records(be))
            await asyncio.sleep(1.0)  # the change is overdue now
            spec = GroupSpec("cut", "cut", (MemberSpec(first.address, 60.0), MemberSpec(second.address, 0.0)))
            await converge(be, spec, "cut")
            be._dirty = True
            await be.refresh()
            lines = [si for si, src in pulse.links_in(be._snap) if any(r.source.index == src for r in records(be))]
            return left, len(records(be)), [si.mute for si in lines]
        finally:
            await be.close()

    try:
        left, after, mutes = asyncio.run(cut_short_then_pass())
        assert left == 3, "the cut-short change should have left two records of the first member"
        assert after == 2 and mutes == [False, False], (after, mutes)
        got = arrivals(room, "cut", 2)
        want = [round(60 * RATE / 1000) + first.latency_samples, second.latency_samples]
        assert all(abs(g - w) <= ref_slack(room) for g, w in zip(got, want, strict=True)), (got, want)
    finally:
        subprocess.run([*run, "group", "delete", "cut"], env=room.env, check=True)
