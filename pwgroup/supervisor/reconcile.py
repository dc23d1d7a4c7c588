"""The pure step of the control loop: from (desired, observed) to the actions that close the difference.

Level-triggered: the whole desired group is compared with the whole observed graph each time, so running it
twice does nothing the second time and a restart converges to the same graph. No I/O here.
"""

from __future__ import annotations

from pwgroup.graph import layout
from pwgroup.model import (
    Action,
    CreateSink,
    DestroySink,
    Graph,
    GroupSpec,
    LinkPorts,
    MemberSpec,
    MemberState,
    SetDelay,
    SetGain,
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
        # The group's monitor feeds the element by the member's channel role; the element feeds its speaker.
        outs = graph.ports_of(state.sink.id, "out", monitor=True)
        wanted_feed = set(layout.feed_pairs(outs, graph.ports_of(member.in_node.id, "in"), spec.channels))
        wanted_out: set[tuple[int, int]] = set()
        if member.speaker_node is not None:
            wanted_out = set(
                layout.channel_pairs(
                    graph.ports_of(member.out_node.id, "out"), graph.ports_of(member.speaker_node.id, "in")
                )
            )
        have = {(lk.out_port, lk.in_port) for lk in graph.links_of(member.in_node.id)}
        have |= {(lk.out_port, lk.in_port) for lk in graph.links_of(member.out_node.id)}
        actions += [LinkPorts(o, i) for o, i in sorted(wanted_feed | wanted_out) if (o, i) not in have]
        # A member's element feeds only its own speaker and is fed only by its group's sink (and, while a
        # calibration runs, by its probe).
        for lk in graph.links_of(member.out_node.id):
            if lk.out_node == member.out_node.id and (lk.out_port, lk.in_port) not in wanted_out:
                actions.append(Unlink(lk.id))
        for lk in graph.links_of(member.in_node.id):
            if lk.in_node != member.in_node.id or (lk.out_port, lk.in_port) in wanted_feed:
                continue
            source = graph.nodes.get(lk.out_node)
            if source is None or source.props.get(layout.PROP_ROLE) != layout.ROLE_PROBE:
                actions.append(Unlink(lk.id))
        # Compared at the backend's resolution, or a delay it cannot make exactly would be set forever.
        step = layout.graph_delay_step(graph)
        want = layout.delay_samples(spec.delay_ms, rate, step)
        have_ms = member.delay_ms
        if have_ms is not None and layout.delay_samples(have_ms, rate, step) != want:
            actions.append(SetDelay(name, spec.speaker, member.in_node.id, want * 1000.0 / rate))
        gain = layout.member_gain(spec.volume, spec.channels)
        if member.gain is not None and abs(member.gain - gain) > 1e-4:
            actions.append(SetGain(name, spec.speaker, member.in_node.id, gain))
    return actions


def _stop(name: str, member: MemberState) -> StopMember:
    ids = tuple(n.id for n in (member.in_node, member.out_node) if n is not None)
    return StopMember(name, member.speaker, member.pid, ids)


def desired_from_graph(graph: Graph, name: str) -> GroupSpec | None:
    """The group as it stands: what CLI edits start from when no config holds it."""
    state = layout.observe_group(graph, name)
    if state.sink is None and not state.members:
        return None
    description = state.sink.description if state.sink else name
    members = tuple(MemberSpec(m.speaker, m.delay_ms or 0.0) for m in state.members)
    return GroupSpec(name=name, description=description, members=members)
