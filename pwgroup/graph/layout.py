"""How a group looks in the graph: the names and properties pwgroup gives its nodes, and reading them back.

Pure functions over the observed Graph; both the backends and the reconciler speak this layout.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

from pwgroup.model import (
    KIND_REMOTE,
    PROP_ROLE,
    Graph,
    GroupState,
    MemberState,
    Node,
    Speaker,
    normalize_address,
    speakers_in,
    target_kind,
)

PROP_GROUP = "pwgroup.group"
PROP_MEMBER = "pwgroup.member"
ROLE_SINK = "group-sink"
ROLE_IN = "member-in"
ROLE_OUT = "member-out"
# A backend whose delay element states its delay outright (PulseAudio's member records) sets this prop.
PROP_DELAY_MS = "pwgroup.delay.ms"
# Graph setting: the coarsest delay step the backend can apply, in samples (PulseAudio: whole milliseconds).
SETTING_DELAY_STEP = "pwgroup.delay-step"
ROLE_PROBE = "probe"  # a calibration signal feeding member elements directly, for the length of one measurement

# The member element: two delay lines fed from one copy node and a two-input mixer, so a delay change
# fills the idle line first and then switches to it: no stale audio, no skip.
LINE_A = "dA:Delay (s)"
LINE_B = "dB:Delay (s)"
GAIN_A = "mix:Gain 1"
GAIN_B = "mix:Gain 2"
DEFAULT_RATE = 48000

# The delay lines, for the daemon's elements and for exported drop-ins alike.
MAX_MEMBER_DELAY_MS = 1900.0  # the longest delay a member may be given (config's MAX_DELAY_MS)
MAX_DELAY_S = 4.0  # the daemon's line: user delays stay under 1.9 s; calibration staggers 8 members by 0.5 s
# A drop-in's line: no calibration runs through it, so a little more than the longest member delay will do.
EXPORT_MAX_DELAY_S = round(MAX_MEMBER_DELAY_MS / 1000.0 + 0.1, 3)


def group_sink_props(group: str, description: str, never_suspend: bool = True) -> dict[str, Any]:
    """The group sink, whoever makes it (the daemon's backend, or an exported drop-in): a stereo null sink whose
    monitor carries its volume, so members follow the group's volume. `never_suspend` where the session manager
    may be WirePlumber 0.4.13 (a drop-in cannot know which one will load it)."""
    props: dict[str, Any] = {
        "factory.name": "support.null-audio-sink",
        "node.name": sink_name(group),
        "node.description": description,
        "media.class": "Audio/Sink",
        "audio.position": ["FL", "FR"],
        "monitor.channel-volumes": True,
    }
    if never_suspend:
        # Never armed for suspend: WirePlumber 0.4.13 segfaults when a node it meant to suspend is destroyed.
        props["session.suspend-timeout-seconds"] = 0
    return props


def sink_name(group: str) -> str:
    return f"pwgroup.{group}"


def member_slug(speaker: str) -> str:
    """A short, safe token for a member's node names, whatever the speaker key holds."""
    addr = normalize_address(speaker)
    if addr:
        return addr.replace(":", "_")
    clean = re.sub(r"[^A-Za-z0-9_]", "_", speaker)[:32]
    digest = hashlib.sha1(speaker.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{clean}-{digest}"


def member_node_name(group: str, speaker: str, side: str) -> str:
    return f"pwgroup.{group}.{member_slug(speaker)}.{side}"


def delay_control_value(delay_ms: float, rate: int) -> float:
    """The builtin delay truncates seconds*rate; ask for the middle of the wanted sample."""
    samples = delay_samples(delay_ms, rate)
    return (samples + 0.5) / rate


def delay_samples(delay_ms: float, rate: int, step: int = 1) -> int:
    """A delay in samples, rounded to the backend's step (1 sample on PipeWire)."""
    return max(0, round(delay_ms * rate / 1000.0 / step) * step)


def graph_delay_step(graph: Graph) -> int:
    step = graph.settings.get(SETTING_DELAY_STEP)
    return int(step) if isinstance(step, int) and step > 0 else 1


def applied_delay_ms(node: Node, rate: int) -> float | None:
    stated = node.props.get(PROP_DELAY_MS)
    if isinstance(stated, int | float):
        return float(stated)
    c = node.controls
    if LINE_A not in c or LINE_B not in c:
        return None
    active = LINE_A if c.get(GAIN_A, 1.0) >= c.get(GAIN_B, 0.0) else LINE_B
    samples = math.floor(c[active] * rate)
    return samples * 1000.0 / rate


def applied_gain(node: Node) -> float | None:
    c = node.controls
    if GAIN_A not in c or GAIN_B not in c:
        return None
    return max(c[GAIN_A], c[GAIN_B])


def sink_volume(node: Node) -> float | None:
    """A sink's own volume as mixers show it (pavucontrol's percent, wpctl's number): the cube root of its
    loudest channel's linear amplitude; None when the server did not say."""
    if not node.channel_volumes:
        return None
    return max(node.channel_volumes) ** (1.0 / 3.0)


def linear_volume(volume: float) -> float:
    """The linear amplitude of a mixer-scale volume (sink_volume's inverse)."""
    return max(0.0, volume) ** 3


def member_gain(volume: float, channels: str) -> float:
    """The element's gain: the member's volume, halved for a mono downmix (both channels summed into each)."""
    return volume * (0.5 if channels == "mono" else 1.0)


def feed_pairs(outs: list, ins: list, channels: str) -> list[tuple[int, int]]:  # type: ignore[type-arg]
    """Group monitor ports to a member element's inputs, by the member's channel role: both (FL to FL, FR to
    FR), left or right (that channel into every input), mono (every channel into every input, summed)."""
    if channels == "both":
        return channel_pairs(outs, ins)
    if channels == "mono":
        return [(p.id, q.id) for p in outs for q in ins]
    side = "FL" if channels == "left" else "FR"
    chosen = [p for p in outs if p.channel == side] or outs[:1]
    return [(p.id, q.id) for p in chosen for q in ins]


def graph_rate(graph: Graph) -> int:
    rate = graph.settings.get("clock.force-rate") or graph.settings.get("clock.rate")
    return int(rate) if isinstance(rate, int | float) and rate > 0 else DEFAULT_RATE


def graph_quantum(graph: Graph) -> int:
    q = graph.settings.get("clock.force-quantum") or graph.settings.get("clock.quantum")
    return int(q) if isinstance(q, int | float) and q > 0 else 1024


def find_speaker(graph: Graph, key: str) -> Speaker | None:
    """The member target `key` names, if the graph shows it now: a Bluetooth speaker by its address (any
    spelling), or any target by its exact node name."""
    if target_kind(key) == KIND_REMOTE:
        return None  # on another host: pwgroup.hosts reaches it, not this graph
    addr = normalize_address(key)
    for spk in speakers_in(graph):
        if (addr and spk.address == addr) or spk.node_name == key:
            return spk
    return None


def group_names(graph: Graph) -> list[str]:
    names = {
        str(n.props.get(PROP_GROUP))
        for n in graph.nodes.values()
        if n.props.get(PROP_ROLE) in (ROLE_SINK, ROLE_IN, ROLE_OUT) and isinstance(n.props.get(PROP_GROUP), str)
    }
    return sorted(names)


def _fed(graph: Graph, sink: Node | None, in_node: Node | None) -> bool:
    """Every input of the element takes something from the group's monitor (whatever the channel role)."""
    if sink is None or in_node is None:
        return False
    ins = graph.ports_of(in_node.id, "in")
    fed = {lk.in_port for lk in graph.links_between(sink.id, in_node.id)}
    return bool(ins) and all(p.id in fed for p in ins)


def _linked(graph: Graph, out_node: Node | None, in_node: Node | None, monitor: bool) -> bool:
    if out_node is None or in_node is None:
        return False
    outs = graph.ports_of(out_node.id, "out", monitor=monitor if monitor else None)
    ins = graph.ports_of(in_node.id, "in")
    if not outs or not ins:
        return False
    wanted = channel_pairs(outs, ins)
    have = {(lk.out_port, lk.in_port) for lk in graph.links_between(out_node.id, in_node.id)}
    return bool(wanted) and all(pair in have for pair in wanted)


def channel_pairs(outs: list, ins: list) -> list[tuple[int, int]]:  # type: ignore[type-arg]
    """Pair output and input ports by channel; a mono side feeds, or is fed by, every channel."""
    pairs: list[tuple[int, int]] = []
    by_channel = {p.channel: p for p in ins}
    for p in outs:
        if p.channel in by_channel:
            pairs.append((p.id, by_channel[p.channel].id))
    if pairs:
        return pairs
    if len(outs) == 1:
        return [(outs[0].id, q.id) for q in ins]
    if len(ins) == 1:
        return [(p.id, ins[0].id) for p in outs]
    return [(p.id, q.id) for p, q in zip(outs, ins, strict=False)]


def observe_group(graph: Graph, group: str) -> GroupState:
    sink: Node | None = None
    ins: dict[str, Node] = {}
    outs: dict[str, Node] = {}
    for node in graph.nodes.values():
        if node.props.get(PROP_GROUP) != group:
            continue
        role = node.props.get(PROP_ROLE)
        member = node.props.get(PROP_MEMBER)
        if role == ROLE_SINK:
            sink = node
        elif role == ROLE_IN and isinstance(member, str):
            ins[member] = node
        elif role == ROLE_OUT and isinstance(member, str):
            outs[member] = node
    rate = graph_rate(graph)
    members = []
    for key in sorted(set(ins) | set(outs)):
        in_node, out_node = ins.get(key), outs.get(key)
        spk = find_speaker(graph, key)
        spk_node = graph.nodes.get(spk.node_id) if spk else None
        linked = _fed(graph, sink, in_node) and _linked(graph, out_node, spk_node, monitor=False)
        owner = in_node or out_node
        members.append(
            MemberState(
                speaker=key,
                in_node=in_node,
                out_node=out_node,
                speaker_node=spk_node,
                linked=linked,
                delay_ms=applied_delay_ms(in_node, rate) if in_node else None,
                gain=applied_gain(in_node) if in_node else None,
                pid=graph.client_pid(owner) if owner else None,
            )
        )
    return GroupState(name=group, sink=sink, members=tuple(members))
