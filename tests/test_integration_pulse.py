"""The PulseAudio adapter against a private PulseAudio: what it says of the server when it opens, and that the
graph it shows is read at the time its clock gives (a delay change's deadline is judged by that clock)."""

from __future__ import annotations

import asyncio
import re

from pwgroup.graph.pulse import PulseBackend
from pwgroup.sim.pulseroom import PulseRoom


def test_capabilities_carry_the_servers_version(pulse_room: PulseRoom) -> None:
    stated = re.search(r"^Server Version: (\S+)$", pulse_room.pactl("info"), re.M)
    assert stated is not None

    async def main() -> None:
        backend = await PulseBackend(pulse_room.env).open()
        try:
            caps = backend.capabilities
            assert caps.server == "PulseAudio" and caps.server_version == stated.group(1)
            assert caps.as_dict()["server_version"] == stated.group(1)
        finally:
            await backend.close()

    asyncio.run(main())


def test_the_graph_is_read_at_the_clock_it_is_given(pulse_room: PulseRoom) -> None:
    seen: list[float] = []

    def wall() -> float:
        seen.append(1_800_000_000.0)
        return seen[-1]

    async def main() -> None:
        backend = await PulseBackend(pulse_room.env, wall=wall).open()
        try:
            assert seen  # opening read the graph, at the given clock's time
            before = len(seen)
            await backend.reread()
            assert len(seen) == before + 1
        finally:
            await backend.close()

    asyncio.run(main())
