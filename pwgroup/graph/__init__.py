"""The sound-server room: one Backend protocol, a PipeWire adapter (pw-dump/pw-cli/pw-link) and later PulseAudio.

Backends turn actions into server calls and report the observed Graph; they never decide what should exist.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from pwgroup.model import Graph, GroupSpec, MemberSpec


class Backend(Protocol):
    name: str

    @property
    def graph(self) -> Graph: ...

    async def refresh(self) -> Graph: ...

    @property
    def alive(self) -> bool: ...

    @property
    def serial(self) -> int: ...

    async def wait_changed(self, timeout: float, since: int | None = None) -> bool: ...

    async def settle(self, quiet: float = 0.05, timeout: float = 2.0) -> None: ...

    async def create_sink(self, group: GroupSpec) -> None: ...

    async def destroy_node(self, node_id: int) -> None: ...

    async def start_member(self, group: str, member: MemberSpec) -> None: ...

    async def stop_member(self, group: str, speaker: str, pid: int | None, node_ids: tuple[int, ...]) -> None: ...

    async def link(self, out_port: int, in_port: int) -> None: ...

    async def unlink(self, link_id: int) -> None: ...

    async def set_delay(self, node_id: int, delay_ms: float, at_once: bool = False) -> None: ...

    async def set_gain(self, node_id: int, gain: float) -> None: ...

    async def set_sink_volume(self, node_id: int, volume: float) -> None: ...

    async def set_sink_mute(self, node_id: int, mute: bool) -> None: ...

    async def close(self) -> None: ...


async def wait_next_change(changed: asyncio.Event, serial: int, since: int | None, timeout: float) -> bool:
    """What both backends' `wait_changed` do: with `since` (a serial), a change already seen after it returns
    at once; otherwise wait for the next one, up to `timeout`."""
    if since is not None and serial != since:
        return True
    changed.clear()
    try:
        await asyncio.wait_for(changed.wait(), timeout)
    except TimeoutError:
        return False
    return True
