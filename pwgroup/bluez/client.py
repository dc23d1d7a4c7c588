"""One connection to BlueZ on the system bus: an object cache kept current by signals, and the actions.

Built the way bleak's manager is: subscribe to InterfacesAdded/Removed and PropertiesChanged first, then
read GetManagedObjects, applied in bus order; when BlueZ restarts, the cache is dropped and read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from pwgroup.bluez import errors
from pwgroup.bluez.errors import BluetoothError, BluetoothUnavailable, UnknownDevice
from pwgroup.bluez.props import (
    ADAPTER,
    AGENT,
    AGENT_MANAGER,
    BLUEZ,
    DEVICE,
    Adapter,
    Device,
    adapter_from,
    devices_from_objects,
)
from pwgroup.model import UserError

ObjectTree = dict[str, dict[str, dict[str, Any]]]

OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
PROPERTIES = "org.freedesktop.DBus.Properties"
DBUS = "org.freedesktop.DBus"
AGENT_PATH = "/org/pwgroup/agent"
_MATCH_RULES = (
    f"type='signal',sender='{BLUEZ}',interface='{OBJECT_MANAGER}',member='InterfacesAdded'",
    f"type='signal',sender='{BLUEZ}',interface='{OBJECT_MANAGER}',member='InterfacesRemoved'",
    f"type='signal',sender='{BLUEZ}',interface='{PROPERTIES}',member='PropertiesChanged',path_namespace='/org/bluez'",
    f"type='signal',sender='{DBUS}',interface='{DBUS}',member='NameOwnerChanged',arg0='{BLUEZ}'",
)
CALL_TIMEOUT = 10.0
# Connect waits for the radio (a page timeout is about 5 s) and the profiles; pairing may wait on the speaker.
CONNECT_TIMEOUT = 40.0
PAIR_TIMEOUT = 60.0


def system_bus_address(env: Mapping[str, str] | None = None) -> str:
    """The system bus of `env` (a dashboard or test may run for another session), else of this process."""
    env = os.environ if env is None else env
    return env.get("DBUS_SYSTEM_BUS_ADDRESS") or "unix:path=/var/run/dbus/system_bus_socket"


def _plain(value: Any) -> Any:
    """D-Bus values without Variant wrappers (a{sv} nests them)."""
    if isinstance(value, Variant):
        return _plain(value.value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class BluezClient:
    """The object cache and actions over one system-bus connection. Create it with `await BluezClient.open()`."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.objects: ObjectTree = {}
        self.owner: str | None = None  # BlueZ's unique bus name while it runs
        self._refresh_serial: int | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._pairing: str | None = None  # the device path our agent may accept requests for
        self._tasks: set[asyncio.Task[None]] = set()
        self.discovering = False  # this connection asked BlueZ to discover (and has not stopped it)

    @classmethod
    async def open(cls, require_bluez: bool = True, env: Mapping[str, str] | None = None) -> BluezClient:
        """Connect to the system bus (`DBUS_SYSTEM_BUS_ADDRESS` of `env`, else of this process, else the default
        socket) and fill the cache. Raises BluetoothUnavailable with the reason; with `require_bluez=False` a
        missing BlueZ is waited for."""
        address = system_bus_address(env)
        try:
            bus = await asyncio.wait_for(
                MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect(), CALL_TIMEOUT
            )
        except Exception as err:  # refused, no socket, bad address, auth: all mean the same to the user
            reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
            raise BluetoothUnavailable(
                f"Bluetooth control unavailable: cannot reach the system bus at {address}: {reason}"
            ) from None
        client = cls(bus)
        try:
            await client._start()
            if require_bluez and client.owner is None:
                raise BluetoothUnavailable("Bluetooth control unavailable: BlueZ (org.bluez) is not running")
        except BaseException:
            client.close()
            raise
        return client

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.bus.disconnect()

    async def __aenter__(self) -> BluezClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ the cache
    async def _start(self) -> None:
        self.bus.add_message_handler(self._on_message)
        # Subscribe first: a change between reading the tree and subscribing would otherwise be lost.
        for rule in _MATCH_RULES:
            await self._call(DBUS, "/org/freedesktop/DBus", DBUS, "AddMatch", "s", [rule], what="subscribe")
        reply = await self._raw_call(DBUS, "/org/freedesktop/DBus", DBUS, "GetNameOwner", "s", [BLUEZ])
        if reply.message_type == MessageType.METHOD_RETURN:
            self.owner = reply.body[0]
            await self.refresh()

    async def refresh(self) -> None:
        """Read the whole tree again. The reply is applied in `_on_message`, in bus order with the signals."""
        serial = self.bus.next_serial()
        self._refresh_serial = serial
        msg = Message(destination=BLUEZ, path="/", interface=OBJECT_MANAGER, member="GetManagedObjects", serial=serial)
        try:
            reply = await asyncio.wait_for(self.bus.call(msg), CALL_TIMEOUT)
        except TimeoutError:
            raise BluetoothUnavailable(
                f"Bluetooth control unavailable: BlueZ did not answer within {CALL_TIMEOUT:g} s"
            ) from None
        if reply.message_type == MessageType.ERROR:
            raise errors.from_dbus(reply.error_name or "", _error_text(reply), "reading BlueZ's objects")

    def _on_message(self, msg: Message) -> bool | None:
        if msg.message_type == MessageType.METHOD_RETURN:
            if msg.reply_serial == self._refresh_serial and msg.reply_serial is not None:
                self._refresh_serial = None
                self.objects = {path: dict(_plain(ifaces)) for path, ifaces in msg.body[0].items()}
                self._changed()
            return None
        if msg.message_type == MessageType.METHOD_CALL and msg.path == AGENT_PATH:
            self._agent_call(msg)
            return True  # answered: dbus-fast must not add an UnknownMethod reply of its own
        if msg.message_type != MessageType.SIGNAL:
            return None
        if msg.member == "NameOwnerChanged" and msg.sender == DBUS and msg.body[0] == BLUEZ:
            self._owner_changed(msg.body[2] or None)
        elif msg.sender is None or msg.sender != self.owner:
            return None
        elif msg.member == "InterfacesAdded":
            path, ifaces = msg.body
            self.objects.setdefault(path, {}).update(_plain(ifaces))
            self._changed()
        elif msg.member == "InterfacesRemoved":
            path, names = msg.body
            current = self.objects.get(path, {})
            for name in names:
                current.pop(name, None)
            if not current:
                self.objects.pop(path, None)
            self._changed()
        elif msg.member == "PropertiesChanged" and msg.path in self.objects:
            iface, changed, invalidated = msg.body
            props = self.objects[msg.path].setdefault(iface, {})
            props.update(_plain(changed))
            for name in invalidated:
                props.pop(name, None)
            self._changed()
        return None

    def _owner_changed(self, new_owner: str | None) -> None:
        # BlueZ went away or came back: nothing of the old tree is true any more.
        self.owner = new_owner
        self.objects = {}
        self._refresh_serial = None
        self._changed()
        if new_owner is not None:
            task = asyncio.get_running_loop().create_task(self._refresh_quietly())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _refresh_quietly(self) -> None:
        # A BlueZ that dies again while starting is seen by the next NameOwnerChanged.
        with contextlib.suppress(BluetoothError):
            await self.refresh()

    def _changed(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait_until(self, check: Callable[[], bool], timeout: float) -> bool:
        """Wait until `check()` holds on the cache (tested after every change); False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not check():
            left = deadline - loop.time()
            if left <= 0:
                return False
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, left)
        return True

    async def wait_changed(self, timeout: float) -> bool:
        """Wait for the next change of the cache (a signal, a refresh, BlueZ going or coming); False on timeout."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return False
        return True

    # ------------------------------------------------------------ typed reads
    @property
    def available(self) -> bool:
        return self.owner is not None

    def adapters(self) -> list[Adapter]:
        return [adapter_from(p, i[ADAPTER]) for p, i in sorted(self.objects.items()) if ADAPTER in i]

    def devices(self) -> list[Device]:
        return devices_from_objects(self.objects)

    def device(self, address: str) -> Device | None:
        return next((d for d in self.devices() if d.address == address), None)

    def _need_device(self, address: str) -> Device:
        dev = self.device(address)
        if dev is None:
            raise UnknownDevice(f"BlueZ does not know {address}: run 'pwgroup scan' (or pair it) first")
        return dev

    def _adapter(self) -> Adapter:
        adapters = self.adapters()
        if not adapters:
            raise BluetoothUnavailable("Bluetooth control unavailable: BlueZ has no Bluetooth adapter")
        return adapters[0]

    # ------------------------------------------------------------ actions
    async def connect(self, address: str) -> None:
        dev = self._need_device(address)
        try:
            await self._call(BLUEZ, dev.path, DEVICE, "Connect", what=f"connect {address}", timeout=CONNECT_TIMEOUT)
        except BluetoothError as err:
            if err.name != "org.bluez.Error.AlreadyConnected":
                raise

    async def disconnect(self, address: str) -> None:
        dev = self._need_device(address)
        try:
            await self._call(BLUEZ, dev.path, DEVICE, "Disconnect", what=f"disconnect {address}")
        except BluetoothError as err:
            if err.name != "org.bluez.Error.NotConnected":
                raise

    async def remove(self, address: str) -> None:
        """Forget a device: BlueZ disconnects it and drops its pairing."""
        dev = self._need_device(address)
        adapter = dev.adapter or self._adapter().path
        await self._call(BLUEZ, adapter, ADAPTER, "RemoveDevice", "o", [dev.path], f"remove {address}")

    async def set_trusted(self, address: str, trusted: bool) -> None:
        dev = self._need_device(address)
        what = f"{'trust' if trusted else 'untrust'} {address}"
        await self._call(BLUEZ, dev.path, PROPERTIES, "Set", "ssv", [DEVICE, "Trusted", Variant("b", trusted)], what)

    async def set_discovery(self, on: bool) -> None:
        """Discovery belongs to this connection: BlueZ stops it when we disconnect."""
        adapter = self._adapter()
        member = "StartDiscovery" if on else "StopDiscovery"
        await self._call(BLUEZ, adapter.path, ADAPTER, member, what="start discovery" if on else "stop discovery")
        self.discovering = on

    async def pair_and_trust(self, address: str, seconds: float) -> None:
        """What `pwgroup pair` does: discover until BlueZ has seen the device (unless this connection discovers
        already), pair it unless it is paired, then trust it so it may reconnect by itself."""
        dev = self.device(address)
        if dev is None or not dev.paired:
            # BlueZ pairs only with what it has seen: discover until the speaker shows up.
            ours = not self.discovering
            if ours:
                await self.set_discovery(True)
            try:
                if not await self.wait_until(lambda: self.device(address) is not None, seconds):
                    raise UserError(
                        f"{address} not found in {seconds:g} s: put it in pairing mode, bring it closer and try again"
                    )
                await self.pair(address)
            finally:
                if ours:
                    with contextlib.suppress(BluetoothError):
                        await self.set_discovery(False)
        await self.set_trusted(address, True)

    async def pair(self, address: str, timeout: float = PAIR_TIMEOUT) -> None:
        """Pair with a just-works agent (NoInputNoOutput) registered for the time of the pairing."""
        dev = self._need_device(address)
        self._pairing = dev.path
        try:
            await self._call(
                BLUEZ, "/org/bluez", AGENT_MANAGER, "RegisterAgent", "os", [AGENT_PATH, "NoInputNoOutput"], "pair"
            )
            try:
                await self._call(BLUEZ, dev.path, DEVICE, "Pair", what=f"pair {address}", timeout=timeout)
            finally:
                with contextlib.suppress(BluetoothError, TimeoutError):
                    await self._call(BLUEZ, "/org/bluez", AGENT_MANAGER, "UnregisterAgent", "o", [AGENT_PATH], "pair")
        finally:
            self._pairing = None

    def _agent_call(self, msg: Message) -> None:
        """org.bluez.Agent1 for pairing: confirm just-works and numeric comparison for the device being paired,
        refuse everything else (another device asking while we pair is not ours to accept)."""
        replies: dict[str, tuple[str, list[Any]]] = {
            "RequestConfirmation": ("", []),
            "RequestAuthorization": ("", []),
            "AuthorizeService": ("", []),
            "RequestPinCode": ("s", ["0000"]),
            "RequestPasskey": ("u", [0]),
            "DisplayPinCode": ("", []),
            "DisplayPasskey": ("", []),
            "Release": ("", []),
            "Cancel": ("", []),
        }
        if msg.interface not in (AGENT, None) or msg.member not in replies:
            self.bus.send(Message.new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "no such method"))
            return
        device = msg.body[0] if msg.body and isinstance(msg.body[0], str) and msg.body[0].startswith("/") else None
        if device is not None and device != self._pairing:
            self.bus.send(Message.new_error(msg, "org.bluez.Error.Rejected", "not pairing with this device"))
            return
        signature, body = replies[msg.member]
        self.bus.send(Message.new_method_return(msg, signature, body))

    # ------------------------------------------------------------ calls
    async def _raw_call(
        self,
        destination: str,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        timeout: float = CALL_TIMEOUT,
        what: str = "",
    ) -> Message:
        msg = Message(
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=body or [],
        )
        try:
            return await asyncio.wait_for(self.bus.call(msg), timeout)
        except TimeoutError:
            raise errors.ConnectFailed(f"{what or member} failed: no answer within {timeout:g} s", "timeout") from None
        except (OSError, EOFError) as err:
            raise BluetoothUnavailable(f"Bluetooth control unavailable: the system bus went away ({err})") from None

    async def _call(
        self,
        destination: str,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        what: str = "",
        timeout: float = CALL_TIMEOUT,
    ) -> list[Any]:
        reply = await self._raw_call(destination, path, interface, member, signature, body, timeout, what)
        if reply.message_type == MessageType.ERROR:
            raise errors.from_dbus(reply.error_name or "", _error_text(reply), what or member)
        return list(reply.body)


def _error_text(reply: Message) -> str:
    return reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
