"""A fake org.bluez for the virtual room: one Device1 per room speaker on a private system bus, coupled to the
room's PipeWire (Connect makes the speaker's node appear, Disconnect or "out of range" removes it).

Run as `python -m pwgroup.sim.fakebluez ROOT` with DBUS_SYSTEM_BUS_ADDRESS pointing at the room's own bus.
It signals like BlueZ: one InterfacesAdded per object (all its interfaces) from the ObjectManager at `/`,
PropertiesChanged on the object. Tests script faults through `org.pwgroup.SimBluez` at /org/pwgroup/sim, a
separate name that production code never talks to.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from pwgroup.bluez.props import A2DP_SINK_UUID, ADAPTER, AGENT_MANAGER, BATTERY, DEVICE, TRANSPORT
from pwgroup.sim.room import BLUEZ_READY, SIM_CONTROL_NAME, SIM_CONTROL_PATH, Room, SimSpeaker

ADAPTER_PATH = "/org/bluez/hci0"
ADAPTER_ADDRESS = "00:1A:7D:DA:71:00"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
PROPERTIES = "org.freedesktop.DBus.Properties"
AVRCP_TARGET_UUID = "0000110c-0000-1000-8000-00805f9b34fb"
HANDSFREE_AG_UUID = "0000111f-0000-1000-8000-00805f9b34fb"
# BlueZ forgets a device found by discovery that was never paired after TemporaryTimeout (30 s, main.conf).
TEMPORARY_TIMEOUT = 30.0
POLL_SECONDS = 0.3
# How long the fake's radio takes to fail: a real page timeout is about 5 s.
FAIL_AFTER = 0.2
# Device1.Disconnected reasons (src/device.c): a speaker that walks away times out, our Disconnect is local.
TIMEOUT = "org.bluez.Reason.Timeout"
DISCONNECT_REASONS = {
    TIMEOUT: "Connection timeout",
    "org.bluez.Reason.Local": "Connection terminated by local host",
    "org.bluez.Reason.Unknown": "Unspecified",
}
# Devices that only show up while discovering: an unpaired speaker to pair, and a phone (no A2DP sink).
STRANGERS = (
    ("AA:BB:CC:10:00:01", "Party Speaker (unpaired)", "audio-card", [A2DP_SINK_UUID, AVRCP_TARGET_UUID], -52),
    ("AA:BB:CC:10:00:02", "Someone's phone", "phone", [HANDSFREE_AG_UUID], -71),
)


def device_path(address: str) -> str:
    return f"{ADAPTER_PATH}/dev_{address.replace(':', '_')}"


def reported_delay_tenths(spk: SimSpeaker) -> int:
    """What the fake's MediaTransport1.Delay says (0.1 ms units): the hidden latency, wrong by -100, 0 or
    +100 ms depending on the speaker, as real headsets' reports are; calibration measures the truth."""
    error_ms = ((spk.index % 3) - 1) * 100
    return max(0, round((spk.latency_ms + error_ms) * 10))


def battery_of(spk: SimSpeaker) -> int:
    return 100 - (spk.index * 17) % 70


class Error(Exception):
    """A D-Bus error reply (name, text)."""

    def __init__(self, name: str, text: str) -> None:
        super().__init__(text)
        self.name = name
        self.text = text


@dataclass
class FakeDevice:
    address: str
    alias: str
    icon: str
    uuids: list[str]
    speaker: SimSpeaker | None  # the room speaker behind it; None for strangers (no audio node)
    paired: bool
    trusted: bool
    connected: bool = False
    rssi: int | None = None
    fault: str = ""  # "", "auth" or "page-timeout": how Connect and Pair fail
    out_of_range: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def path(self) -> str:
        return device_path(self.address)

    @property
    def transport_path(self) -> str:
        return f"{self.path}/sep1/fd0"


class FakeBluez:
    def __init__(self, bus: MessageBus, root: Path) -> None:
        self.bus = bus
        self.root = root
        self.tree: dict[str, dict[str, dict[str, Variant]]] = {}
        self.devices: dict[str, FakeDevice] = {}
        self.discovering: set[str] = set()  # bus names of the clients that started discovery
        self.agents: dict[str, str] = {}  # client bus name -> agent object path
        self._tasks: set[asyncio.Task[Any]] = set()
        self._forget: dict[str, asyncio.TimerHandle] = {}
        self._seen: dict[str, bool] = {}  # the last poll's view of which room speakers have a node process

    # ------------------------------------------------------------ the object tree and its signals
    def add(self, path: str, ifaces: dict[str, dict[str, Variant]]) -> None:
        self.tree.setdefault(path, {}).update(ifaces)
        self._signal("/", OBJECT_MANAGER, "InterfacesAdded", "oa{sa{sv}}", [path, ifaces])

    def remove(self, path: str, names: list[str] | None = None) -> None:
        current = self.tree.get(path)
        if current is None:
            return
        gone = [n for n in (names or list(current)) if n in current]
        for name in gone:
            del current[name]
        if not current:
            del self.tree[path]
        if gone:
            self._signal("/", OBJECT_MANAGER, "InterfacesRemoved", "oas", [path, gone])

    def set(self, path: str, iface: str, changed: dict[str, Variant], invalidated: list[str] | None = None) -> None:
        props = self.tree[path][iface]
        props.update(changed)
        for name in invalidated or []:
            props.pop(name, None)
        self._signal(path, PROPERTIES, "PropertiesChanged", "sa{sv}as", [iface, changed, invalidated or []])

    def _signal(self, path: str, iface: str, member: str, signature: str, body: list[Any]) -> None:
        self.bus.send(Message.new_signal(path, iface, member, signature, body))

    def _device_props(self, dev: FakeDevice) -> dict[str, Variant]:
        props = {
            "Address": Variant("s", dev.address),
            "AddressType": Variant("s", "public"),
            "Name": Variant("s", dev.alias),
            "Alias": Variant("s", dev.alias),
            "Icon": Variant("s", dev.icon),
            "Paired": Variant("b", dev.paired),
            "Bonded": Variant("b", dev.paired),
            "Trusted": Variant("b", dev.trusted),
            "Blocked": Variant("b", False),
            "LegacyPairing": Variant("b", False),
            "Connected": Variant("b", dev.connected),
            "ServicesResolved": Variant("b", dev.connected),
            "UUIDs": Variant("as", dev.uuids),
            "Adapter": Variant("o", ADAPTER_PATH),
        }
        if dev.rssi is not None:
            props["RSSI"] = Variant("n", dev.rssi)
        return props

    def _transport_props(self, dev: FakeDevice) -> dict[str, Variant]:
        assert dev.speaker is not None
        codec = {"sbc": 0x00, "sbc_xq": 0x00, "aac": 0x02}.get(dev.speaker.codec, 0xFF)
        return {
            "Device": Variant("o", dev.path),
            "UUID": Variant("s", A2DP_SINK_UUID),
            "Codec": Variant("y", codec),
            "Configuration": Variant("ay", b"\xff\xff\x02\x35"),
            "State": Variant("s", "idle"),
            "Delay": Variant("q", reported_delay_tenths(dev.speaker)),
            "Volume": Variant("q", 100),
        }

    # ------------------------------------------------------------ start-up and the room
    def populate(self) -> None:
        self.add("/org/bluez", {AGENT_MANAGER: {}})
        self.add(
            ADAPTER_PATH,
            {
                ADAPTER: {
                    "Address": Variant("s", ADAPTER_ADDRESS),
                    "AddressType": Variant("s", "public"),
                    "Name": Variant("s", "pwgroup-sim"),
                    "Alias": Variant("s", "pwgroup-sim"),
                    "Powered": Variant("b", True),
                    "Discoverable": Variant("b", False),
                    "Pairable": Variant("b", True),
                    "Discovering": Variant("b", False),
                    "UUIDs": Variant("as", []),
                }
            },
        )
        self.sync_room()

    def sync_room(self) -> None:
        """Follow the room: new speakers appear as paired devices; a speaker whose node process came or went
        behind our back (a test walking it out of range) is seen as connected or as a lost link."""
        room = Room(self.root)
        for spk in room.speakers:
            present = room.server.running(f"speaker-{spk.index}")
            # Acted on only when two polls agree: pids.json may be read while another process rewrites it.
            steady = self._seen.get(spk.address) == present
            self._seen[spk.address] = present
            dev = self.devices.get(spk.address)
            if dev is None:
                dev = FakeDevice(
                    spk.address,
                    spk.description,
                    "audio-card",
                    [A2DP_SINK_UUID, AVRCP_TARGET_UUID],
                    spk,
                    paired=True,
                    trusted=True,
                )
                self.devices[spk.address] = dev
                self.add(dev.path, {DEVICE: self._device_props(dev)})
                if present:
                    self._link_up(dev)
            elif steady and not dev.lock.locked() and present != dev.connected:
                if present:
                    self._link_up(dev)
                else:
                    self._profiles_down(dev)
                    self._link_down(dev, TIMEOUT)

    def _link_up(self, dev: FakeDevice) -> None:
        """What BlueZ emits as a speaker connects: Connected (the ACL link), ServicesResolved, then the A2DP
        transport and Battery1 as the profiles connect. PipeWire makes the node from the transport after."""
        dev.connected = True
        self.set(dev.path, DEVICE, {"Connected": Variant("b", True)})
        self.set(dev.path, DEVICE, {"ServicesResolved": Variant("b", True)})
        if dev.speaker is not None:
            self.add(dev.transport_path, {TRANSPORT: self._transport_props(dev)})
            self.add(dev.path, {BATTERY: {"Percentage": Variant("y", battery_of(dev.speaker))}})

    def _profiles_down(self, dev: FakeDevice) -> None:
        """The first half of a disconnection: profiles go (transport, Battery1), then ServicesResolved."""
        self.remove(dev.transport_path)
        self.remove(dev.path, [BATTERY])
        self.set(dev.path, DEVICE, {"ServicesResolved": Variant("b", False)})

    def _link_down(self, dev: FakeDevice, reason: str) -> None:
        """The second half, as src/device.c does it: the Disconnected signal, then Connected=false (which
        BlueZ flushes before it replies to Disconnect)."""
        dev.connected = False
        self._signal(dev.path, DEVICE, "Disconnected", "ss", [reason, DISCONNECT_REASONS[reason]])
        self.set(dev.path, DEVICE, {"Connected": Variant("b", False)})

    async def poll_room(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            with contextlib.suppress(OSError, ValueError):
                self.sync_room()

    # ------------------------------------------------------------ method calls
    def on_message(self, msg: Message) -> bool | None:
        if msg.message_type == MessageType.SIGNAL:
            if msg.member == "NameOwnerChanged" and msg.sender == "org.freedesktop.DBus" and not msg.body[2]:
                self._client_gone(msg.body[0])
            return None
        if msg.message_type != MessageType.METHOD_CALL:
            return None
        handler = self._handler(msg)
        if handler is None:
            return None
        task = asyncio.get_running_loop().create_task(self._answer(msg, handler))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _answer(self, msg: Message, handler: Callable[[Message], Any]) -> None:
        try:
            signature, body = await handler(msg)
            reply = Message.new_method_return(msg, signature, body)
        except Error as err:
            reply = Message.new_error(msg, err.name, err.text)
        except Exception as err:  # the room failed under us (e.g. a node that never came): BlueZ says Failed
            reply = Message.new_error(msg, "org.bluez.Error.Failed", f"{type(err).__name__}: {err}")
        self.bus.send(reply)

    def _handler(self, msg: Message) -> Callable[[Message], Any] | None:
        if msg.path == SIM_CONTROL_PATH and msg.interface == SIM_CONTROL_NAME:
            return {
                "SetFault": self.ctl_set_fault,
                "OutOfRange": self.ctl_out_of_range,
                "InRange": self.ctl_in_range,
                "SetBattery": self.ctl_set_battery,
                "SetAlias": self.ctl_set_alias,
            }.get(msg.member or "")
        if msg.path is None or not (msg.path == "/" or msg.path.startswith("/org/bluez")):
            return None
        return {
            (OBJECT_MANAGER, "GetManagedObjects"): self.get_managed_objects,
            (PROPERTIES, "Get"): self.get,
            (PROPERTIES, "GetAll"): self.get_all,
            (PROPERTIES, "Set"): self.set_property,
            (ADAPTER, "StartDiscovery"): self.start_discovery,
            (ADAPTER, "StopDiscovery"): self.stop_discovery,
            (ADAPTER, "RemoveDevice"): self.remove_device,
            (DEVICE, "Connect"): self.connect,
            (DEVICE, "Disconnect"): self.disconnect,
            (DEVICE, "Pair"): self.pair,
            (AGENT_MANAGER, "RegisterAgent"): self.register_agent,
            (AGENT_MANAGER, "UnregisterAgent"): self.unregister_agent,
            (AGENT_MANAGER, "RequestDefaultAgent"): self.request_default_agent,
        }.get((msg.interface or "", msg.member or ""), self.unknown)

    async def unknown(self, msg: Message) -> tuple[str, list[Any]]:
        if msg.path not in self.tree and msg.path != "/":
            raise Error("org.freedesktop.DBus.Error.UnknownObject", f"no object at {msg.path}")
        raise Error("org.freedesktop.DBus.Error.UnknownMethod", f"{msg.interface}.{msg.member} does not exist")

    def _device(self, msg: Message) -> FakeDevice:
        for dev in self.devices.values():
            if dev.path == msg.path and dev.path in self.tree:
                return dev
        raise Error("org.freedesktop.DBus.Error.UnknownObject", f"no device at {msg.path}")

    async def get_managed_objects(self, msg: Message) -> tuple[str, list[Any]]:
        return "a{oa{sa{sv}}}", [self.tree]

    def _props(self, path: str | None, iface: str) -> dict[str, Variant]:
        props = self.tree.get(path or "", {}).get(iface)
        if props is None:
            raise Error("org.freedesktop.DBus.Error.InvalidArgs", f"no interface {iface} at {path}")
        return props

    async def get(self, msg: Message) -> tuple[str, list[Any]]:
        props = self._props(msg.path, msg.body[0])
        if msg.body[1] not in props:
            raise Error("org.freedesktop.DBus.Error.InvalidArgs", f"no property {msg.body[1]}")
        return "v", [props[msg.body[1]]]

    async def get_all(self, msg: Message) -> tuple[str, list[Any]]:
        return "a{sv}", [self._props(msg.path, msg.body[0])]

    async def set_property(self, msg: Message) -> tuple[str, list[Any]]:
        iface, name, value = msg.body
        self._props(msg.path, iface)
        if (iface, name) != (DEVICE, "Trusted") or value.signature != "b":
            raise Error("org.freedesktop.DBus.Error.PropertyReadOnly", f"{name} cannot be set here")
        dev = self._device(msg)
        if dev.trusted != value.value:
            dev.trusted = value.value
            self.set(dev.path, DEVICE, {"Trusted": Variant("b", dev.trusted)})
        return "", []

    # ------------------------------------------------------------ discovery
    async def start_discovery(self, msg: Message) -> tuple[str, list[Any]]:
        if msg.sender in self.discovering:
            raise Error("org.bluez.Error.InProgress", "Operation already in progress")
        first = not self.discovering
        self.discovering.add(msg.sender or "")
        if first:
            self.set(ADAPTER_PATH, ADAPTER, {"Discovering": Variant("b", True)})
            asyncio.get_running_loop().call_later(0.2, self._found_devices)
        return "", []

    def _found_devices(self) -> None:
        if not self.discovering:
            return
        for dev in self.devices.values():
            if dev.speaker is not None and dev.path in self.tree and not dev.out_of_range:
                dev.rssi = -40 - dev.speaker.index
                self.set(dev.path, DEVICE, {"RSSI": Variant("n", dev.rssi)})
        for address, alias, icon, uuids, rssi in STRANGERS:
            timer = self._forget.pop(address, None)
            if timer is not None:
                timer.cancel()
            known = self.devices.get(address)
            if known is not None and known.path in self.tree:
                known.rssi = rssi
                self.set(known.path, DEVICE, {"RSSI": Variant("n", rssi)})
                continue
            found = FakeDevice(address, alias, icon, list(uuids), None, paired=False, trusted=False, rssi=rssi)
            self.devices[address] = found
            self.add(found.path, {DEVICE: self._device_props(found)})

    async def stop_discovery(self, msg: Message) -> tuple[str, list[Any]]:
        if msg.sender not in self.discovering:
            raise Error("org.bluez.Error.Failed", "No discovery started")
        self._client_gone(msg.sender or "")
        return "", []

    def _client_gone(self, name: str) -> None:
        self.agents.pop(name, None)
        if name not in self.discovering:
            return
        self.discovering.discard(name)
        if self.discovering:
            return
        self.set(ADAPTER_PATH, ADAPTER, {"Discovering": Variant("b", False)})
        for dev in self.devices.values():
            if dev.rssi is not None and dev.path in self.tree:
                dev.rssi = None
                self.set(dev.path, DEVICE, {}, ["RSSI"])
            if not dev.paired and not dev.connected and dev.path in self.tree:
                self._forget[dev.address] = asyncio.get_running_loop().call_later(
                    TEMPORARY_TIMEOUT, self.remove, dev.path
                )

    async def remove_device(self, msg: Message) -> tuple[str, list[Any]]:
        dev = next((d for d in self.devices.values() if d.path == msg.body[0] and d.path in self.tree), None)
        if dev is None:
            raise Error("org.bluez.Error.DoesNotExist", "Does Not Exist")
        async with dev.lock:
            if dev.connected:
                await self._disconnect(dev, "org.bluez.Reason.Local")
            dev.paired = dev.trusted = False
            self.remove(dev.path)
        return "", []

    # ------------------------------------------------------------ connections
    async def connect(self, msg: Message) -> tuple[str, list[Any]]:
        dev = self._device(msg)
        async with dev.lock:
            if dev.connected:
                raise Error("org.bluez.Error.AlreadyConnected", "Already Connected")
            await self._fail_if_scripted(dev)
            self._link_up(dev)
            if dev.speaker is not None:
                # The node appears as PipeWire would make it from the transport: a process of the room.
                try:
                    await asyncio.to_thread(Room(self.root).connect, dev.address)
                except Exception:
                    self._profiles_down(dev)
                    self._link_down(dev, "org.bluez.Reason.Unknown")
                    raise
        return "", []

    async def _fail_if_scripted(self, dev: FakeDevice) -> None:
        if dev.out_of_range or dev.fault == "page-timeout":
            await asyncio.sleep(FAIL_AFTER)
            raise Error("org.bluez.Error.Failed", "br-connection-page-timeout")
        if dev.fault == "auth":
            await asyncio.sleep(FAIL_AFTER / 4)
            raise Error("org.bluez.Error.AuthenticationFailed", "Authentication Failed")

    async def disconnect(self, msg: Message) -> tuple[str, list[Any]]:
        dev = self._device(msg)
        async with dev.lock:
            if not dev.connected:
                raise Error("org.bluez.Error.NotConnected", "Not Connected")
            await self._disconnect(dev, "org.bluez.Reason.Local")
        return "", []

    async def _disconnect(self, dev: FakeDevice, reason: str) -> None:
        self._profiles_down(dev)
        if dev.speaker is not None:
            # PipeWire removes the node once the transport is gone.
            await asyncio.to_thread(Room(self.root).disconnect, dev.address)
        self._link_down(dev, reason)

    async def pair(self, msg: Message) -> tuple[str, list[Any]]:
        dev = self._device(msg)
        async with dev.lock:
            if dev.paired:
                raise Error("org.bluez.Error.AlreadyExists", "Already Exists")
            await self._fail_if_scripted(dev)
            agent = self.agents.get(msg.sender or "")
            if agent is not None:
                # Just-works pairing asks the caller's agent to authorize it (NoInputNoOutput answers yes).
                reply = await self.bus.call(
                    Message(
                        destination=msg.sender,
                        path=agent,
                        interface="org.bluez.Agent1",
                        member="RequestAuthorization",
                        signature="o",
                        body=[dev.path],
                    )
                )
                if reply.message_type == MessageType.ERROR:
                    raise Error("org.bluez.Error.AuthenticationRejected", "Authentication Rejected")
            dev.paired = True
            timer = self._forget.pop(dev.address, None)
            if timer is not None:
                timer.cancel()
            self.set(dev.path, DEVICE, {"Paired": Variant("b", True), "Bonded": Variant("b", True)})
        return "", []

    async def register_agent(self, msg: Message) -> tuple[str, list[Any]]:
        path, capability = msg.body
        if capability not in ("", "DisplayOnly", "DisplayYesNo", "KeyboardOnly", "NoInputNoOutput", "KeyboardDisplay"):
            raise Error("org.bluez.Error.InvalidArguments", "Invalid Arguments")
        if msg.sender in self.agents:
            raise Error("org.bluez.Error.AlreadyExists", "Already Exists")
        self.agents[msg.sender or ""] = path
        return "", []

    async def unregister_agent(self, msg: Message) -> tuple[str, list[Any]]:
        if self.agents.get(msg.sender or "") != msg.body[0]:
            raise Error("org.bluez.Error.DoesNotExist", "Does Not Exist")
        del self.agents[msg.sender or ""]
        return "", []

    async def request_default_agent(self, msg: Message) -> tuple[str, list[Any]]:
        if self.agents.get(msg.sender or "") != msg.body[0]:
            raise Error("org.bluez.Error.DoesNotExist", "Does Not Exist")
        return "", []

    # ------------------------------------------------------------ the test-side control interface
    def _control_device(self, address: str) -> FakeDevice:
        dev = self.devices.get(address)
        if dev is None:
            raise Error("org.pwgroup.SimBluez.Error.UnknownDevice", address)
        return dev

    async def ctl_set_fault(self, msg: Message) -> tuple[str, list[Any]]:
        address, fault = msg.body
        if fault not in ("", "auth", "page-timeout"):
            raise Error("org.pwgroup.SimBluez.Error.InvalidFault", fault)
        self._control_device(address).fault = fault
        return "", []

    async def ctl_out_of_range(self, msg: Message) -> tuple[str, list[Any]]:
        """The speaker walks away (or is switched off): the link drops, its node goes, Connect times out."""
        dev = self._control_device(msg.body[0])
        async with dev.lock:
            dev.out_of_range = True
            if dev.connected:
                await self._disconnect(dev, TIMEOUT)
        return "", []

    async def ctl_in_range(self, msg: Message) -> tuple[str, list[Any]]:
        self._control_device(msg.body[0]).out_of_range = False
        return "", []

    async def ctl_set_battery(self, msg: Message) -> tuple[str, list[Any]]:
        address, pct = msg.body
        dev = self._control_device(address)
        if BATTERY not in self.tree.get(dev.path, {}):
            raise Error("org.pwgroup.SimBluez.Error.NotConnected", address)
        self.set(dev.path, BATTERY, {"Percentage": Variant("y", pct)})
        return "", []

    async def ctl_set_alias(self, msg: Message) -> tuple[str, list[Any]]:
        """The speaker announces another name (any text: tests send hostile ones)."""
        address, alias = msg.body
        dev = self._control_device(address)
        dev.alias = alias
        self.set(dev.path, DEVICE, {"Alias": Variant("s", alias)})
        return "", []


async def serve(root: Path) -> None:
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    fake = FakeBluez(bus, root)
    bus.add_message_handler(fake.on_message)
    await bus.call(
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="AddMatch",
            signature="s",
            body=["type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged'"],
        )
    )
    fake.populate()
    await bus.request_name("org.bluez")
    await bus.request_name(SIM_CONTROL_NAME)
    (root / BLUEZ_READY).write_text("ready\n")
    try:
        await asyncio.gather(fake.poll_room(), bus.wait_for_disconnect())
    finally:
        (root / BLUEZ_READY).unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m pwgroup.sim.fakebluez ROOT", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(Path(argv[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
