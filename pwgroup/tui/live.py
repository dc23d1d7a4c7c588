"""The live room as the dashboard's Source: a snapshot after every batch of graph changes, built from the parts
that each do one job (server, bluetooth, keeper, editing, calibration); one watcher and one BlueZ client per process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pwgroup.bluez.view import join
from pwgroup.config import Config, ConfigError, config_path
from pwgroup.config import load as load_config
from pwgroup.graph import Backend
from pwgroup.model import speakers_in
from pwgroup.tui.bluetooth import BT_RETRY_S, BluetoothLink
from pwgroup.tui.calibration import Calibrations
from pwgroup.tui.editing import Editor
from pwgroup.tui.server import RETRY_S, OpenBackend, ServerLink
from pwgroup.tui.source import LogLine, Progress, Publish, StateUpdate
from pwgroup.tui.view import FoundRow, Snapshot, build_snapshot

# How often the view is rebuilt with no graph change (the config, the daemon and BlueZ change on their own).
POLL_S = 2.0


class LiveSource:
    """The sound server watched through this process's backend: a snapshot after every batch of graph changes
    (and every POLL_S for the config, the daemon and BlueZ); a lost server is reported and reached again by
    itself. Edits change config.toml and converge, or let the running daemon apply them, like the CLI. While no
    daemon runs it keeps the groups itself (tui.keeper), on the same watcher and BlueZ client."""

    def __init__(
        self,
        env: Mapping[str, str],
        bluetooth: bool = True,
        open_backend: OpenBackend | None = None,
        poll_s: float = POLL_S,
        retry_s: float = RETRY_S,
        keep: bool = True,
        bt_retry_s: float = BT_RETRY_S,
    ) -> None:
        self.env = dict(env)
        self.poll_s = poll_s
        self.keep = keep  # while no daemon runs, keep the groups built here (tui.keeper)
        self._kick = asyncio.Event()
        self._closed = False
        self._names: dict[str, str] = {}  # speakers' names as last seen, for members that are away
        self.keeper: Any = None
        self.server = ServerLink(self.env, open_backend, retry_s)
        self.bt = BluetoothLink(self.env, bluetooth, self.refresh_now, bt_retry_s)
        self.editor = Editor(self.env, self.server.need, self.refresh_now)
        self.calibrations = Calibrations(self.env, self.server.need, self.bt.reported_delays, self.refresh_now)

    @property
    def backend(self) -> Backend | None:
        return self.server.backend

    @backend.setter
    def backend(self, be: Backend | None) -> None:
        self.server.backend = be

    # ------------------------------------------------------------ observing
    async def run(self, publish: Publish) -> None:
        if self.keep:
            from pwgroup.tui.keeper import Keeper

            self.keeper = Keeper(
                self.env, lambda level, text: publish(LogLine(level, text)), self.server.acquire, self.server.release
            )
        try:
            await self.server.run(publish, lambda be: self._watch(be, publish), lambda: self._closed)
        finally:
            await self.bt.close()

    async def close(self) -> None:
        """Stop watching, and end the watcher process before the event loop goes (a cancelled worker's own
        cleanup is not waited for when an app exits)."""
        self._closed = True
        self._kick.set()
        if self.keeper is not None:
            await self.keeper.stop()
        if self.server.backend is not None:
            await self.server.drop(self.server.backend)
        await self.bt.close()

    async def _watch(self, be: Backend, publish: Publish) -> None:
        while be.alive and not self._closed:
            serial = be.serial
            self._kick.clear()  # before the snapshot: an edit that ends while it is built asks for another
            if self.keeper is not None:
                self.keeper.try_start()
            await self.bt.ensure()
            publish(StateUpdate(self.snapshot(be)))
            changed = asyncio.ensure_future(be.wait_changed(self.poll_s, since=serial))
            kicked = asyncio.ensure_future(self._kick.wait())
            try:
                await asyncio.wait({changed, kicked}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
                kicked.cancel()
            # A speaker arriving is a burst of node, port and link events: show it once, whole.
            await asyncio.sleep(0.03)

    async def _bluetooth(self) -> None:
        await self.bt.ensure()

    def snapshot(self, be: Backend) -> Snapshot:
        from pwgroup.health import daemon_report

        config_error = None
        try:
            config = load_config(config_path(self.env))
        except ConfigError as err:
            config, config_error = Config(), err.message
        report = daemon_report(self.env)
        views = join(speakers_in(be.graph), self.bt.devices())
        for v in views:
            for key in (v.address, v.node):
                if key and v.name:
                    self._names[key] = v.name
        return build_snapshot(
            be.graph,
            config,
            views,
            be.name,
            report.pid,
            self.bt.reason,
            config_error=config_error,
            known_names=self._names,
            reconnect=report.reconnect,
            returned=report.returned,
            bluetooth_lost=self.bt.lost,
        )

    def refresh_now(self) -> None:
        self._kick.set()

    # ------------------------------------------------------------ the Source's edits, each to the part doing it
    async def bluetooth(self, action: str, address: str) -> None:
        await self.bt.act(action, address)

    async def scan(self, publish: Callable[[tuple[FoundRow, ...]], None]) -> None:
        await self.bt.scan(publish, self.poll_s)

    async def pair(self, address: str) -> None:
        await self.bt.pair(address)

    async def calibrate(self, group: str, progress: Progress, method: str | None = None) -> Any:
        return await self.calibrations.calibrate(group, progress, method)

    async def end_calibration(self, group: str, keep: bool) -> None:
        await self.calibrations.end(group, keep)

    async def create_group(self, name: str, speakers: Sequence[str]) -> None:
        await self.editor.create_group(name, speakers)

    async def delete_group(self, name: str) -> None:
        await self.editor.delete_group(name)

    async def trim(self, group: str, speaker: str, delta_ms: float) -> float | None:
        return await self.editor.trim(group, speaker, delta_ms)

    async def member_volume(self, group: str, speaker: str, delta: float) -> float | None:
        return await self.editor.member_volume(group, speaker, delta)

    async def cycle_channels(self, group: str, speaker: str) -> str | None:
        return await self.editor.cycle_channels(group, speaker)

    async def group_volume(self, group: str, delta: float) -> float | None:
        return await self.editor.group_volume(group, delta)

    async def group_mute(self, group: str) -> bool | None:
        return await self.editor.group_mute(group)

    async def rename_group(self, group: str, description: str) -> bool:
        return await self.editor.rename_group(group, description)

    async def add_member(self, group: str, speaker: str) -> None:
        await self.editor.add_member(group, speaker)

    async def remove_member(self, group: str, speaker: str) -> None:
        await self.editor.remove_member(group, speaker)
