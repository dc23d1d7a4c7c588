"""The status view model: each group and member as `pwgroup status`, `status --json`, the dashboard and the
daemon's log speak of them, derived in one place from the graph, the config and the daemon's report. Pure."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from pwgroup.config import Config, GroupConfig
from pwgroup.graph import layout
from pwgroup.model import Graph, MemberState, normalize_address
from pwgroup.text import safe_text

PLAYING, UNLINKED, ABSENT, NOT_BUILT = "playing", "unlinked", "absent", "not built"


@dataclass(frozen=True)
class DaemonReport:
    """The session's reconciler as `status` sees it: its pid (None: none runs), each member's reconnect state
    ("waiting 8 s", "giving up: ...") and when each member last came back (wall clock, seconds)."""

    pid: int | None = None
    reconnect: Mapping[str, str] = field(default_factory=dict)
    returned: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MemberStatus:
    group: str
    speaker: str  # the member's key: a Bluetooth address, else a node name
    state: str  # playing | unlinked | absent | not built
    present: bool  # its speaker's audio node is in the graph
    linked: bool
    node: str | None = None  # the speaker's audio node, while its element is built
    delay_ms: float | None = None  # applied in the graph
    gain: float | None = None  # applied in the element's mixer (volume, halved for mono)
    in_config: bool = False
    trim_ms: float | None = None  # the config's (None: not in the config)
    wanted_ms: float | None = None  # the config's total: calibrated plus trim
    latency_ms: float | None = None
    calibrated: dt.datetime | None = None
    volume: float | None = None  # the config's linear gain
    channels: str | None = None  # the config's channel role
    reconnect: str | None = None  # the daemon's reconnect state for it
    needs_calibration: bool = False
    recheck_latency: bool = False  # it came back since it was calibrated: its latency may have changed
    gain_unapplied: bool = False  # a volume or channel role is configured that this server cannot apply

    @property
    def notes(self) -> tuple[str, ...]:
        """Its health in short words, as the dashboard's column shows them."""
        out = []
        if not self.present and self.reconnect:
            out.append(f"reconnect: {self.reconnect}")
        if self.needs_calibration:
            out.append("needs calibration")
        if self.recheck_latency:
            out.append("re-check latency")
        if self.gain_unapplied:
            out.append("volume/role not applied here")
        return tuple(out)


@dataclass(frozen=True)
class GroupStatus:
    name: str
    built: bool  # its sink is in the graph
    in_config: bool
    sink: str | None = None  # the sink's node name
    description: str | None = None  # what apps see now: the sink's description (None: not built)
    wanted_description: str | None = None  # the config's
    volume: float | None = None  # the sink's own volume, on the mixer scale
    muted: bool | None = None
    members: tuple[MemberStatus, ...] = ()

    def member(self, speaker: str) -> MemberStatus | None:
        return next((m for m in self.members if m.speaker == speaker), None)


def member_present(graph: Graph, seen: MemberState | None, speaker: str) -> bool:
    """A member is present while its speaker's audio node is in the graph, element or not."""
    return bool(seen and seen.present) or layout.find_speaker(graph, speaker) is not None


def member_state(built: bool, seen: MemberState | None, present: bool) -> str:
    if seen is None or not built:
        return NOT_BUILT
    if seen.linked:
        return PLAYING
    return UNLINKED if present else ABSENT


def presence(graph: Graph, name: str, wanted: GroupConfig | None) -> dict[str, bool]:
    """Whether each configured member of group `name` is present now."""
    if wanted is None:
        return {}
    state = layout.observe_group(graph, name)
    return {m.speaker: member_present(graph, state.member(m.speaker), m.speaker) for m in wanted.members}


def presence_change(group: str, who: str, present: bool, relinking: bool = False) -> tuple[str, str]:
    """(level, text) for a member going or coming back; `relinking`: the one saying it is the reconciler."""
    if not present:
        return "warning", f"group {group}: {who} went away; the others play on"
    text = f"group {group}: {who} returned"
    if relinking:
        text += (
            f"; relinking it with its delay (its latency may have changed: 'pwgroup calibrate {group} --method fast' "
            "checks it)"
        )
    return "info", text


def group_names(graph: Graph, config: Config) -> list[str]:
    return sorted(set(layout.group_names(graph)) | set(config.groups))


def derive(
    graph: Graph,
    config: Config,
    report: DaemonReport | None = None,
    now: dt.datetime | None = None,
    names: Collection[str] | None = None,
    member_gain: bool = True,
) -> tuple[GroupStatus, ...]:
    """Every group the graph or the config knows (or those `names`), by name, and their members: the graph's
    elements first, then configured members without one. `now` (UTC) dates calibrations; `member_gain`: the
    server applies members' volumes and channel roles (capabilities.member_gain)."""
    report = report or DaemonReport()
    now = now or dt.datetime.now(dt.UTC)
    out = []
    for name in group_names(graph, config) if names is None else sorted(names):
        state = layout.observe_group(graph, name)
        wanted = config.groups.get(name)
        keys = [m.speaker for m in state.members]
        keys += [m.speaker for m in wanted.members if m.speaker not in keys] if wanted else []
        members = []
        for key in keys:
            seen = state.member(key)
            cm = wanted.member(key) if wanted else None
            present = member_present(graph, seen, key)
            back = report.returned.get(key)
            members.append(
                MemberStatus(
                    group=name,
                    speaker=key,
                    state=member_state(state.sink is not None, seen, present),
                    present=present,
                    linked=seen is not None and seen.linked,
                    node=seen.speaker_node.name if seen and seen.speaker_node else None,
                    delay_ms=seen.delay_ms if seen else None,
                    gain=seen.gain if seen else None,
                    in_config=cm is not None,
                    trim_ms=cm.trim_ms if cm else None,
                    wanted_ms=cm.total_delay_ms if cm else None,
                    latency_ms=cm.latency_ms if cm else None,
                    calibrated=cm.calibrated if cm else None,
                    volume=cm.volume if cm else None,
                    channels=cm.channels if cm else None,
                    reconnect=report.reconnect.get(key),
                    needs_calibration=cm is not None and cm.stale(now, config.calibration.stale_after_days),
                    # A Bluetooth speaker that reconnected may fill its buffers differently.
                    recheck_latency=cm is not None
                    and back is not None
                    and (cm.calibrated is None or back > cm.calibrated.timestamp()),
                    gain_unapplied=not member_gain and cm is not None and (cm.volume != 1.0 or cm.channels != "both"),
                )
            )
        sink = state.sink
        out.append(
            GroupStatus(
                name,
                built=sink is not None,
                in_config=wanted is not None,
                sink=sink.name if sink else None,
                description=sink.description if sink else None,
                wanted_description=wanted.description if wanted else None,
                volume=layout.sink_volume(sink) if sink else None,
                muted=sink.mute if sink else None,
                members=tuple(members),
            )
        )
    return tuple(out)


# ---------------------------------------------------------------- `pwgroup status`: JSON and text


def member_json(m: MemberStatus) -> dict[str, Any]:
    data: dict[str, Any] = {
        "address": normalize_address(m.speaker),
        "speaker": m.speaker,
        "node": m.node,
        "state": m.state,
        "present": m.present,
        "linked": m.linked,
        "delay_ms": m.delay_ms,
        "reconnect": m.reconnect,
        "notes": list(m.notes),
        "in_config": m.in_config,
    }
    if m.in_config:
        data |= {
            "recheck_latency": m.recheck_latency,
            "trim_ms": m.trim_ms,
            "volume": m.volume,
            "channels": m.channels,
            "latency_ms": m.latency_ms,
            "calibrated": m.calibrated.isoformat() if m.calibrated else None,
            "needs_calibration": m.needs_calibration,
        }
    return data


def status_json(
    groups: tuple[GroupStatus, ...],
    daemon: int | None,
    backend: str,
    backend_reason: str | None = None,
    capabilities: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    """What `pwgroup status --json` prints."""
    data: dict[str, Any] = {
        "daemon": daemon,
        "backend": backend,
        "backend_reason": backend_reason,
        "groups": [
            {
                "name": g.name,
                "description": g.description,
                "sink": g.sink,
                "built": g.built,
                "in_config": g.in_config,
                "members": [member_json(m) for m in g.members],
            }
            for g in groups
        ],
    }
    if capabilities is not None:
        data["capabilities"] = dict(capabilities)
    return data


def status_lines(
    groups: tuple[GroupStatus, ...], daemon: int | None, backend: str, backend_reason: str | None = None
) -> list[str]:
    """What `pwgroup status` prints: names from the air go through safe_text."""
    lines = [f"backend: {backend} ({backend_reason})"]
    idle = "daemon: not running: nothing heals the groups ('pwgroup daemon')"
    lines.append(f"daemon: pid {daemon}" if daemon else idle)
    if not groups:
        lines.append("no groups: create one with 'pwgroup group create NAME SPEAKER...'")
    for g in groups:
        sink = g.sink or "(not built: start 'pwgroup daemon', or edit the group)"
        lines.append(f"{g.name}  sink {sink}  {safe_text(g.description or '', 60)}")
        for m in g.members:
            state = m.state
            if not m.present and m.reconnect:
                state = f"{state}, reconnect: {m.reconnect}"
            delay = "-" if m.delay_ms is None else f"{m.delay_ms:.3f} ms"
            note = "  needs calibration" if m.needs_calibration else ""
            if m.recheck_latency:
                note += "  reconnected since: re-check its latency (calibrate --method fast)"
            lines.append(f"  {safe_text(m.speaker, 48)}  {state}  delay {delay}{note}")
    return lines
