"""Edits of the desired state, shared by the CLI and the dashboard: change one group in config.toml, save it,
then make the graph match, through the running daemon when there is one, else here."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from pwgroup.config import CHANNELS, ConfigFile, GroupConfig, MemberConfig
from pwgroup.graph import Backend, layout
from pwgroup.model import Graph, GroupSpec, Node, UserError, normalize_address
from pwgroup.supervisor.executor import converge, wait_applied
from pwgroup.supervisor.reconcile import desired_from_graph
from pwgroup.supervisor.session import daemon_pid, hold
from pwgroup.text import safe_text

if TYPE_CHECKING:  # calibration (and numpy) load only when a group is calibrated
    from pwgroup.calibrate.session import Report

# edit(graph, current) -> the wanted group, or None to delete it; raises UserError to refuse.
Edit = Callable[[Graph, GroupConfig | None], GroupConfig | None]


def adopt(graph: Graph, name: str) -> GroupConfig | None:
    """A group only the graph knows (made before the config, or by hand) as a config entry."""
    found = desired_from_graph(graph, name)
    if found is None:
        return None
    return GroupConfig(found.name, found.description, tuple(MemberConfig(m.speaker, m.delay_ms) for m in found.members))


async def apply(be: Backend, desired: GroupSpec | None, name: str, at_once: bool = False) -> None:
    """Make group `name` in the graph match `desired`: the session's reconciler does it when one runs (the
    daemon, or a dashboard standing in for it), and we wait for it; else we do it here."""
    pid = daemon_pid(be.env)
    if pid is None:
        await converge(be, desired, name, at_once=at_once)
        return
    os.kill(pid, signal.SIGUSR1)
    # A backend may take longer to apply a change well (PulseAudio: a joining line settles, muted).
    await wait_applied(be, desired, name, timeout=10.0 + be.capabilities.settle_budget_s)


async def edit_group(be: Backend, cfg: ConfigFile, name: str, edit: Edit) -> GroupConfig | None:
    """Edit one group in `cfg`'s file (the desired state), save it, and make the graph match; returns what was
    saved. The file is read again under its lock, so an edit made meanwhile by another pwgroup is kept."""
    with ConfigFile.locked(cfg.path) as cfg:
        current = cfg.group(name) or adopt(be.graph, name)
        desired = edit(be.graph, current)
        if desired is None:
            cfg.remove_group(name)
        else:
            cfg.set_group(desired)
        cfg.save()
    await apply(be, desired.spec() if desired else None, name)
    return desired


def with_calibration(group: GroupConfig, report: Report) -> GroupConfig:
    """The group's config with what calibration found: aligned delays, latencies and when; trims stay."""
    import datetime as dt

    from pwgroup.config import with_member_values

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    for m in report.members:
        if m.status in ("ok", "reported") and m.delay_ms is not None and group.member(m.speaker) is not None:
            measured = m.status == "ok"  # a reported latency is a guess: it is not kept as a measurement
            group = with_member_values(
                group,
                m.speaker,
                delay_ms=m.delay_ms,
                latency_ms=m.latency_ms if measured else None,
                calibrated=now if measured else None,
            )
    return group


def _untold(what: str, done: float) -> None:
    pass


class Calibration:
    """One calibration of a group, as the CLI and the dashboard run it: measure (the daemon leaves the group
    alone meanwhile), then keep the result (saved, trims on top) or discard it (the delays the config has).

    The group stays held from `measure` until `keep` or `discard`: a person may look at the result first."""

    def __init__(
        self,
        be: Backend,
        path: Path,
        name: str,
        method: str,
        mic: str | None = None,
        reported: Mapping[str, float] | None = None,
    ) -> None:
        self.be, self.path, self.name, self.method = be, path, name, method
        self.mic = mic
        self.reported = dict(reported or {})
        self.group: GroupConfig | None = None
        self.report: Report | None = None
        self._hold = contextlib.ExitStack()

    async def _converge(self, desired: GroupSpec, at_once: bool = False) -> None:
        await converge(self.be, desired, self.name, at_once=at_once)

    async def measure(self, progress: Callable[[str, float], None] | None = None) -> Report:
        from pwgroup.calibrate.session import apply_reported, calibrate

        cfg = ConfigFile.open(self.path)
        group = cfg.group(self.name) or adopt(self.be.graph, self.name)
        if group is None:
            raise UserError(f"no group named {self.name!r}: 'pwgroup status' lists the groups")
        self.group = group
        self._hold.enter_context(hold(self.be.env, self.name))
        try:
            if self.method == "reported":
                self.report = await apply_reported(self.be, group.spec(), self._converge, self.reported)
            else:
                mic = self.mic or cfg.config.calibration.microphone
                fast, told = self.method == "fast", progress or _untold
                self.report = await calibrate(self.be, group.spec(), mic, self._converge, fast=fast, progress=told)
        except BaseException:
            self._hold.close()
            raise
        return self.report

    async def keep(self) -> GroupConfig:
        """Save what was measured (when it was verified) and apply it with the trims on top."""
        assert self.group is not None and self.report is not None
        try:
            with ConfigFile.locked(self.path) as cfg:  # read again: edits made while measuring are kept
                group = cfg.group(self.name) or self.group
                if self.report.applied:
                    group = with_calibration(group, self.report)
                    cfg.set_group(group)
                    cfg.save()
            await converge(self.be, group.spec(), self.name)
        finally:
            self._hold.close()
        await apply(self.be, group.spec(), self.name)  # the daemon, if one runs, takes the saved config
        return group

    async def discard(self) -> None:
        """Put the delays the config has back, and save nothing."""
        assert self.group is not None
        try:
            current = ConfigFile.open(self.path).group(self.name) or self.group
            await converge(self.be, current.spec(), self.name, at_once=True)
        finally:
            self._hold.close()
        await apply(self.be, current.spec(), self.name)

    def release(self) -> None:
        self._hold.close()


# ---------------------------------------------------------------- edits the CLI and the dashboard both make

MAX_DESCRIPTION = 256
VOLUME_MAX = 1.5  # a member's volume, as config.toml allows it


def need_group(current: GroupConfig | None, name: str) -> GroupConfig:
    if current is None:
        raise UserError(f"no group named {name!r}: 'pwgroup status' lists the groups")
    return current


def resolve_speaker(graph: Graph, text: str) -> str:
    """A member target present in the graph: a Bluetooth speaker by address or node name, any other sink by its
    exact node name. Returns its member key."""
    spk = layout.find_speaker(graph, text)
    if spk is None:
        node = graph.node_by_name(text)
        if node is not None and layout.PROP_ROLE in node.props:
            raise UserError(f"{safe_text(text, 60)!r} is pwgroup's own node: a group plays to speakers and sinks")
        if node is not None:
            raise UserError(f"{safe_text(text, 60)!r} is not a sink: a group plays to speakers and sinks")
        raise UserError(f"unknown speaker {safe_text(text, 60)!r}: run 'pwgroup speakers' to list them")
    return spk.key


def member_key(graph: Graph, group: GroupConfig, text: str) -> str:
    """The member of `group` that `text` names (its key, an address in any spelling, or its node's name)."""
    if group.member(text):
        return text
    addr = normalize_address(text)
    if addr and group.member(addr):
        return addr
    spk = layout.find_speaker(graph, text)
    if spk and group.member(spk.key):
        return str(spk.key)
    raise UserError(f"{safe_text(text, 60)!r} is not a member of group {group.name!r}")


def add_member(name: str, speaker: str, delay_ms: float = 0.0) -> Edit:
    """Add a present speaker to group `name`."""

    def edit(graph: Graph, current: GroupConfig | None) -> GroupConfig:
        group = need_group(current, name)
        key = resolve_speaker(graph, speaker)
        if group.member(key):
            raise UserError(f"{safe_text(speaker, 60)!r} is already in group {name!r}")
        return replace(group, members=(*group.members, MemberConfig(key, delay_ms)))

    return edit


def remove_member(name: str, speaker: str) -> Edit:
    """Take a member out of group `name` (the group stays, even empty)."""

    def edit(graph: Graph, current: GroupConfig | None) -> GroupConfig:
        group = need_group(current, name)
        key = member_key(graph, group, speaker)
        return replace(group, members=tuple(m for m in group.members if m.speaker != key))

    return edit


def next_channels(channels: str) -> str:
    """The channel role after `channels` in the cycle both -> left -> right -> mono -> both."""
    i = CHANNELS.index(channels) if channels in CHANNELS else -1
    return CHANNELS[(i + 1) % len(CHANNELS)]


def step_volume(volume: float, delta: float, top: float = VOLUME_MAX) -> float:
    """`volume` moved by `delta`, kept within 0..top and to whole percent (presses add up without drift)."""
    return round(min(top, max(0.0, volume + delta)), 2)


def check_description(description: str) -> str:
    """What apps show for a group: 1 to 256 characters of text, not only blanks (as config.toml allows)."""
    text = description.strip()
    if not text:
        raise UserError("a group's description cannot be empty")
    if len(text) > MAX_DESCRIPTION:
        raise UserError(f"the description is {len(text)} characters long: use at most {MAX_DESCRIPTION}")
    return text


def apps_playing_to(graph: Graph, sink: Node) -> int:
    """How many nodes other than pwgroup's own feed the sink's inputs: apps that a re-created sink would cut."""
    fed_by = {lk.out_node for lk in graph.links.values() if lk.in_node == sink.id}
    return sum(1 for n in fed_by if (node := graph.nodes.get(n)) is None or layout.PROP_ROLE not in node.props)


async def rename_group(be: Backend, cfg: ConfigFile, name: str, description: str) -> bool:
    """Change the description apps show for group `name` (its key NAME and sink name `pwgroup.NAME` stay).

    Neither PipeWire 0.3.65 nor PulseAudio lets a client change a sink's node.description once it exists: the
    sink is made again to show it. That would cut apps playing to it, so it is done now only while nothing
    plays to it (where the graph shows apps' links: `capabilities.rename_when_idle`); otherwise the description is
    saved and appears when the sink is next built. Returns whether apps see the new description now."""
    text = check_description(description)

    def edit(graph: Graph, current: GroupConfig | None) -> GroupConfig:
        return replace(need_group(current, name), description=text)

    desired = await edit_group(be, cfg, name, edit)
    assert desired is not None
    sink = layout.observe_group(be.graph, name).sink
    if sink is None or sink.description == text:
        return sink is not None
    if not be.capabilities.rename_when_idle or apps_playing_to(be.graph, sink):
        return False
    await be.destroy_node(sink.id)
    await apply(be, desired.spec(), name)
    return True
