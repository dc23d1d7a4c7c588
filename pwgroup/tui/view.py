"""What the dashboard shows, without Textual or I/O: the Snapshot of speakers and groups (the groups' rows rendered
from pwgroup.status, the view `pwgroup status` prints too), the events between two snapshots, the scan's rows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

from pwgroup.bluez.props import Device
from pwgroup.bluez.view import SpeakerView
from pwgroup.config import Config
from pwgroup.model import Graph, normalize_address
from pwgroup.status import DaemonReport, derive, presence_change

BLUEZ_GONE = "Bluetooth control unavailable: BlueZ (org.bluez) is not running"


@dataclass(frozen=True)
class SpeakerRow:
    key: str  # what a group member is called: the address, else the node name
    name: str  # from the air: hostile text, shown literally
    address: str | None
    connection: str
    present: bool  # its audio node is in the graph
    codec: str | None
    reported_ms: float | None  # MediaTransport1.Delay, as BlueZ reports it
    battery: int | None
    groups: tuple[str, ...] = ()
    delay_ms: float | None = None  # the applied delay of its member element (first group)
    measured_ms: float | None = None  # the calibrated latency in config.toml (first group that has one)
    paired: bool | None = None  # None: BlueZ does not know it (or is not reachable)
    trusted: bool | None = None


@dataclass(frozen=True)
class MemberRow:
    group: str
    speaker: str
    name: str
    state: str  # playing | absent | unlinked | not built
    present: bool
    linked: bool
    delay_ms: float | None  # applied in the graph
    trim_ms: float | None  # from the config (None: not in the config)
    wanted_ms: float | None  # the config's total (calibrated plus trim)
    health: str = ""  # "reconnect: waiting 8 s", "needs calibration", "re-check latency", joined by ", "
    volume: float | None = None  # the config's (a linear gain, 1.0 = as played), else the graph's gain
    channels: str | None = None  # the config's channel role: both | left | right | mono
    gain: float | None = None  # the gain applied in the element's mixer (volume, halved for mono)


@dataclass(frozen=True)
class GroupRow:
    name: str
    description: str
    built: bool
    in_config: bool
    members: tuple[MemberRow, ...] = ()
    volume: float | None = None  # the group sink's own volume, on the mixer scale (pavucontrol's percent)
    muted: bool | None = None
    wanted_description: str | None = None  # the config's, while the sink still shows another


@dataclass(frozen=True)
class Snapshot:
    backend: str
    daemon: int | None
    speakers: tuple[SpeakerRow, ...] = ()
    groups: tuple[GroupRow, ...] = ()
    bluetooth: str | None = None  # why BlueZ's half is missing, or None
    config_error: str | None = None
    bluetooth_lost: bool = False  # BlueZ answered earlier in this session and does not now

    def group(self, name: str) -> GroupRow | None:
        return next((g for g in self.groups if g.name == name), None)

    def member(self, group: str, speaker: str) -> MemberRow | None:
        g = self.group(group)
        return next((m for m in g.members if m.speaker == speaker), None) if g else None


def build_snapshot(
    graph: Graph,
    config: Config,
    views: Sequence[SpeakerView],
    backend: str,
    daemon: int | None = None,
    bluetooth: str | None = None,
    config_error: str | None = None,
    known_names: Mapping[str, str] | None = None,
    reconnect: Mapping[str, str] | None = None,
    returned: Mapping[str, float] | None = None,
    now: dt.datetime | None = None,
    bluetooth_lost: bool = False,
) -> Snapshot:
    """What the dashboard shows, from what was observed and what is wanted; `known_names` names speakers that
    are away now (a member's name when it was last seen); `reconnect` and `returned` are the daemon's report
    (pwgroup.health); `now` (UTC) dates calibrations. Pure."""
    names: dict[str, str] = {}
    for v in views:
        for key in (v.address, v.node):
            if key:
                names.setdefault(key, v.name)
    report = DaemonReport(daemon, reconnect or {}, returned or {})
    groups = tuple(
        GroupRow(
            g.name,
            g.description or g.wanted_description or g.name,
            g.built,
            g.in_config,
            tuple(
                MemberRow(
                    group=g.name,
                    speaker=m.speaker,
                    name=names.get(m.speaker) or (known_names or {}).get(m.speaker, m.speaker),
                    state=m.state,
                    present=m.present,
                    linked=m.linked,
                    delay_ms=m.delay_ms,
                    trim_ms=m.trim_ms,
                    wanted_ms=m.wanted_ms,
                    health=", ".join(m.notes),
                    # A group only the graph knows shows what its elements apply.
                    volume=m.volume if m.in_config else m.gain,
                    channels=m.channels,
                    gain=m.gain,
                )
                for m in g.members
            ),
            volume=g.volume,
            muted=g.muted,
            wanted_description=g.wanted_description
            if g.built and g.wanted_description is not None and g.wanted_description != g.description
            else None,
        )
        for g in derive(graph, config, report, now)
    )
    speakers: list[SpeakerRow] = []
    for v in views:
        key = v.address or v.node or v.name
        member_of = [(g.name, m) for g in groups for m in g.members if m.speaker in (v.address, v.node)]
        speakers.append(
            SpeakerRow(
                key=key,
                name=v.name,
                address=v.address,
                connection=v.connection,
                present=v.node is not None,
                codec=v.codec,
                reported_ms=v.delay_ms,
                battery=v.battery,
                groups=tuple(g for g, _ in member_of),
                delay_ms=next((m.delay_ms for _, m in member_of if m.delay_ms is not None), None),
                measured_ms=measured_latency(config, (v.address, v.node)),
                paired=v.paired,
                trusted=v.trusted,
            )
        )
    # A group member whose speaker is away (and BlueZ does not list it) is still a speaker to show: absent.
    listed = {k for v in views for k in (v.address, v.node) if k}
    away = sorted({m.speaker for g in groups for m in g.members if not m.present} - listed)
    for key in away:
        member_of = [(g.name, m) for g in groups for m in g.members if m.speaker == key]
        speakers.append(
            SpeakerRow(
                key=key,
                name=member_of[0][1].name,
                address=normalize_address(key),
                connection="absent",
                present=False,
                codec=None,
                reported_ms=None,
                battery=None,
                groups=tuple(g for g, _ in member_of),
                delay_ms=next((m.delay_ms for _, m in member_of if m.delay_ms is not None), None),
                measured_ms=measured_latency(config, (key,)),
            )
        )
    speakers.sort(key=lambda r: (r.address or "", r.key))
    return Snapshot(backend, daemon, tuple(speakers), groups, bluetooth, config_error, bluetooth_lost)


def events_between(old: Snapshot | None, new: Snapshot) -> list[tuple[str, str]]:
    """(level, text) lines for what changed that a person wants to hear about: members going and returning
    (in pwgroup.status's words), speakers appearing and leaving, groups built and gone. Pure."""
    if old is None:
        return []
    out: list[tuple[str, str]] = []
    before = {s.key: s for s in old.speakers}
    after = {s.key: s for s in new.speakers}
    for key in sorted(after.keys() - before.keys()):
        out.append(("info", f"speaker {after[key].name} appeared"))
    for key in sorted(before.keys() - after.keys()):
        out.append(("info", f"speaker {before[key].name} is gone"))
    for g in new.groups:
        was = old.group(g.name)
        if was is None:
            out.append(("info", f"group {g.name} " + ("built" if g.built else "configured")))
            continue
        if g.built != was.built:
            out.append(("info" if g.built else "warning", f"group {g.name} " + ("built" if g.built else "sink gone")))
        for m in g.members:
            prev = next((p for p in was.members if p.speaker == m.speaker), None)
            if not prev or prev.present == m.present:
                continue
            out.append(presence_change(g.name, m.name if m.name != m.speaker else prev.name, m.present))
    for g in old.groups:
        if new.group(g.name) is None:
            out.append(("info", f"group {g.name} deleted"))
    return out


def now_text() -> str:
    return dt.datetime.now().strftime("%H:%M:%S")


# ---------------------------------------------------------------- Bluetooth: pairing words, the scan, the banner


def pairing_text(paired: bool | None, trusted: bool | None) -> str:
    """How the speakers table and the scan view say a device's pairing: '-' when BlueZ does not know it."""
    if paired is None:
        return "-"
    if paired and trusted:
        return "paired, trusted"
    return "paired" if paired else ("trusted" if trusted else "new")


@dataclass(frozen=True)
class FoundRow:
    """A device the scan view lists: `name` is from the air (hostile text), `rssi` None once not heard."""

    address: str
    name: str
    rssi: int | None
    audio_sink: bool
    paired: bool
    trusted: bool
    connected: bool


def found_rows(devices: Sequence[Device], seen: Set[str]) -> tuple[FoundRow, ...]:
    """What the scan view lists: the devices heard in this scan (`seen`, or an RSSI now) and every unpaired one
    BlueZ knows (it only keeps those it found lately); speakers first, then by address, so rows stay put. Pure."""
    rows = [
        FoundRow(d.address, d.alias, d.rssi, d.audio_sink, d.paired, d.trusted, d.connected)
        for d in devices
        if d.rssi is not None or d.address in seen or not d.paired
    ]
    return tuple(sorted(rows, key=lambda r: (not r.audio_sink, r.address)))


def banner_lines(server_lost: str | None, snap: Snapshot | None) -> list[str]:
    """Every problem the banner shows, one line each, so that one never hides another. Pure."""
    lines = []
    if server_lost:
        lines.append(f"sound server lost: {server_lost}")
    if snap is not None and snap.config_error:
        lines.append(f"config: {snap.config_error}")
    if snap is not None and snap.bluetooth_lost and snap.bluetooth:
        reason = snap.bluetooth.removeprefix("Bluetooth control unavailable: ")
        lines.append(f"Bluetooth lost: {reason}")  # one line at 80 columns; the event log says the rest
    return lines


def measured_latency(config: Config, keys: Sequence[str | None]) -> float | None:
    """The calibrated latency config.toml holds for a speaker known by any of `keys` (its address, its node),
    from the first group (by name) that measured it. Pure."""
    for name in sorted(config.groups):
        for member in config.groups[name].members:
            if member.speaker in keys and member.latency_ms is not None:
                return member.latency_ms
    return None
