"""Plain data shared by every room of pwgroup: speakers, groups, members, the observed graph, actions.

Nothing here does I/O or imports another pwgroup module, so every other room can depend on it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

# Exit codes shared by the CLI and the daemon.
EXIT_OK = 0
EXIT_FAILED = 1  # the command ran but its result did not hold (e.g. calibration failed verification)
EXIT_USER = 2
EXIT_UNREACHABLE = 3


class PwgroupError(Exception):
    """An error meant for the user: one line saying what is wrong and what to do."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UserError(PwgroupError):
    exit_code = EXIT_USER


class ServerUnreachable(PwgroupError):
    exit_code = EXIT_UNREACHABLE


class BackendError(PwgroupError):
    """The sound server refused or failed an action."""

    exit_code = 1


_MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}([:_-][0-9A-Fa-f]{2}){5}$")
GROUP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")


def normalize_address(text: str) -> str | None:
    """`aa_bb_cc_dd_ee_ff` or `AA:BB:...` -> `AA:BB:CC:DD:EE:FF`; None when it is not a MAC address."""
    if not _MAC_RE.match(text):
        return None
    return re.sub(r"[_-]", ":", text).upper()


def check_group_name(name: str) -> str:
    if not GROUP_NAME_RE.match(name):
        raise UserError(
            f"invalid group name {name!r}: use 1-48 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return name


# ---------------------------------------------------------------- the observed graph


@dataclass(frozen=True)
class Port:
    id: int
    node_id: int
    name: str
    direction: Literal["in", "out"]
    channel: str
    monitor: bool = False
    # The latency the port reports downstream of itself (its Latency param in its own direction): quanta,
    # samples and nanoseconds. On a Bluetooth sink it holds BlueZ's transport delay or PipeWire's codec guess.
    latency: tuple[float, int, int] | None = None

    def latency_ms(self, quantum: int, rate: int) -> float | None:
        if self.latency is None:
            return None
        quanta, samples, ns = self.latency
        return (quanta * quantum + samples) * 1000.0 / rate + ns / 1e6


@dataclass(frozen=True)
class Link:
    id: int
    out_node: int
    out_port: int
    in_node: int
    in_port: int


@dataclass(frozen=True)
class Node:
    id: int
    name: str
    media_class: str
    props: Mapping[str, Any] = field(default_factory=dict)
    controls: Mapping[str, float] = field(default_factory=dict)
    # Its own volume (Props channelVolumes: linear amplitude per channel) and mute, where the server says.
    channel_volumes: tuple[float, ...] = ()
    mute: bool | None = None

    @property
    def description(self) -> str:
        return str(self.props.get("node.description") or self.name)


@dataclass
class Graph:
    """A snapshot of the PipeWire (or PulseAudio) graph, keyed by object id."""

    nodes: dict[int, Node] = field(default_factory=dict)
    ports: dict[int, Port] = field(default_factory=dict)
    links: dict[int, Link] = field(default_factory=dict)
    clients: dict[int, Mapping[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    settings_id: int | None = None
    core_version: str | None = None  # the server's own version (PipeWire's Core object), where it says one

    def client_pid(self, node: Node) -> int | None:
        """The process that owns a node, from its client's `application.process.id`."""
        client = self.clients.get(node.props.get("client.id", -1))
        raw = client.get("application.process.id") if client else None
        return int(raw) if isinstance(raw, int | str) and str(raw).isdigit() else None

    def node_by_name(self, name: str) -> Node | None:
        for node in self.nodes.values():
            if node.name == name:
                return node
        return None

    def ports_of(self, node_id: int, direction: Literal["in", "out"], monitor: bool | None = None) -> list[Port]:
        found = [
            p
            for p in self.ports.values()
            if p.node_id == node_id and p.direction == direction and (monitor is None or p.monitor == monitor)
        ]
        return sorted(found, key=lambda p: p.id)

    def links_between(self, out_node: int, in_node: int) -> list[Link]:
        return [lk for lk in self.links.values() if lk.out_node == out_node and lk.in_node == in_node]

    def links_of(self, node_id: int) -> list[Link]:
        return [lk for lk in self.links.values() if node_id in (lk.out_node, lk.in_node)]


# ---------------------------------------------------------------- member targets

# What a member plays to. Its key (in the config, in a MemberSpec) says the kind: a Bluetooth address, or the exact
# name of a sink node. The backend resolves a key in its graph; nothing else needs to know the kind.
KIND_BLUETOOTH: Final = "bluetooth"  # a Bluetooth speaker, by address (BlueZ names its sink after it)
KIND_SINK: Final = "sink"  # any other sink of this server, by node name: USB, HDMI, analog, a network sink
# A group on another host (pwgroup/hosts, over Snapcast). Reserved: no key parses to it yet, and the local graph
# never resolves it; the hosts room will give it a key form that no node name or address can take.
KIND_REMOTE: Final = "remote"
TargetKind = Literal["bluetooth", "sink", "remote"]
# Nodes pwgroup made (group sinks, member elements, the virtual room's plumbing) carry this prop: never a member.
PROP_ROLE = "pwgroup.role"


def target_kind(key: str) -> TargetKind:
    """The kind of member a key names, from the key alone: a Bluetooth address, else a node name."""
    return KIND_BLUETOOTH if normalize_address(key) else KIND_SINK


@dataclass(frozen=True)
class Speaker:
    """A member target the sound server shows now: a Bluetooth speaker (BlueZ fills in more later), or another
    sink, keyed by its node name."""

    node_name: str
    node_id: int
    description: str
    address: str | None
    codec: str | None = None
    profile: str | None = None
    kind: TargetKind = KIND_BLUETOOTH

    @property
    def key(self) -> str:
        return self.address or self.node_name


def speaker_from_node(node: Node) -> Speaker | None:
    """A node is a member target when it is an audio sink pwgroup did not make: a Bluetooth speaker when BlueZ
    drives it, otherwise a sink by node name."""
    if node.media_class != "Audio/Sink" or PROP_ROLE in node.props:
        return None
    if node.props.get("device.api") != "bluez5":
        return Speaker(node_name=node.name, node_id=node.id, description=node.description, address=None, kind=KIND_SINK)
    raw_addr = node.props.get("api.bluez5.address")
    address = normalize_address(raw_addr) if isinstance(raw_addr, str) else None
    codec = node.props.get("api.bluez5.codec")
    profile = node.props.get("api.bluez5.profile")
    return Speaker(
        node_name=node.name,
        node_id=node.id,
        description=node.description,
        address=address,
        codec=codec if isinstance(codec, str) else None,
        profile=profile if isinstance(profile, str) else None,
    )


def speakers_in(graph: Graph) -> list[Speaker]:
    """Every member target in the graph, Bluetooth or not."""
    found = [s for n in graph.nodes.values() if (s := speaker_from_node(n)) is not None]
    return sorted(found, key=lambda s: (s.key, s.node_id))


# ---------------------------------------------------------------- desired and observed groups


@dataclass(frozen=True)
class MemberSpec:
    """A wanted member: its target (a Bluetooth address or a sink's node name), its delay, volume and channel
    role."""

    speaker: str
    delay_ms: float = 0.0
    volume: float = 1.0
    channels: str = "both"  # both | left | right | mono (a downmix of both)

    @property
    def kind(self) -> TargetKind:
        return target_kind(self.speaker)


@dataclass(frozen=True)
class GroupSpec:
    name: str
    description: str
    members: tuple[MemberSpec, ...] = ()

    def member(self, speaker: str) -> MemberSpec | None:
        for m in self.members:
            if m.speaker == speaker:
                return m
        return None


@dataclass(frozen=True)
class MemberState:
    """A member as found in the graph: its delay element and whether its speaker is there and linked."""

    speaker: str
    in_node: Node | None
    out_node: Node | None
    speaker_node: Node | None
    linked: bool
    delay_ms: float | None
    pid: int | None
    gain: float | None = None  # the playing line's gain in the element's mixer: volume, halved for mono

    @property
    def present(self) -> bool:
        return self.speaker_node is not None


@dataclass(frozen=True)
class GroupState:
    name: str
    sink: Node | None
    members: tuple[MemberState, ...] = ()

    def member(self, speaker: str) -> MemberState | None:
        for m in self.members:
            if m.speaker == speaker:
                return m
        return None


# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class CreateSink:
    group: GroupSpec


@dataclass(frozen=True)
class DestroySink:
    group: str
    node_id: int


@dataclass(frozen=True)
class StartMember:
    group: str
    member: MemberSpec


@dataclass(frozen=True)
class StopMember:
    group: str
    speaker: str
    pid: int | None
    node_ids: tuple[int, ...]


@dataclass(frozen=True)
class LinkPorts:
    out_port: int
    in_port: int


@dataclass(frozen=True)
class Unlink:
    link_id: int


@dataclass(frozen=True)
class SetDelay:
    group: str
    speaker: str
    node_id: int
    delay_ms: float


@dataclass(frozen=True)
class SetGain:
    group: str
    speaker: str
    node_id: int
    gain: float


Action = CreateSink | DestroySink | StartMember | StopMember | LinkPorts | Unlink | SetDelay | SetGain
