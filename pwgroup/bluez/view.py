"""One speaker view: BlueZ's devices joined with the sound server's member targets by Bluetooth address; a sink
that is not Bluetooth is shown from the server's side alone.

Pure: both sides are passed in. Each side is checked against the other, because either can be wrong
(BlueZ may say Connected=false while audio streams; a connected speaker may have no audio node yet).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pwgroup.bluez.props import Device
from pwgroup.model import KIND_BLUETOOTH, KIND_SINK, Speaker, TargetKind


@dataclass(frozen=True)
class SpeakerView:
    address: str | None
    name: str  # BlueZ's Alias, else the node's description: display only, hostile text
    connection: str  # "connected", "disconnected", "audio present", "connected, no audio node yet", ...
    bluez_connected: bool | None  # None when BlueZ is not reachable or does not know the device
    node: str | None
    node_id: int | None
    paired: bool | None
    trusted: bool | None
    battery: int | None
    codec: str | None
    profile: str | None
    delay_ms: float | None  # MediaTransport1.Delay as reported, not measured
    kind: TargetKind = KIND_BLUETOOTH  # a sink that is not Bluetooth: by node name, no BlueZ side

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "address": self.address,
            "connection": self.connection,
            "bluez_connected": self.bluez_connected,
            "node": self.node,
            "node_id": self.node_id,
            "paired": self.paired,
            "trusted": self.trusted,
            "battery": self.battery,
            "codec": self.codec,
            "profile": self.profile,
            "reported_delay_ms": self.delay_ms,
        }


def _connection(connected: bool | None, has_node: bool) -> str:
    if connected is None:
        return "audio present" if has_node else "unknown"
    if connected and has_node:
        return "connected"
    if connected:
        return "connected, no audio node yet"
    if has_node:
        # bluez/bluez#2485: the node is the better witness; the audio plays.
        return "audio present (BlueZ says disconnected)"
    return "disconnected"


def join(speakers: Sequence[Speaker], devices: Sequence[Device] | None) -> list[SpeakerView]:
    """Every member target of the server, and every BlueZ device that is a paired audio sink or has a node.
    `devices=None` means BlueZ is unreachable: the view is the server's alone."""
    nodes: dict[str, Speaker] = {}
    views = []
    for spk in speakers:
        if spk.kind == KIND_SINK:
            views.append(_sink_view(spk))
        elif spk.address is None or spk.address in nodes:
            # No address (or a second node of one speaker): shown from PipeWire's side only.
            views.append(_view(spk, None))
        else:
            nodes[spk.address] = spk
    known = {d.address: d for d in devices or ()}
    for address, spk in nodes.items():
        views.append(_view(spk, known.pop(address, None)))
    for dev in known.values():
        if dev.paired and dev.audio_sink:
            views.append(_view(None, dev))
    return sorted(views, key=lambda v: (v.address or "", v.node or ""))


def _sink_view(spk: Speaker) -> SpeakerView:
    """A sink that is not Bluetooth: there while the server shows it, with nothing for BlueZ to say."""
    return SpeakerView(
        address=None,
        name=spk.description,
        connection="present",
        bluez_connected=None,
        node=spk.node_name,
        node_id=spk.node_id,
        paired=None,
        trusted=None,
        battery=None,
        codec=None,
        profile=None,
        delay_ms=None,
        kind=spk.kind,
    )


def _view(spk: Speaker | None, dev: Device | None) -> SpeakerView:
    connected = dev.connected if dev is not None else None
    transport = dev.transport if dev is not None else None
    return SpeakerView(
        address=dev.address if dev is not None else (spk.address if spk is not None else None),
        name=(dev.alias if dev is not None and dev.alias else None) or (spk.description if spk else ""),
        connection=_connection(connected, spk is not None),
        bluez_connected=connected,
        node=spk.node_name if spk else None,
        node_id=spk.node_id if spk else None,
        paired=dev.paired if dev is not None else None,
        trusted=dev.trusted if dev is not None else None,
        battery=dev.battery.percentage if dev is not None and dev.battery is not None else None,
        # The node names the codec precisely (sbc_xq, aptx_hd); the transport only knows its A2DP family.
        codec=(spk.codec if spk is not None and spk.codec else None) or (transport.codec if transport else None),
        profile=spk.profile if spk is not None else None,
        delay_ms=transport.delay_ms if transport is not None else None,
    )
