"""Calibration from the dashboard, as `pwgroup calibrate` runs it: a group measured and left applied but unsaved
(held from the reconciler) until the screen keeps or discards it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pwgroup.config import config_path
from pwgroup.config import load as load_config
from pwgroup.graph import Backend
from pwgroup.model import UserError
from pwgroup.tui.source import Progress


class Calibrations:
    def __init__(
        self,
        env: Mapping[str, str],
        need_backend: Callable[[], Backend],
        reported: Callable[[], dict[str, float]],
        changed: Callable[[], None],
    ) -> None:
        self.env = dict(env)
        self.need_backend = need_backend
        self.reported = reported  # each speaker's delay as BlueZ reports it, for `--method reported`
        self.changed = changed
        self._sessions: dict[str, Any] = {}  # group -> edits.Calibration measured, not yet kept or discarded

    async def calibrate(self, group: str, progress: Progress, method: str | None = None) -> Any:
        """Measure `group` and leave the result applied but unsaved (the group held from the daemon) until
        end_calibration keeps or discards it."""
        from pwgroup.edits import Calibration

        be = self.need_backend()
        if not be.capabilities.calibrate:
            raise UserError(f"calibration needs PipeWire for now: on {be.capabilities.server} trim the delays by ear")
        config = load_config(config_path(self.env))
        method = method or config.calibration.method
        told = self.reported() if method == "reported" else {}
        session = self._sessions.get(group)
        if session is None or session.method != method:
            if session is not None:
                session.release()
            session = Calibration(be, config_path(self.env), group, method, None, told)
        self._sessions[group] = session
        try:
            return await session.measure(progress)
        except BaseException:
            self._sessions.pop(group, None)
            raise
        finally:
            self.changed()

    async def end(self, group: str, keep: bool) -> None:
        session = self._sessions.pop(group, None)
        if session is None:
            return
        try:
            if keep:
                await session.keep()
            else:
                await session.discard()
        finally:
            session.release()
            self.changed()
