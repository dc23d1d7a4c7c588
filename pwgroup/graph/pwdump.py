"""Turn `pw-dump` JSON into the observed Graph, and keep it current from `pw-dump -m` updates.

Pure parsing: no processes here. Removals in monitor mode arrive as `{"id": N, "info": null}` (or
`"props": null` for objects without an info, such as Metadata): they are the objects without a "type".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from pwgroup.model import Graph, Link, Node, Port


def _latency(params: dict[str, Any], direction: str) -> tuple[float, int, int] | None:
    """The port's Latency entry for its own direction: (quanta, samples, nanoseconds) at the minimum."""
    want = "Input" if direction == "in" else "Output"
    for entry in params.get("Latency") or []:
        if isinstance(entry, dict) and entry.get("direction") == want:
            try:
                return float(entry.get("minQuantum", 0)), int(entry.get("minRate", 0)), int(entry.get("minNs", 0))
            except (TypeError, ValueError):
                return None
    return None


def _controls(params: dict[str, Any]) -> dict[str, float]:
    found: dict[str, float] = {}
    for entry in params.get("Props") or []:
        if not isinstance(entry, dict):
            continue
        flat = entry.get("params")
        if not isinstance(flat, list):
            continue
        for key, value in zip(flat[::2], flat[1::2], strict=False):
            if isinstance(key, str) and isinstance(value, int | float) and not isinstance(value, bool):
                found[key] = float(value)
    return found


def _volume(params: dict[str, Any]) -> tuple[tuple[float, ...], bool | None]:
    """A node's own channelVolumes and mute, from its Props."""
    volumes: tuple[float, ...] = ()
    mute: bool | None = None
    for entry in params.get("Props") or []:
        if not isinstance(entry, dict):
            continue
        raw = entry.get("channelVolumes")
        if isinstance(raw, list) and raw and all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw):
            volumes = tuple(float(v) for v in raw)
        if isinstance(entry.get("mute"), bool):
            mute = entry["mute"]
    return volumes, mute


def apply(graph: Graph, objects: Iterable[dict[str, Any]]) -> None:
    """Apply a batch of pw-dump objects (a full dump or a monitor update) to `graph` in place."""
    for obj in objects:
        oid = obj.get("id")
        if not isinstance(oid, int):
            continue
        if "type" not in obj:
            graph.nodes.pop(oid, None)
            graph.ports.pop(oid, None)
            graph.links.pop(oid, None)
            graph.clients.pop(oid, None)
            if graph.settings_id == oid:
                graph.settings.clear()
                graph.settings_id = None
            continue
        kind = str(obj["type"])
        info = obj.get("info") or {}
        props = info.get("props") or {}
        if kind.endswith(":Node"):
            old = graph.nodes.get(oid)
            params = info.get("params") or {}
            controls = _controls(params) if "Props" in params else (old.controls if old else {})
            if "Props" in params:
                volumes, mute = _volume(params)
            else:
                volumes, mute = (old.channel_volumes, old.mute) if old else ((), None)
            graph.nodes[oid] = Node(
                id=oid,
                name=str(props.get("node.name", "")),
                media_class=str(props.get("media.class", "")),
                props=props,
                controls=controls,
                channel_volumes=volumes,
                mute=mute,
            )
        elif kind.endswith(":Client"):
            graph.clients[oid] = props
        elif kind.endswith(":Core"):
            version = info.get("version")
            if isinstance(version, str):
                graph.core_version = version
        elif kind.endswith(":Metadata"):
            # Metadata has no info: props sit at the top, and every update lists all current entries.
            if (obj.get("props") or {}).get("metadata.name") == "settings":
                graph.settings_id = oid
                graph.settings.clear()
                for entry in obj.get("metadata") or []:
                    if (
                        isinstance(entry, dict)
                        and entry.get("subject") == 0
                        and isinstance(entry.get("key"), str)
                        and entry.get("value") is not None
                    ):
                        graph.settings[entry["key"]] = entry["value"]
        elif kind.endswith(":Port"):
            node_id = props.get("node.id")
            if not isinstance(node_id, int):
                continue
            direction: Literal["in", "out"] = "in" if info.get("direction") == "input" else "out"
            params = info.get("params") or {}
            old_port = graph.ports.get(oid)
            latency = _latency(params, direction) if "Latency" in params else (old_port.latency if old_port else None)
            graph.ports[oid] = Port(
                id=oid,
                node_id=node_id,
                name=str(props.get("port.name", "")),
                direction=direction,
                channel=str(props.get("audio.channel", "")),
                monitor=bool(props.get("port.monitor", False)),
                latency=latency,
            )
        elif kind.endswith(":Link"):
            try:
                graph.links[oid] = Link(
                    id=oid,
                    out_node=int(info["output-node-id"]),
                    out_port=int(info["output-port-id"]),
                    in_node=int(info["input-node-id"]),
                    in_port=int(info["input-port-id"]),
                )
            except (KeyError, TypeError, ValueError):
                continue


def parse(text: str) -> Graph:
    """A whole `pw-dump`; it may print a second array when objects change while it dumps."""
    graph = Graph()
    decoder = StreamDecoder()
    for batch in decoder.feed(text):
        apply(graph, batch)
    if decoder.pending:
        raise ValueError("pw-dump output ends inside a JSON document")
    return graph


class StreamDecoder:
    """Splits the concatenated JSON arrays that `pw-dump -m` prints into batches."""

    def __init__(self) -> None:
        self._buf = ""
        self._decoder = json.JSONDecoder()

    @property
    def pending(self) -> bool:
        return bool(self._buf.strip())

    def feed(self, chunk: str) -> Iterator[list[dict[str, Any]]]:
        self._buf += chunk
        while True:
            text = self._buf.lstrip()
            if not text:
                self._buf = ""
                return
            try:
                value, end = self._decoder.raw_decode(text)
            except json.JSONDecodeError:
                self._buf = text
                return
            self._buf = text[end:]
            if isinstance(value, list):
                yield [v for v in value if isinstance(v, dict)]
