"""Edits of the desired state, shared by the CLI and the dashboard: change one group in config.toml, save it,
then make the graph match, through the running daemon when there is one, else here."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pwgroup.config import CHANNELS, ConfigFile, GroupConfig, MemberConfig
from pwgroup.graph import Backend, layout
from pwgroup.model import Graph, GroupSpec, Node, UserError, normalize_address
from pwgroup.supervisor import converge, daemon_pid, desired_from_graph, wait_applied
from pwgroup.text import safe_text

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


# ---------------------------------------------------------------- edits the CLI and the dashboard both make

MAX_DESCRIPTION = 256
VOLUME_MAX = 1.5  # a member's volume, as config.toml allows it


def need_group(current: GroupConfig | None, name: str) -> GroupConfig:
    if current is None:
        raise UserError(f"no group named {name!r}: 'pwgroup status' lists the groups")
    return current


def resolve_speaker(graph: Graph, text: str) -> str:
    """A speaker present in the graph, by address or node name: its member key."""
    spk = layout.find_speaker(graph, text)
    if spk is None:
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
    plays to it (on PipeWire, where the graph shows apps' links); otherwise the description is saved and
    appears when the sink is next built. Returns whether apps see the new description now."""
    text = check_description(description)

    def edit(graph: Graph, current: GroupConfig | None) -> GroupConfig:
        return replace(need_group(current, name), description=text)

    desired = await edit_group(be, cfg, name, edit)
    assert desired is not None
    sink = layout.observe_group(be.graph, name).sink
    if sink is None or sink.description == text:
        return sink is not None
    if be.name != "pipewire" or apps_playing_to(be.graph, sink):
        return False
    await be.destroy_node(sink.id)
    await apply(be, desired.spec(), name)
    return True
