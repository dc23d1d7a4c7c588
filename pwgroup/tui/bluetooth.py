"""The dashboard's Bluetooth: this process's BlueZ client (pwgroup.supervisor.shared, also the hosted
reconciler's), asked for again when the system bus goes, and the actions and scan made through it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from pwgroup.model import PwgroupError, UserError
from pwgroup.supervisor import shared
from pwgroup.tui.view import BLUEZ_GONE, FoundRow, found_rows

BT_RETRY_S = 5.0  # between attempts to reach a lost system bus
PAIR_FIND_S = 30.0  # how long pairing from the scan view waits for BlueZ to see the device


class BluetoothLink:
    def __init__(
        self, env: Mapping[str, str], ask: bool, changed: Callable[[], None], retry_s: float = BT_RETRY_S
    ) -> None:
        self.env = dict(env)
        self.ask = ask
        self.changed = changed  # the view is worth rebuilding now
        self.retry_s = retry_s
        self.client: Any = None
        self.reason: str | None = "Bluetooth not asked" if not ask else None  # why there is no BlueZ view
        self.seen = False  # BlueZ answered once: its absence from then on is a loss to show
        self._next = 0.0
        self._scan_lock = asyncio.Lock()  # one discovery at a time on our connection

    @property
    def lost(self) -> bool:
        return self.seen and self.reason is not None

    async def ensure(self) -> None:
        """Hold a BlueZ client when a system bus answers; ask again now and then when it does not. BlueZ leaving
        and coming back on a live bus is followed by the client itself."""
        if not self.ask:
            return
        if self.client is not None and not self.client.bus.connected:
            stale, self.client = self.client, None
            with contextlib.suppress(Exception):
                await shared.bluez(self.env).release(stale)
            self.reason, self._next = "Bluetooth control unavailable: the system bus went away", 0.0
        if self.client is None:
            loop = asyncio.get_running_loop()
            if loop.time() < self._next:
                return
            self._next = loop.time() + self.retry_s
            from pwgroup.bluez.errors import BluetoothError

            try:
                self.client = await shared.bluez(self.env).acquire()
            except BluetoothError as err:
                self.reason = err.message
                return
        self.reason = None if self.client.available else BLUEZ_GONE
        self.seen = self.seen or self.client.available

    def devices(self) -> list[Any] | None:
        return self.client.devices() if self.client is not None else None

    def reported_delays(self) -> dict[str, float]:
        """What each connected speaker reports as its delay (MediaTransport1.Delay), for `--method reported`."""
        devices = self.devices() or []
        return {d.address: d.transport.delay_ms for d in devices if d.transport and d.transport.delay_ms}

    async def close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            await shared.bluez(self.env).release(client)

    def need(self) -> Any:
        if self.client is None or not self.client.available:
            raise PwgroupError(self.reason or BLUEZ_GONE)
        return self.client

    async def act(self, action: str, address: str) -> None:
        """`connect`, `disconnect`, `trust` or `untrust` a speaker through BlueZ; its audio node follows, and
        the view with it."""
        if action not in ("connect", "disconnect", "trust", "untrust"):
            raise UserError(f"unknown Bluetooth action {action!r}")
        bt = self.need()
        try:
            if action in ("trust", "untrust"):
                await bt.set_trusted(address, action == "trust")
            else:
                await (bt.connect(address) if action == "connect" else bt.disconnect(address))
        finally:
            self.changed()

    async def scan(self, publish: Callable[[tuple[FoundRow, ...]], None], poll_s: float) -> None:
        """Discover until cancelled, publishing the devices found after every change of BlueZ's view; discovery
        stops when this ends (and BlueZ stops it by itself should our connection go)."""
        from pwgroup.bluez.errors import BluetoothError, InProgress

        async with self._scan_lock:
            bt = self.need()
            with contextlib.suppress(InProgress):  # this connection discovers already
                await bt.set_discovery(True)
            seen: set[str] = set()
            last: tuple[FoundRow, ...] | None = None
            owner = bt.owner
            try:
                while True:
                    if not bt.available:
                        owner = None
                    elif bt.owner != owner and bt.adapters():
                        # BlueZ restarted under us: a new bluetoothd discovers only if asked again.
                        owner = bt.owner
                        with contextlib.suppress(BluetoothError):
                            await bt.set_discovery(True)
                    devices = bt.devices()
                    # BlueZ drops RSSI when discovery ends: remember who was seen in this scan.
                    seen |= {d.address for d in devices if d.rssi is not None}
                    rows = found_rows(devices, seen)
                    if rows != last:
                        publish(rows)
                        last = rows
                    await bt.wait_changed(poll_s)
            finally:
                # Shielded: the screen that ran this may be cancelled again while discovery stops.
                stop = asyncio.ensure_future(bt.set_discovery(False))
                stop.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved even if not awaited
                with contextlib.suppress(Exception, asyncio.CancelledError):  # a bus gone stops it too
                    await asyncio.shield(stop)

    async def pair(self, address: str) -> None:
        """Pair, trust and connect a device found by a scan: `pwgroup pair` then `pwgroup connect`."""
        bt = self.need()
        try:
            await bt.pair_and_trust(address, PAIR_FIND_S)
            await bt.connect(address)
        finally:
            self.changed()
