"""The dashboard as the session's reconciler while no daemon runs (DESIGN.md: one reconciler per session, a
lock in the runtime dir). It takes the daemon's lock and runs the daemon's own Supervisor in-process, so groups
stay built and a returning member is relinked with its delay while the dashboard is open; CLI edits find it
by the lock and signal it as they signal the daemon (SIGUSR1). When the dashboard closes it lets go and leaves
the groups as they are. It watches through the dashboard's own backend and BlueZ client (pwgroup.supervisor.shared):
one watcher and one system-bus connection per process. Without Textual."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Mapping

from pwgroup.config import config_path
from pwgroup.graph import Backend
from pwgroup.model import UserError
from pwgroup.supervisor.loop import Supervisor
from pwgroup.supervisor.session import DaemonLock, daemon_pid


class Keeper:
    def __init__(
        self,
        env: Mapping[str, str],
        log: Callable[[str, str], None],
        open_backend: Callable[[], Awaitable[Backend]],
        release_backend: Callable[[Backend], Awaitable[None]],
    ) -> None:
        self.env = dict(env)
        self.log = log
        self.open_backend = open_backend  # the dashboard's shared watcher: held by the reconciler, never closed by it
        self.release_backend = release_backend
        self.supervisor: Supervisor | None = None
        self._lock: DaemonLock | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def try_start(self) -> bool:
        """Become the session's reconciler when nobody is; True when this dashboard is it (now or already)."""
        if self.running:
            return True
        if self._task is not None:
            self._finish()  # it ended by itself (a broken config file): let go, and try again
        if daemon_pid(self.env) is not None:
            return False
        loop = asyncio.get_running_loop()
        sup = Supervisor(
            config_path(self.env),
            self.env,
            self._log,
            self.open_backend,
            keep=True,
            announce=False,
            release_backend=self.release_backend,
        )
        try:
            # Before the lock: an edit that sees the lock signals at once.
            loop.add_signal_handler(signal.SIGUSR1, sup.request_reload)
        except (NotImplementedError, RuntimeError, ValueError):
            return False  # not the main thread: only watch
        lock = DaemonLock(self.env)
        try:
            lock.acquire(attempts=1)
        except UserError:
            loop.remove_signal_handler(signal.SIGUSR1)
            return False
        self.supervisor, self._lock = sup, lock
        self._task = asyncio.ensure_future(sup.run(lambda _state: None))
        return True

    def _log(self, level: str, text: str) -> None:
        if level != "debug":
            self.log(level, text)

    def _finish(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
        self.supervisor, self._task = None, None

    async def stop(self) -> None:
        """Let go of the session: the groups stay as they are."""
        if self.supervisor is not None and self._task is not None:
            self.supervisor.request_stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._task), 10.0)
            if not self._task.done():
                self._task.cancel()
        self._finish()
