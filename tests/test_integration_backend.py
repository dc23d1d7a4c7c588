"""What a backend says of its server when it opens, checked against the room's real servers; and a caller that
needs what a server cannot do says so from the capabilities."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from pwgroup.graph import SUSPEND_CRASH
from pwgroup.graph.pipewire import SUSPEND_FIXED, PipeWireBackend
from pwgroup.graph.proc import linked_version
from pwgroup.graph.select import choose
from pwgroup.sim.pulseroom import PulseRoom
from pwgroup.sim.room import Room


def test_pipewire_says_its_versions_and_the_bugs_worked_around(room: Room) -> None:
    async def capabilities():  # type: ignore[no-untyped-def]
        be = await PipeWireBackend(room.env).open()
        try:
            return be.capabilities
        finally:
            await be.close()

    caps = asyncio.run(capabilities())
    server, wireplumber = linked_version("pipewire", "pipewire"), linked_version("wireplumber", "wireplumber")
    assert server is not None and wireplumber is not None
    # The room runs the PipeWire and WirePlumber installed here.
    assert caps.server == "PipeWire" and caps.server_version == ".".join(map(str, server))
    assert caps.session_manager == "WirePlumber"
    assert caps.session_manager_version == ".".join(map(str, wireplumber))
    assert (SUSPEND_CRASH in caps.workarounds) is ((0, 4, 0) <= wireplumber < SUSPEND_FIXED)
    assert caps.calibrate
    assert caps.stream_tools.version == linked_version("pw-cat", "pipewire")


def test_calibrating_on_pulseaudio_is_refused_in_one_line(pulse_room: PulseRoom) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pwgroup", "calibrate", "anygroup"],
        env=pulse_room.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    code, err = proc.returncode, proc.stderr
    assert code == 2 and "needs PipeWire" in err and "PulseAudio" in err and "delay set" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_the_server_is_told_by_who_serves_the_pulse_socket(room: Room, pulse_room: PulseRoom) -> None:
    for env, backend, process in ((room.env, "pipewire", "pipewire-pulse"), (pulse_room.env, "pulse", "pulseaudio")):
        choice = asyncio.run(choose(env))
        assert choice.name == backend and f"served by {process}" in choice.reason, choice
