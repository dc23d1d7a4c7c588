"""Reconcile and execute: a pure step from (desired, observed) to actions, and a loop that applies them.

Level-triggered: the whole desired group is compared with the whole observed graph each time, so running it
twice does nothing the second time and a restart converges to the same graph.
"""

from __future__ import annotations

import asyncio

from pwgroup.graph import Backend, layout
from pwgroup.model import (
    Action,
    BackendError,
    CreateSink,
    DestroySink,
    Graph,
    GroupSpec,
    LinkPorts,
    MemberSpec,
    MemberState,
    SetDelay,
    StartMember,
    StopMember,
    Unlink,
)


def reconcile(desired: GroupSpec | None, graph: Graph, name: str) -> list[Action]:
    """What to do so that group `name` in `graph` matches `desired` (None: the group should not exist)."""
    state = layout.observe_group(graph, name)
    actions: list[Action] = []
    wanted = {m.speaker: m for m in desired.members} if desired else {}

    for old in state.members:
        if old.speaker not in wanted:
            actions.append(_stop(name, old))
    if desired is None:
        if state.sink is not None:
            actions.append(DestroySink(name, state.sink.id))
        return actions
    if state.sink is None:
        # Members link to the sink's monitor: build the sink first, the rest on the next pass.
        return [*actions, CreateSink(desired)]

    rate = layout.graph_rate(graph)
    for spec in desired.members:
        member = state.member(spec.speaker)
        if member is None:
            actions.append(StartMember(name, spec))
            continue
        if member.in_node is None or member.out_node is None:
            # Half an element is no element: stop it, the next pass starts a whole one.
            actions.append(_stop(name, member))
            continue
        feeds = [(state.sink.id, member.in_node.id, True)]
        if member.speaker_node is not None:
            feeds.append((member.out_node.id, member.speaker_node.id, False))
        for out_id, in_id, monitor in feeds:
            outs = graph.ports_of(out_id, "out", monitor=True if monitor else None)
            ins = graph.ports_of(in_id, "in")
            have = {(lk.out_port, lk.in_port) for lk in graph.links_between(out_id, in_id)}
            actions += [LinkPorts(o, i) for o, i in layout.channel_pairs(outs, ins) if (o, i) not in have]
        # A member's element feeds only its own speaker and is fed only by its group's sink.
        allowed_out = {member.speaker_node.id} if member.speaker_node else set()
        for lk in graph.links_of(member.out_node.id):
            if lk.out_node == member.out_node.id and lk.in_node not in allowed_out:
                actions.append(Unlink(lk.id))
        for lk in graph.links_of(member.in_node.id):
            if lk.in_node == member.in_node.id and lk.out_node != state.sink.id:
                actions.append(Unlink(lk.id))
        want = layout.delay_samples(spec.delay_ms, rate)
        have_ms = member.delay_ms
        if have_ms is not None and layout.delay_samples(have_ms, rate) != want:
            actions.append(SetDelay(name, spec.speaker, member.in_node.id, want * 1000.0 / rate))
    return actions


def _stop(name: str, member: MemberState) -> StopMember:
    ids = tuple(n.id for n in (member.in_node, member.out_node) if n is not None)
    return StopMember(name, member.speaker, member.pid, ids)


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


async def converge(
    backend: Backend, desired: GroupSpec | None, name: str, passes: int = 8, at_once: bool = False
) -> list[Action]:
    """Reconcile and execute until nothing is left to do; returns every action taken."""
    taken: list[Action] = []
    for _ in range(passes):
        actions = reconcile(desired, await backend.refresh(), name)
        if not actions:
            return taken
        # Delay changes touch one member each and mostly wait for their line to fill: run them side by side.
        delays = [a for a in actions if isinstance(a, SetDelay)]
        for action in actions:
            if not isinstance(action, SetDelay):
                await execute(backend, action)
        await asyncio.gather(*(execute(backend, a, at_once) for a in delays))
        taken += actions
        await backend.settle()
    left = reconcile(desired, await backend.refresh(), name)
    if left:
        raise BackendError(f"group {name!r} did not settle after {passes} passes: {left[0]!r}")
    return taken


def desired_from_graph(graph: Graph, name: str) -> GroupSpec | None:
    """The group as it stands: what CLI edits start from when no config holds it."""
    state = layout.observe_group(graph, name)
    if state.sink is None and not state.members:
        return None
    description = state.sink.description if state.sink else name
    members = tuple(MemberSpec(m.speaker, m.delay_ms or 0.0) for m in state.members)
    return GroupSpec(name=name, description=description, members=members)
