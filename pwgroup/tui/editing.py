"""The dashboard's edits, made through the same paths as the CLI (pwgroup.edits): config.toml changed and converged,
or left to the running daemon. Key presses that arrive while an edit runs fold into the next one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from pwgroup.config import MAX_DELAY_MS, ConfigFile, GroupConfig, MemberConfig, config_path
from pwgroup.graph import Backend, layout
from pwgroup.model import Graph, Node, UserError, check_group_name, speakers_in

T = TypeVar("T")


class Editor:
    def __init__(self, env: Mapping[str, str], need_backend: Callable[[], Backend], changed: Callable[[], None]):
        self.env = dict(env)
        self.need_backend = need_backend  # the live backend, or a one-line refusal
        self.changed = changed  # the view is worth rebuilding now
        self._edit_lock = asyncio.Lock()
        self._pending: dict[tuple[str, ...], float] = {}

    async def _edit(self, name: str, edit: Callable[[Graph, GroupConfig | None], GroupConfig | None]) -> Any:
        from pwgroup.edits import edit_group

        async with self._edit_lock:
            try:
                return await edit_group(self.need_backend(), ConfigFile.open(config_path(self.env)), name, edit)
            finally:
                self.changed()

    async def create_group(self, name: str, speakers: Sequence[str]) -> None:
        check_group_name(name)
        if not speakers:
            raise UserError("select speakers first (space marks one)")

        def edit(graph: Graph, current: GroupConfig | None) -> GroupConfig:
            if current is not None:
                raise UserError(f"group {name!r} already exists: pick another name")
            known = {s.key for s in speakers_in(graph)}
            gone = [k for k in speakers if k not in known]
            if gone:
                raise UserError(f"speaker {gone[0]} is not here now: a group is made from present speakers")
            return GroupConfig(name, f"{name} (pwgroup)", tuple(MemberConfig(k) for k in dict.fromkeys(speakers)))

        await self._edit(name, edit)

    async def delete_group(self, name: str) -> None:
        def edit(graph: Graph, current: GroupConfig | None) -> None:
            if current is None:
                raise UserError(f"no group named {name!r}")
            return None

        await self._edit(name, edit)

    async def trim(self, group: str, speaker: str, delta_ms: float) -> float | None:
        """Add `delta_ms` to a member's trim. Presses that arrive while an edit runs fold into the next one, so
        holding a key never queues more edits than the graph can take. Returns the new trim, or None when this
        press was folded into another's edit."""
        from pwgroup.config import with_member_values

        def change(current: GroupConfig, member: MemberConfig, total: float) -> GroupConfig:
            new = round(min(MAX_DELAY_MS, max(-MAX_DELAY_MS, member.trim_ms + total)), 3)
            return with_member_values(current, speaker, trim_ms=new)

        saved = await self._fold_member(("trim", group, speaker), group, speaker, delta_ms, change)
        return saved.trim_ms if saved else None

    async def _fold(self, key: tuple[str, ...], delta: float, run: Callable[[float], Awaitable[T]]) -> T | None:
        """Presses that arrive while an edit runs add up under `key` and go in the next edit, as one: holding a
        key never queues more edits than the graph can take. Returns what `run(total)` returns, or None when
        this press was folded into another's edit. A refused or failed edit drops the presses folded into it;
        presses that come while an edit converges stay pending for the next one."""
        self._pending[key] = self._pending.get(key, 0.0) + delta
        async with self._edit_lock:
            if key not in self._pending:
                return None
            total = self._pending.pop(key)
            try:
                return await run(total)
            finally:
                self.changed()

    async def _fold_member(
        self,
        key: tuple[str, ...],
        group: str,
        speaker: str,
        delta: float,
        change: Callable[[GroupConfig, MemberConfig, float], GroupConfig],
    ) -> MemberConfig | None:
        """A folded edit of one member in config.toml, through the shared edit path; returns the saved member."""
        from pwgroup.edits import edit_group

        async def run(total: float) -> MemberConfig | None:
            saved: MemberConfig | None = None

            def edit(graph: Graph, current: GroupConfig | None) -> GroupConfig:
                nonlocal saved
                if current is None:
                    raise UserError(f"no group named {group!r}")
                member = current.member(speaker)
                if member is None:
                    raise UserError(f"{speaker} is not a member of group {group!r}")
                wanted = change(current, member, total)
                saved = wanted.member(speaker)
                return wanted

            await edit_group(self.need_backend(), ConfigFile.open(config_path(self.env)), group, edit)
            return saved

        return await self._fold(key, delta, run)

    # ------------------------------------------------------------ group editing: volume, role, members, name
    async def member_volume(self, group: str, speaker: str, delta: float) -> float | None:
        """Change a member's volume (config.toml's linear gain, 0 to 1.5) by `delta`; the reconciler sets the
        element's mixer gain. Folded like trim. Returns the new volume, or None when folded into another."""
        from pwgroup.config import with_member_values
        from pwgroup.edits import step_volume

        self._need_member_gain()

        def change(current: GroupConfig, member: MemberConfig, total: float) -> GroupConfig:
            return with_member_values(current, speaker, volume=step_volume(member.volume, total))

        saved = await self._fold_member(("volume", group, speaker), group, speaker, delta, change)
        return saved.volume if saved else None

    async def cycle_channels(self, group: str, speaker: str) -> str | None:
        """The member's channel role one step on (both, left, right, mono); presses made meanwhile fold into
        one edit that takes as many steps. Returns the new role, or None when folded into another."""
        from pwgroup.config import with_member_values
        from pwgroup.edits import next_channels

        self._need_member_gain()

        def change(current: GroupConfig, member: MemberConfig, total: float) -> GroupConfig:
            role = member.channels
            for _ in range(round(total) % 4):
                role = next_channels(role)
            return with_member_values(current, speaker, channels=role)

        saved = await self._fold_member(("channels", group, speaker), group, speaker, 1.0, change)
        return saved.channels if saved else None

    def _need_member_gain(self) -> None:
        """A member's volume or role where the server cannot apply it is refused, not saved to go unheard."""
        from pwgroup.graph import no_member_gain

        caps = self.need_backend().capabilities
        if not caps.member_gain:
            raise UserError(no_member_gain(caps.server))

    def _group_sink(self, group: str) -> tuple[Backend, Node]:
        be = self.need_backend()
        sink = layout.observe_group(be.graph, group).sink
        if sink is None:
            raise UserError(f"group {group!r} has no sink now: its volume is the sink's own")
        return be, sink

    async def group_volume(self, group: str, delta: float) -> float | None:
        """The group sink's own volume (what pavucontrol's slider for it sets), moved by `delta` on the mixer
        scale and kept within 0 to 100 %. It is the sink's live state, not config.toml's: apps and mixers move
        it too. Folded like trim. Returns the new volume, or None when folded into another press."""
        from pwgroup.edits import step_volume

        async def run(total: float) -> float:
            be, sink = self._group_sink(group)
            new = step_volume(layout.sink_volume(sink) or 1.0, total, top=1.0)
            await be.set_sink_volume(sink.id, new)
            return new

        return await self._fold(("group-volume", group), delta, run)

    async def group_mute(self, group: str) -> bool | None:
        """Mute the group sink, or unmute it: every member falls silent (its monitor follows its volume).
        Presses made meanwhile fold: an even number of them changes nothing. Returns whether it is muted now,
        or None when this press was folded into another's."""

        async def run(presses: float) -> bool:
            be, sink = self._group_sink(group)
            muted = bool(sink.mute)
            if round(presses) % 2:
                muted = not muted
                await be.set_sink_mute(sink.id, muted)
            return muted

        return await self._fold(("mute", group), 1.0, run)

    async def rename_group(self, group: str, description: str) -> bool:
        """Change what apps call the group (the sink's description; the group's name stays). Returns whether
        apps see it now: a sink that apps play to keeps its old one until it is next built (pwgroup.edits)."""
        from pwgroup.edits import rename_group

        async with self._edit_lock:
            try:
                cfg = ConfigFile.open(config_path(self.env))
                return await rename_group(self.need_backend(), cfg, group, description)
            finally:
                self.changed()

    async def add_member(self, group: str, speaker: str) -> None:
        from pwgroup.edits import add_member

        await self._edit(group, add_member(group, speaker))

    async def remove_member(self, group: str, speaker: str) -> None:
        from pwgroup.edits import remove_member

        await self._edit(group, remove_member(group, speaker))
