"""The dashboard's sound server: this process's graph watcher (pwgroup.supervisor.shared, also the hosted
reconciler's), reached again by itself when the server goes, and each loss and return said once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping

from pwgroup.graph import Backend
from pwgroup.model import PwgroupError
from pwgroup.supervisor import shared
from pwgroup.tui.source import LogLine, Publish, ServerLost

RETRY_S = 1.0  # between attempts to reach a lost sound server
OpenBackend = Callable[[Mapping[str, str]], Awaitable[Backend]]


class ServerLink:
    def __init__(self, env: Mapping[str, str], open_backend: OpenBackend | None = None, retry_s: float = RETRY_S):
        self.env = dict(env)
        self._open = open_backend  # None: pick the server as the CLI does (pwgroup.graph.select)
        self.retry_s = retry_s
        self.backend: Backend | None = None
        self._closing: tuple[Backend, asyncio.Future[None]] | None = None

    def _shared(self) -> shared.Shared[Backend]:
        return shared.graph_watcher(self.env, self._open)

    async def acquire(self) -> Backend:
        """This process's watcher of the server: the reconciler the dashboard hosts takes it through here too."""
        return await self._shared().acquire()

    async def release(self, be: Backend) -> None:
        await self._shared().release(be)

    async def run(
        self, publish: Publish, watch: Callable[[Backend], Awaitable[None]], closed: Callable[[], bool]
    ) -> None:
        """Hold a backend and `watch` it while it lives; when it dies, say so and reach the server again."""
        lost: str | None = None
        while not closed():
            try:
                be = await self.acquire()
            except PwgroupError as err:
                if lost != err.message:
                    publish(ServerLost(err.message))
                    lost = err.message
                await asyncio.sleep(self.retry_s)
                continue
            self.backend = be
            if lost is not None:
                publish(LogLine("info", f"sound server back ({be.name})"))
                lost = None
            try:
                await watch(be)
            finally:
                await self.drop(be)
            if closed():
                return
            lost = "the sound server went away: reconnecting"
            publish(ServerLost(lost))

    async def drop(self, be: Backend) -> None:
        """Let go of `be` once, whoever asks first (the watch ending, or the app closing); the others wait for the
        same release. The watcher itself ends when nobody in the process holds it."""
        if self._closing is None or self._closing[0] is not be:
            self._closing = (be, asyncio.ensure_future(self.release(be)))
        try:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._closing[1])
        finally:
            if self.backend is be:
                self.backend = None

    def need(self) -> Backend:
        if self.backend is None or not self.backend.alive:
            raise PwgroupError("the sound server is not reachable: the change was not made")
        return self.backend
