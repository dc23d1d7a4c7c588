"""Typed views of BlueZ's D-Bus properties (Adapter1, Device1, Battery1, MediaTransport1).

Values come from radios in the room, so every field is checked for its type and strings are decoded safely.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pwgroup.model import normalize_address

BLUEZ = "org.bluez"
ADAPTER = "org.bluez.Adapter1"
DEVICE = "org.bluez.Device1"
BATTERY = "org.bluez.Battery1"
TRANSPORT = "org.bluez.MediaTransport1"
AGENT_MANAGER = "org.bluez.AgentManager1"
AGENT = "org.bluez.Agent1"
A2DP_SINK_UUID = "0000110b-0000-1000-8000-00805f9b34fb"

# A2DP codec ids (Bluetooth Assigned Numbers); 0xFF is vendor-specific (aptX, LDAC...).
A2DP_CODECS = {0x00: "sbc", 0x01: "mpeg", 0x02: "aac", 0x04: "atrac", 0xFF: "vendor"}


def text_from_bus(value: object) -> str:
    """A string property as text. D-Bus strings are valid UTF-8 on the wire (the daemon enforces it), but a
    name can also reach us as bytes (`ay`, or a buggy peer): those are decoded with visible escapes."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    return ""


def _bool(props: Mapping[str, Any], key: str) -> bool:
    value = props.get(key)
    return value if isinstance(value, bool) else False


def _int(props: Mapping[str, Any], key: str) -> int | None:
    value = props.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(props: Mapping[str, Any], key: str) -> str | None:
    return text_from_bus(props[key]) if key in props else None


@dataclass(frozen=True)
class Adapter:
    path: str
    address: str | None
    powered: bool
    discovering: bool


def adapter_from(path: str, props: Mapping[str, Any]) -> Adapter:
    raw = props.get("Address")
    return Adapter(
        path=path,
        address=normalize_address(raw) if isinstance(raw, str) else None,
        powered=_bool(props, "Powered"),
        discovering=_bool(props, "Discovering"),
    )


@dataclass(frozen=True)
class Battery:
    percentage: int | None


def battery_from(props: Mapping[str, Any]) -> Battery:
    pct = _int(props, "Percentage")
    return Battery(pct if pct is not None and 0 <= pct <= 100 else None)


@dataclass(frozen=True)
class Transport:
    """An A2DP stream: `delay_ms` is BlueZ's reported Delay (units of 0.1 ms), often missing or wrong."""

    path: str
    codec: str | None
    state: str | None
    delay_ms: float | None
    volume: int | None


def transport_from(path: str, props: Mapping[str, Any]) -> Transport:
    codec_id = _int(props, "Codec")
    delay = _int(props, "Delay")
    return Transport(
        path=path,
        codec=A2DP_CODECS.get(codec_id, f"0x{codec_id:02x}") if codec_id is not None else None,
        state=_str(props, "State"),
        delay_ms=delay / 10.0 if delay is not None else None,
        volume=_int(props, "Volume"),
    )


@dataclass(frozen=True)
class Device:
    """A Bluetooth device as BlueZ knows it. `alias` is for display only: the address is the identity."""

    path: str
    address: str
    alias: str
    adapter: str | None
    paired: bool
    trusted: bool
    connected: bool
    uuids: tuple[str, ...]
    icon: str | None
    rssi: int | None
    battery: Battery | None = None
    transport: Transport | None = None

    @property
    def audio_sink(self) -> bool:
        """Plays A2DP audio (a speaker or headphones), as the device announces."""
        return A2DP_SINK_UUID in self.uuids


def device_from(path: str, props: Mapping[str, Any]) -> Device | None:
    """None when the object carries no usable address (nothing to join it with)."""
    raw = props.get("Address")
    address = normalize_address(raw) if isinstance(raw, str) else None
    if address is None:
        return None
    uuids = props.get("UUIDs")
    adapter = props.get("Adapter")
    return Device(
        path=path,
        address=address,
        alias=_str(props, "Alias") or _str(props, "Name") or "",
        adapter=adapter if isinstance(adapter, str) else None,
        paired=_bool(props, "Paired"),
        trusted=_bool(props, "Trusted"),
        connected=_bool(props, "Connected"),
        uuids=tuple(u.lower() for u in uuids if isinstance(u, str)) if isinstance(uuids, list) else (),
        icon=_str(props, "Icon"),
        rssi=_int(props, "RSSI"),
    )


def devices_from_objects(objects: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[Device]:
    """Every Device1 in an object tree (path -> interface -> properties), with its Battery1 and the
    MediaTransport1 below it (BlueZ puts transports under the device's path: `dev_X/sep1/fd0`)."""
    transports = {
        path: transport_from(path, ifaces[TRANSPORT]) for path, ifaces in objects.items() if TRANSPORT in ifaces
    }
    found = []
    for path, ifaces in objects.items():
        if DEVICE not in ifaces:
            continue
        dev = device_from(path, ifaces[DEVICE])
        if dev is None:
            continue
        battery = battery_from(ifaces[BATTERY]) if BATTERY in ifaces else None
        mine = [t for p, t in sorted(transports.items()) if p.startswith(path + "/")]
        found.append(replace(dev, battery=battery, transport=mine[0] if mine else None))
    return sorted(found, key=lambda d: d.address)
