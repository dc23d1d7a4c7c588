"""The daemon's loop: one level-triggered pass over every configured group after each graph event."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from pwgroup.config import Config
from pwgroup.config import load as load_config
from pwgroup.graph import Backend, layout
from pwgroup.model import Graph, GroupSpec, LinkPorts, PwgroupError, ServerUnreachable, UserError, normalize_address
from pwgroup.status import presence, presence_change
from pwgroup.supervisor.bluetooth import BluetoothKeeper
from pwgroup.supervisor.executor import apply_actions, converge
from pwgroup.supervisor.reconcile import reconcile
from pwgroup.supervisor.session import held, runtime_dir

MAX_PASSES_PER_S = 30  # a flapping speaker costs at most this many reconcile passes a second
RECONNECT_PERIOD_S = 0.2  # how often a lost sound server is looked for again
LINK_GRACE_S = 0.5  # how long a link we made is taken as there before our own watcher shows it
PENDING_RECHECK_S = 1.0  # how often members away without a reconnect under way are looked at again


class Supervisor:
    """Keeps every configured group built, whatever comes and goes: one loop over graph events, level-triggered.

    After any event the whole desired state (the config) is compared with the whole observed graph; events that
    arrive while actions run are folded into the next pass, which is rate-limited so flapping cannot spin.
    """

    def __init__(
        self,
        config_path: Path,
        env: Mapping[str, str],
        log: Callable[[str, str], None],
        open_backend: Callable[[], Awaitable[Backend]],
        keep: bool = False,
        verbose: bool = False,
        announce: bool = True,
        release_backend: Callable[[Backend], Awaitable[None]] | None = None,
    ) -> None:
        """`open_backend` gives the backend to watch; `release_backend` lets go of it (default: closes it). A
        dashboard hosting this loop hands over its own (pwgroup.supervisor.shared): one watcher per process."""
        self.config_path = config_path
        self.announce = announce  # log members coming and going (a hosting dashboard says it in its event log)
        self.env = dict(env)
        self.log = log
        self.open_backend = open_backend
        self.release_backend = release_backend
        self.keep = keep
        self.verbose = verbose
        self.config = Config()
        self.backend: Backend | None = None
        self._lost: str | None = None  # the server lost and not reached again (its name), for the teardown's word
        self.passes = 0
        self._stop = False
        self._reload = False
        self._wake = asyncio.Event()
        self._removed: set[str] = set()  # groups taken out of the config while running: to be torn down
        self._present: dict[tuple[str, str], bool] = {}
        self.returned: dict[str, float] = {}  # when each member last came back (wall clock), for a re-check
        self._made: dict[tuple[int, int], float] = {}  # links made lately (ports), while the watcher catches up
        self.bluetooth = BluetoothKeeper(log, self.config.reconnect, self._write_status, self._wake.set, self.env)
        self.status_path = runtime_dir(self.env) / "status.json"

    # ------------------------------------------------------------ requests (signal handlers call these)
    def request_reload(self) -> None:
        self._reload = True
        self._wake.set()

    def request_stop(self) -> None:
        self._stop = True
        self._wake.set()

    # ------------------------------------------------------------ the loop
    def load(self) -> None:
        config = load_config(self.config_path)
        for warning in config.warnings:
            self.log("warning", warning)
        self._removed |= set(self.config.groups) - set(config.groups)
        self._removed -= set(config.groups)
        self.config = config
        self.bluetooth.settings = config.reconnect

    async def run(self, notify: Callable[[str], None]) -> None:
        self.load()
        self.log("info", f"managing {len(self.config.groups)} group(s) from {self.config_path}")
        await self._connect()
        notify("READY=1")
        recent: collections.deque[float] = collections.deque(maxlen=MAX_PASSES_PER_S)
        try:
            while not self._stop:
                if self._reload:
                    self._reload = False
                    try:
                        self.load()
                        self.log("info", f"configuration reloaded: {len(self.config.groups)} group(s)")
                    except UserError as err:
                        self.log("error", f"configuration not reloaded, keeping the old one: {err.message}")
                backend = self.backend
                assert backend is not None
                if not backend.alive:
                    self.log("warning", f"lost {backend.capabilities.server}: waiting for it to come back")
                    self._lost = backend.capabilities.server
                    await self._release(backend)
                    await self._connect()
                    continue
                # Rate limit over a sliding second: the events of a speaker coming back (node, ports, state)
                # are served at once; only a storm of them (a flapping speaker) is spaced out.
                while len(recent) >= MAX_PASSES_PER_S and recent[0] > time.monotonic() - 1.0:
                    await asyncio.sleep(recent[0] + 1.0 - time.monotonic())
                    recent.popleft()
                recent.append(time.monotonic())
                seen = backend.serial
                self._wake.clear()  # a wake that comes during the pass is kept for the next one
                await self._pass(backend)
                await self._wait(backend, seen)
        finally:
            notify("STOPPING=1")
            await self._shutdown()

    async def _connect(self) -> None:
        said = False
        while not self._stop:
            try:
                self.backend = await self.open_backend()
                self._lost = None
                if said:
                    self.log("info", f"{self.backend.capabilities.server} is back: rebuilding the groups")
                return
            except PwgroupError as err:
                if not said:
                    self.log("warning", f"{err.message}; trying again every {RECONNECT_PERIOD_S:g} s")
                    said = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), RECONNECT_PERIOD_S)
            self._wake.clear()

    async def _wait(self, backend: Backend, seen: int) -> None:
        if backend.serial != seen or self._stop or self._reload or self._wake.is_set():
            return
        changed = asyncio.ensure_future(backend.wait_changed(3600.0, since=seen))
        woken = asyncio.ensure_future(self._wake.wait())
        # Level-triggered for Bluetooth too: while a member is away unhandled, look again every second.
        timeout = PENDING_RECHECK_S if self.bluetooth.pending else None
        if self._made:  # a link taken on trust is checked again once its grace is over
            timeout = min(timeout or LINK_GRACE_S, LINK_GRACE_S)
        try:
            await asyncio.wait({changed, woken}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (changed, woken):
                task.cancel()

    async def _pass(self, backend: Backend) -> None:
        self.passes += 1
        graph = await backend.refresh()
        wanted: dict[str, GroupSpec | None] = {name: g.spec() for name, g in self.config.groups.items()}
        for name in sorted(self._removed):
            wanted[name] = None  # taken out of the config while we ran: torn down
        for name, desired in wanted.items():
            if held(self.env, name):
                continue
            self._note_presence(graph, name)
            actions = reconcile(desired, graph, name)
            # A link pw-link has just made may not be in our pw-dump stream yet (it lags 6-12 ms): asking
            # for it again would only spawn another pw-link while the speaker's return is still settling.
            now = time.monotonic()
            self._made = {k: t for k, t in self._made.items() if now - t < LINK_GRACE_S}
            actions = [a for a in actions if not (isinstance(a, LinkPorts) and (a.out_port, a.in_port) in self._made)]
            if not actions:
                if desired is None:
                    self._removed.discard(name)
                continue
            try:
                if self.verbose:
                    self.log(
                        "debug",
                        f"[{time.monotonic():.3f}] group {name}: {', '.join(type(a).__name__ for a in actions)}",
                    )
                await apply_actions(backend, actions)
                self._made.update(
                    {(a.out_port, a.in_port): time.monotonic() for a in actions if isinstance(a, LinkPorts)}
                )
            except PwgroupError as err:
                # Level-triggered: the next event (or the next pass) tries again from what is there then.
                self.log("warning", f"group {name}: {err.message}")
            graph = await backend.refresh()
        addresses = {m.speaker for g in self.config.groups.values() for m in g.members if normalize_address(m.speaker)}
        present = {a for a in addresses if layout.find_speaker(graph, a) is not None}
        self.bluetooth.update(addresses - present, present)

    def _write_status(self) -> None:
        """What `pwgroup status` shows beside the graph: each member's reconnect state."""
        data = {
            "pid": os.getpid(),
            "updated": time.time(),
            "reconnect": self.bluetooth.snapshot(),
            "returned": self.returned,
        }
        tmp = self.status_path.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(data))
            tmp.replace(self.status_path)

    def _note_presence(self, graph: Graph, name: str) -> None:
        """One log line per member that comes or goes, in pwgroup.status's words (the dashboard's too)."""
        for speaker, now in presence(graph, name, self.config.groups.get(name)).items():
            before = self._present.get((name, speaker))
            if before is not None and before != now:
                if now:
                    self.returned[speaker] = time.time()
                    self._write_status()
                if self.announce:
                    self.log(*presence_change(name, speaker, now, relinking=True))
            self._present[(name, speaker)] = now

    async def _shutdown(self) -> None:
        await self.bluetooth.close()
        with contextlib.suppress(OSError):
            self.status_path.unlink()
        backend = self.backend
        if backend is None:
            if not self.keep and self._lost is not None:
                self.log("warning", f"{self._lost} is gone: nothing to remove")
            return
        if not self.keep and not backend.alive:
            self.log("warning", f"{backend.capabilities.server} is gone: nothing to remove")
        elif not self.keep:
            for name in sorted(set(self.config.groups) | self._removed):
                try:
                    await converge(backend, None, name)
                    self.log("info", f"group {name} removed")
                except ServerUnreachable:
                    # It died under us: what is left goes with it, or a next daemon adopts or removes it.
                    self.log("warning", f"{backend.capabilities.server} went away: the rest is left as it is")
                    break
                except PwgroupError as err:
                    self.log("warning", f"group {name} not fully removed: {err.message}")
        await self._release(backend)

    async def _release(self, backend: Backend) -> None:
        if self.backend is backend:
            self.backend = None
        if self.release_backend is not None:
            await self.release_backend(backend)
        else:
            await backend.close()
