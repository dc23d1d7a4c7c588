"""A Backend over an in-memory Graph, for driving the Supervisor without a sound server: it applies each action
to the graph as a server would, counts what it was asked, and can hold new links back to play a lagging watcher.

Not a model of either server's timing or audio: what it can check is the controller's decisions (what it asks
for, when, how often), which are the same whatever carries them out.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pwgroup.graph import Capabilities, layout, wait_next_change
from pwgroup.model import BackendError, Graph, GroupSpec, Link, MemberSpec, Node, Port

CHANNELS = ("FL", "FR")


class FakeBackend:
    name = "fake"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env: Mapping[str, str] = dict(env or {})
        self.capabilities = Capabilities(server="in-memory")
        self._graph = Graph(settings={"clock.rate": 48000, "clock.quantum": 1024})
        self._ids = itertools.count(100)
        self._serial = 0
        self._changed = asyncio.Event()
        self.alive = True
        self.calls: list[tuple[str, Any]] = []
        self.stamps: list[float] = []  # when each call came (monotonic), beside `calls`
        # Links made but not shown yet, as a pw-dump watcher 6-12 ms behind would not show them.
        self.hide_new_links = False
        self.hidden: dict[int, Link] = {}
        self.refreshes = 0

    # ------------------------------------------------------------ what the room holds
    def add_speaker(self, address: str) -> int:
        nid = next(self._ids)
        props = {"device.api": "bluez5", "api.bluez5.address": address, "node.description": f"speaker {address}"}
        name = f"bluez_output.{address.replace(':', '_')}.1"
        self._node(Node(nid, name, "Audio/Sink", props), ins=CHANNELS)
        return nid

    def remove_node(self, node_id: int) -> None:
        g = self._graph
        g.nodes.pop(node_id, None)
        for pid in [p.id for p in g.ports.values() if p.node_id == node_id]:
            del g.ports[pid]
        for lid in [lk.id for lk in g.links.values() if node_id in (lk.out_node, lk.in_node)]:
            del g.links[lid]
        self.poke()

    def show_hidden_links(self) -> None:
        self._graph.links.update(self.hidden)
        self.hidden.clear()
        self.poke()

    def poke(self) -> None:
        """An event from the server: something changed (or seemed to)."""
        self._serial += 1
        self._changed.set()

    def _node(self, node: Node, ins: tuple[str, ...] = (), outs: tuple[str, ...] = (), monitor: bool = False) -> None:
        g = self._graph
        g.nodes[node.id] = node
        for ch in ins:
            pid = next(self._ids)
            g.ports[pid] = Port(pid, node.id, f"in_{ch}", "in", ch)
        for ch in outs:
            pid = next(self._ids)
            g.ports[pid] = Port(pid, node.id, f"{'monitor' if monitor else 'out'}_{ch}", "out", ch, monitor)
        self.poke()

    # ------------------------------------------------------------ the Backend protocol
    @property
    def graph(self) -> Graph:
        return self._graph

    @property
    def serial(self) -> int:
        return self._serial

    async def refresh(self) -> Graph:
        self.refreshes += 1
        return self._graph

    async def wait_changed(self, timeout: float, since: int | None = None) -> bool:
        return await wait_next_change(self._changed, self._serial, since, timeout)

    async def settle(self, quiet: float = 0.05, timeout: float = 2.0) -> None:
        await asyncio.sleep(0)

    async def create_sink(self, group: GroupSpec) -> None:
        self._called("create_sink", group.name)
        props = {
            layout.PROP_GROUP: group.name,
            layout.PROP_ROLE: layout.ROLE_SINK,
            "node.description": group.description,
        }
        nid = next(self._ids)
        self._node(Node(nid, layout.sink_name(group.name), "Audio/Sink", props), ins=CHANNELS)
        for ch in CHANNELS:
            pid = next(self._ids)
            self._graph.ports[pid] = Port(pid, nid, f"monitor_{ch}", "out", ch, True)

    async def destroy_node(self, node_id: int) -> None:
        self._called("destroy_node", node_id)
        if node_id not in self._graph.nodes:
            raise BackendError(f"node {node_id} is gone")
        self.remove_node(node_id)

    async def start_member(self, group: str, member: MemberSpec) -> None:
        self._called("start_member", (group, member.speaker))
        base = {layout.PROP_GROUP: group, layout.PROP_MEMBER: member.speaker, layout.PROP_DELAY_MS: member.delay_ms}
        for side, role in (("in", layout.ROLE_IN), ("out", layout.ROLE_OUT)):
            nid = next(self._ids)
            node = Node(
                nid,
                layout.member_node_name(group, member.speaker, side),
                "Audio/Filter",
                {**base, layout.PROP_ROLE: role},
            )
            self._node(node, ins=CHANNELS if side == "in" else (), outs=CHANNELS if side == "out" else ())

    async def stop_member(self, group: str, speaker: str, pid: int | None, node_ids: tuple[int, ...]) -> None:
        self._called("stop_member", (group, speaker))
        for nid in node_ids:
            self.remove_node(nid)

    async def link(self, out_port: int, in_port: int) -> None:
        self._called("link", (out_port, in_port))
        g = self._graph
        if out_port not in g.ports or in_port not in g.ports:
            raise BackendError(f"port {out_port} or {in_port} is gone")
        lid = next(self._ids)
        link = Link(lid, g.ports[out_port].node_id, out_port, g.ports[in_port].node_id, in_port)
        if self.hide_new_links:
            self.hidden[lid] = link
        else:
            g.links[lid] = link
            self.poke()

    async def unlink(self, link_id: int) -> None:
        self._called("unlink", link_id)
        self._graph.links.pop(link_id, None)
        self.poke()

    async def set_delay(self, node_id: int, delay_ms: float, at_once: bool = False) -> None:
        self._called("set_delay", (node_id, delay_ms))
        node = self._graph.nodes[node_id]
        self._graph.nodes[node_id] = replace(node, props={**node.props, layout.PROP_DELAY_MS: delay_ms})
        self.poke()

    async def set_gain(self, node_id: int, gain: float) -> None:
        raise BackendError("no member gain here")

    async def set_sink_volume(self, node_id: int, volume: float) -> None:
        raise BackendError("no sink volume here")

    async def set_sink_mute(self, node_id: int, mute: bool) -> None:
        raise BackendError("no sink mute here")

    async def close(self) -> None:
        self._called("close", None)
        self.alive = False

    # ------------------------------------------------------------ reading it back
    def _called(self, kind: str, arg: Any) -> None:
        self.calls.append((kind, arg))
        self.stamps.append(time.monotonic())

    def asked(self, kind: str) -> list[Any]:
        return [arg for k, arg in self.calls if k == kind]

    def asked_at(self, kind: str) -> list[tuple[Any, float]]:
        """(argument, monotonic time) of each call of `kind`."""
        return [(arg, t) for (k, arg), t in zip(self.calls, self.stamps, strict=True) if k == kind]
