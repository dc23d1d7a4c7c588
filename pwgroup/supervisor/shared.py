"""One graph watcher and one BlueZ connection per process (per event loop), shared by everyone in it that needs
one: the dashboard and the reconciler it hosts. bleak's get_global_bluez_manager is the model."""

from __future__ import annotations

import asyncio
import inspect
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

from pwgroup.graph import Backend

T = TypeVar("T")

# What picks the sound server a backend speaks to (pwgroup.graph.select): backends opened with the same are one.
SERVER_ENV = ("PWGROUP_BACKEND", "PULSE_SERVER", "PIPEWIRE_REMOTE", "PIPEWIRE_RUNTIME_DIR", "XDG_RUNTIME_DIR")


class Shared(Generic[T]):
    """A resource the first user opens and the last to let go closes. A resource that is no longer usable (a
    watcher whose server died, a bus that went) stays with those that hold it until they let go; the next
    user gets a new one, opened once however many ask at the same time."""

    def __init__(
        self,
        open: Callable[[], Awaitable[T]],
        close: Callable[[T], Awaitable[None] | None],
        usable: Callable[[T], bool],
    ) -> None:
        self._open = open
        self._close = close
        self._usable = usable
        self.current: T | None = None
        self._refs: dict[int, int] = {}  # id(resource) -> how many hold it
        self._lock = asyncio.Lock()
        self.opened = 0  # how many were opened in all

    async def acquire(self) -> T:
        async with self._lock:
            value = self.current
            if value is None or not self._usable(value):
                value = await self._open()
                self.current = value
                self.opened += 1
            self._refs[id(value)] = self._refs.get(id(value), 0) + 1
            return value

    async def release(self, value: T) -> None:
        """Let go of `value`; it is closed when nobody holds it any more."""
        left = self._refs.get(id(value), 0) - 1
        if left > 0:
            self._refs[id(value)] = left
            return
        self._refs.pop(id(value), None)
        if self.current is value:
            self.current = None
        done = self._close(value)
        if inspect.isawaitable(done):
            await done

    def holders(self, value: T) -> int:
        return self._refs.get(id(value), 0)


_registry: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str | None, ...], Shared[Any]]] = (
    weakref.WeakKeyDictionary()
)


def _get(key: tuple[str | None, ...], make: Callable[[], Shared[T]]) -> Shared[T]:
    loop = asyncio.get_running_loop()
    per_loop = _registry.setdefault(loop, {})
    if key not in per_loop:
        per_loop[key] = make()
    shared: Shared[T] = per_loop[key]
    return shared


async def _open_backend(env: Mapping[str, str]) -> Backend:
    from pwgroup.graph.select import open_backend

    be, _ = await open_backend(env)
    return be


def graph_watcher(
    env: Mapping[str, str], open: Callable[[Mapping[str, str]], Awaitable[Backend]] | None = None
) -> Shared[Backend]:
    """This process's backend for the sound server `env` names. `open` is how the first to ask opens it (tests
    pass a fake); whoever asks later shares what that opens."""
    env = dict(env)
    opener = open or _open_backend

    async def close(be: Backend) -> None:
        await be.close()

    return _get(("graph", *(env.get(k) for k in SERVER_ENV)), lambda: Shared(lambda: opener(env), close, _alive))


def _alive(be: Backend) -> bool:
    return be.alive


def bluez(env: Mapping[str, str] | None = None) -> Shared[Any]:
    """This process's BlueZ client on the system bus `env` names (None: this process's own); BlueZ missing on a
    live bus is waited for by the client itself."""
    from pwgroup.bluez.client import BluezClient, system_bus_address

    def usable(client: Any) -> bool:
        return bool(client.bus.connected)

    async def open() -> Any:
        return await BluezClient.open(require_bluez=False, env=env)

    return _get(("bluez", system_bus_address(env)), lambda: Shared(open, lambda c: c.close(), usable))
