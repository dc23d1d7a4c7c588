"""The executor: carries reconcile's actions out through a Backend, pass by pass, until nothing is left to do."""

from __future__ import annotations

import asyncio
import time

from pwgroup.graph import Backend
from pwgroup.model import (
    Action,
    BackendError,
    CreateSink,
    DestroySink,
    GroupSpec,
    LinkPorts,
    SetDelay,
    SetGain,
    StartMember,
    StopMember,
    Unlink,
)
from pwgroup.supervisor.reconcile import reconcile


async def execute(backend: Backend, action: Action, at_once: bool = False) -> None:
    """Carry out one action; `at_once` makes delay changes skip the glitch-free line fill (calibration)."""
    match action:
        case CreateSink(group):
            await backend.create_sink(group)
        case DestroySink(_, node_id):
            await backend.destroy_node(node_id)
        case StartMember(group, member):
            await backend.start_member(group, member)
        case StopMember(group, speaker, pid, node_ids):
            await backend.stop_member(group, speaker, pid, node_ids)
        case LinkPorts(out_port, in_port):
            await backend.link(out_port, in_port)
        case Unlink(link_id):
            await backend.unlink(link_id)
        case SetDelay(_, _, node_id, delay_ms):
            await backend.set_delay(node_id, delay_ms, at_once=at_once)
        case SetGain(_, _, node_id, gain):
            await backend.set_gain(node_id, gain)


async def apply_actions(backend: Backend, actions: list[Action], at_once: bool = False) -> None:
    """Execute one pass of actions, independent ones side by side: removals, then new elements, then links,
    then delay and gain changes (a delay change mostly waits for its line to fill)."""
    stages: tuple[tuple[type, ...], ...] = (
        (CreateSink,),
        (StopMember, Unlink, DestroySink),
        (StartMember,),
        (LinkPorts,),
        (SetDelay, SetGain),
    )
    for kinds in stages:
        batch = [a for a in actions if isinstance(a, kinds)]
        if batch:
            await asyncio.gather(*(execute(backend, a, at_once) for a in batch))


async def converge(
    backend: Backend, desired: GroupSpec | None, name: str, passes: int = 8, at_once: bool = False
) -> list[Action]:
    """Reconcile and execute until nothing is left to do; returns every action taken."""
    taken: list[Action] = []
    for _ in range(passes):
        actions = reconcile(desired, await backend.refresh(), name)
        if not actions:
            return taken
        await apply_actions(backend, actions, at_once)
        taken += actions
        await backend.settle()
    left = reconcile(desired, await backend.refresh(), name)
    if left:
        raise BackendError(f"group {name!r} did not settle after {passes} passes: {left[0]!r}")
    return taken


async def wait_applied(backend: Backend, desired: GroupSpec | None, name: str, timeout: float = 10.0) -> None:
    """Wait until someone else (the daemon) has made group `name` match `desired`."""
    deadline = time.monotonic() + timeout
    while reconcile(desired, await backend.refresh(), name):
        if time.monotonic() > deadline:
            raise BackendError(
                f"the pwgroup daemon did not apply the change to {name!r} within {timeout:g} s: "
                "see its log (journalctl --user -u pwgroup)"
            )
        await backend.wait_changed(0.2)
