"""Edits of the desired state, shared by the CLI and the dashboard: change one group in config.toml, save it,
then make the graph match, through the running daemon when there is one, else here."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

from pwgroup.config import ConfigFile, GroupConfig, MemberConfig
from pwgroup.graph import Backend
from pwgroup.model import Graph, GroupSpec
from pwgroup.supervisor import converge, daemon_pid, desired_from_graph, wait_applied

# edit(graph, current) -> the wanted group, or None to delete it; raises UserError to refuse.
Edit = Callable[[Graph, GroupConfig | None], GroupConfig | None]


def adopt(graph: Graph, name: str) -> GroupConfig | None:
    """A group only the graph knows (made before the config, or by hand) as a config entry."""
    found = desired_from_graph(graph, name)
    if found is None:
        return None
    return GroupConfig(found.name, found.description, tuple(MemberConfig(m.speaker, m.delay_ms) for m in found.members))


async def apply(be: Any, desired: GroupSpec | None, name: str, at_once: bool = False) -> None:
    """Make group `name` in the graph match `desired`: the daemon does it when it runs (we wait for it)."""
    pid = daemon_pid(be.env)
    if pid is None:
        await converge(be, desired, name, at_once=at_once)
        return
    os.kill(pid, signal.SIGHUP)
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
