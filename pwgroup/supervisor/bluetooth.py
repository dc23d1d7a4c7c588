"""The Bluetooth keeper: brings absent Bluetooth members back with Connect() on the reconnect policy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from pwgroup.config import ReconnectConfig


class BluetoothKeeper:
    """Calls Connect() for absent Bluetooth members on the reconnect policy's schedule, one task per speaker.

    BlueZ does not reconnect a power-cycled speaker by itself. Without a bus or BlueZ it says so once and
    pwgroup works on from PipeWire's view: members are relinked when they come back by other means.
    """

    def __init__(
        self,
        log: Callable[[str, str], None],
        settings: ReconnectConfig,
        on_change: Callable[[], None],
        wake: Callable[[], None],
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.log = log
        self.env = env  # whose DBUS_SYSTEM_BUS_ADDRESS to follow (None: this process's)
        self.settings = settings
        self.on_change = on_change
        self.wake = wake
        self.pending = False  # members away that could not be handled yet: look again soon
        self.client: Any = None
        self.opening: asyncio.Task[None] | None = None
        self.tasks: dict[str, asyncio.Task[bool]] = {}
        self.policies: dict[str, Any] = {}
        self.states: dict[str, dict[str, Any]] = {}
        self._said = False

    async def _open(self, stale: Any = None) -> None:
        """Take this process's BlueZ client (pwgroup.supervisor.shared): a dashboard hosting this keeper and the
        keeper use one connection and one cache. `stale`: the client whose bus went, let go first."""
        from pwgroup.bluez.errors import BluetoothError
        from pwgroup.supervisor import shared

        if stale is not None:
            await shared.bluez(self.env).release(stale)
        try:
            self.client = await shared.bluez(self.env).acquire()
            if self._said:
                self.log("info", "Bluetooth control is back")
            self._said = False
            self.wake()
        except BluetoothError as err:
            if not self._said:
                self.log("warning", f"{err.message}; members come back only by themselves")
                self._said = True

    def _policy(self, address: str) -> Any:
        from pwgroup.bluez.reconnect import Backoff, Reconnect

        if address not in self.policies:
            s = self.settings
            self.policies[address] = Reconnect(
                Backoff(first=s.initial_s, cap=s.max_s, max_auth_failures=s.auth_failures)
            )
        return self.policies[address]

    def _tell(self, address: str, text: str) -> None:
        policy = self.policies.get(address)
        left = None if policy is None or policy.next_at is None else max(0.0, policy.next_at - time.monotonic())
        before = self.states.get(address, {}).get("state")
        self.states[address] = {
            "state": text.split(" ")[0],
            "text": text,
            "retry_at": None if left is None else time.time() + left,
        }
        if text.startswith("giving up") and before != "giving":
            self.log("warning", f"{address}: {text} ({policy.last_error if policy else ''}); pair it again to retry")
        self.on_change()

    def update(self, absent: set[str], present: set[str]) -> None:
        """Start reconnecting members that are away; stop for those that are back. Never waits."""
        self.pending = False
        if not self.settings.enabled:
            return
        for address in present:
            task = self.tasks.pop(address, None)
            if task is not None:
                task.cancel()
            if address in self.policies and self.states.get(address, {}).get("state") != "connected":
                self.policies[address].succeeded()
                self._tell(address, "connected")
        if not absent:
            return
        if self.client is None or not self.client.bus.connected:
            self.pending = True
            if self.opening is None or self.opening.done():
                stale, self.client = self.client, None
                self.opening = asyncio.ensure_future(self._open(stale))
            return
        for address in sorted(absent):
            running = self.tasks.get(address)
            if running is not None and not running.done():
                continue
            device = self.client.device(address)
            policy = self._policy(address)
            if device is None:
                self.pending = True  # BlueZ may be restarting, its cache not yet filled
                continue
            if not device.paired or policy.state == "gave-up":
                continue
            if device.connected:
                self.pending = True  # BlueZ has it: its audio node should follow; nothing to call
                continue
            from pwgroup.bluez.reconnect import reconnect

            self.log("info", f"{address} is away: reconnecting it")
            self.tasks[address] = asyncio.ensure_future(
                reconnect(address, self.client.connect, policy, on_status=self._tell)
            )

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return dict(self.states)

    async def close(self) -> None:
        """Stop reconnecting and let go of the BlueZ client (closed when nobody else in the process holds it)."""
        from pwgroup.supervisor import shared

        for task in self.tasks.values():
            task.cancel()
        if self.opening is not None:
            self.opening.cancel()
            await asyncio.wait({self.opening})
        if self.client is not None:
            client, self.client = self.client, None
            await shared.bluez(self.env).release(client)
