"""Delays proven end to end on a real private PipeWire: a signal into the group sink, recorded on the
room's truth channels (each speaker's emission, after its hidden latency), located by cross-correlation."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from pwgroup.graph.capture import Player, Recorder
from pwgroup.sim.measure import decompose, lag
from pwgroup.sim.room import RATE, Room

pytestmark = pytest.mark.integration


def monitor_port(room: Room, group: str) -> int:
    graph = room.dump()
    sink = graph.node_by_name(f"pwgroup.{group}")
    assert sink is not None
    return graph.ports_of(sink.id, "out", monitor=True)[0].id


def burst(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    sig = np.zeros(int(RATE * seconds))
    rng = np.random.default_rng(seed)
    sig[RATE // 4 : RATE // 4 + 4800] = rng.standard_normal(4800) * 0.3
    return np.stack([sig, sig], axis=1)


def arrivals(room: Room, group: str, n: int) -> list[int]:
    """Lag of each truth channel behind the group sink's monitor, in samples."""
    ports = [monitor_port(room, group), *room.emit_ports()[:n]]
    with Recorder(room.env, ports) as rec:
        time.sleep(0.2)
        Player(room.env, f"pwgroup.{group}", burst()).start().wait()
        time.sleep(0.5)
        y = rec.stop()
    assert np.abs(y[:, 0]).max() > 0.1, "nothing reached the group sink"
    for ch in range(1, n + 1):
        assert np.abs(y[:, ch]).max() > 0.05, f"speaker {ch} emitted nothing"
    return [lag(y[:, 0], y[:, ch]) for ch in range(1, n + 1)]


def test_delays_land_exactly(cli, room: Room, group: str) -> None:
    delays = [0.0, 37.5, 120.0]
    for spk, ms in zip(room.speakers, delays, strict=False):
        cli("delay", "set", group, spk.address, str(ms), check=True)
    got = arrivals(room, group, 3)
    want = [round(ms * RATE / 1000) + spk.latency_samples for spk, ms in zip(room.speakers, delays, strict=False)]
    assert all(abs(g - w) <= 1 for g, w in zip(got, want, strict=True)), (got, want)


def test_equal_delays_are_sample_aligned(cli, room: Room, group: str) -> None:
    for spk in room.speakers[:3]:
        cli("delay", "set", group, spk.address, "50", check=True)
    got = arrivals(room, group, 3)
    beyond_hidden = [g - spk.latency_samples for g, spk in zip(got, room.speakers, strict=False)]
    assert beyond_hidden == [2400, 2400, 2400], beyond_hidden


def _play_noise_while(room: Room, group: str, seconds: float, action, ports: list[int]) -> np.ndarray:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    x = rng.standard_normal(int(RATE * seconds)) * 0.2
    with Recorder(room.env, ports) as rec:
        player = Player(room.env, f"pwgroup.{group}", np.stack([x, x], axis=1)).start()
        time.sleep(seconds * 0.3)
        worker = threading.Thread(target=action)
        worker.start()
        worker.join(30)
        player.wait()
        time.sleep(0.3)
        return rec.stop()


def test_delay_change_while_playing_has_no_stale_audio_and_no_gap(cli, room: Room, group: str) -> None:
    spk, other = room.speakers[0], room.speakers[1]
    cli("delay", "set", group, spk.address, "20", check=True)
    cli("delay", "set", group, other.address, "10", check=True)
    ports = [monitor_port(room, group), room.emit_ports()[0], room.emit_ports()[1]]
    for old, new in ((20.0, 90.0), (90.0, 5.0)):
        y = _play_noise_while(
            room, group, 3.0, lambda n=new: cli("delay", "set", group, spk.address, str(n), check=True), ports
        )
        ref = y[:, 0]
        d_old = round(old * RATE / 1000) + spk.latency_samples
        d_new = round(new * RATE / 1000) + spk.latency_samples
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
        d_other = round(10 * RATE / 1000) + other.latency_samples
        rows_o = decompose(ref, y[:, 2], (d_other, d_other + 1))
        act_o = rows_o[(np.abs(rows_o[:, 1]) + np.abs(rows_o[:, 2])) > 0.05][2:-2]
        assert act_o[:, 3].max() < 1e-3


def test_remove_and_readd_member_while_playing_leaves_others_untouched(cli, room: Room, group: str) -> None:
    spk3 = room.speakers[2]

    def churn() -> None:
        cli("group", "remove", group, spk3.address, check=True)
        cli("group", "add", group, spk3.address, "--delay", "30", check=True)

    ports = [monitor_port(room, group), *room.emit_ports()[:3]]
    y = _play_noise_while(room, group, 4.0, churn, ports)
    ref = y[:, 0]
    for ch in (1, 2):
        spk = room.speakers[ch - 1]
        d = spk.latency_samples
        rows = decompose(ref, y[:, ch], (d, d + 1))
        act = rows[(np.abs(rows[:, 1]) + np.abs(rows[:, 2])) > 0.05][2:-2]
        assert len(act) > 300
        assert act[:, 3].max() < 1e-3, f"member {ch} was disturbed"
        assert np.all(np.abs(act[:, 1] + act[:, 2] - spk.gain) < 0.02 * spk.gain), f"member {ch} had a gap"
    # The re-added member plays again, at its new delay.
    tail = y[-int(1.5 * RATE) :, :]
    assert lag(tail[:, 0], tail[:, 3]) == round(30 * RATE / 1000) + spk3.latency_samples
