"""Edits of the desired state, shared by the CLI and the dashboard: change one group in config.toml, save it,
then make the graph match, through the running daemon when there is one, else here."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pwgroup.config import ConfigFile, GroupConfig, MemberConfig
from pwgroup.graph import Backend
from pwgroup.model import Graph, GroupSpec, UserError
from pwgroup.supervisor import converge, daemon_pid, desired_from_graph, hold, wait_applied

# edit(graph, current) -> the wanted group, or None to delete it; raises UserError to refuse.
Edit = Callable[[Graph, GroupConfig | None], GroupConfig | None]


def adopt(graph: Graph, name: str) -> GroupConfig | None:
    """A group only the graph knows (made before the config, or by hand) as a config entry."""
    found = desired_from_graph(graph, name)
    if found is None:
        return None
    return GroupConfig(found.name, found.description, tuple(MemberConfig(m.speaker, m.delay_ms) for m in found.members))


async def apply(be: Any, desired: GroupSpec | None, name: str, at_once: bool = False) -> None:
    """Make group `name` in the graph match `desired`: the session's reconciler does it when one runs (the
    daemon, or a dashboard standing in for it), and we wait for it; else we do it here."""
    pid = daemon_pid(be.env)
    if pid is None:
        await converge(be, desired, name, at_once=at_once)
        return
    os.kill(pid, signal.SIGUSR1)
    await wait_applied(be, desired, name)


async def edit_group(be: Backend, cfg: ConfigFile, name: str, edit: Edit) -> GroupConfig | None:
    """Edit one group in `cfg` (the desired state), save it, and make the graph match; returns what was saved."""
    current = cfg.group(name) or adopt(be.graph, name)
    desired = edit(be.graph, current)
    if desired is None:
        cfg.remove_group(name)
    else:
        cfg.set_group(desired)
    cfg.save()
    await apply(be, desired.spec() if desired else None, name)
    return desired


def with_calibration(group: GroupConfig, report: Any) -> GroupConfig:
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
        be: Any,
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
        self.report: Any = None
        self._hold = contextlib.ExitStack()

    def _converge(self, desired: GroupSpec, at_once: bool = False) -> Any:
        return converge(self.be, desired, self.name, at_once=at_once)

    async def measure(self, progress: Callable[[str, float], None] | None = None) -> Any:
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
            cfg = ConfigFile.open(self.path)  # again: edits made while measuring are kept
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
