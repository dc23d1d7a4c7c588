"""The dashboard's data layer, without Textual: what the screen shows (a Snapshot built by a pure function from the
observed graph, the config and BlueZ's devices), the live source that watches the sound server and reports each
change, and the edits the dashboard makes through the same paths as the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pwgroup.bluez.props import Device
from pwgroup.bluez.view import SpeakerView, join
from pwgroup.config import MAX_DELAY_MS, Config, ConfigError, ConfigFile, GroupConfig, MemberConfig, config_path
from pwgroup.config import load as load_config
from pwgroup.graph import Backend, layout
from pwgroup.model import Graph, Node, PwgroupError, UserError, check_group_name, normalize_address, speakers_in

# How often the view is rebuilt with no graph change (the config, the daemon and BlueZ change on their own).
POLL_S = 2.0
RETRY_S = 1.0  # between attempts to reach a lost sound server
T = TypeVar("T")
BT_RETRY_S = 5.0  # between attempts to reach a lost system bus
PAIR_FIND_S = 30.0  # how long pairing from the scan view waits for BlueZ to see the device
BLUEZ_GONE = "Bluetooth control unavailable: BlueZ (org.bluez) is not running"


@dataclass(frozen=True)
class SpeakerRow:
    key: str  # what a group member is called: the address, else the node name
    name: str  # from the air: hostile text, shown literally
    address: str | None
    connection: str
    present: bool  # its audio node is in the graph
    codec: str | None
    reported_ms: float | None  # MediaTransport1.Delay, as BlueZ reports it
    battery: int | None
    groups: tuple[str, ...] = ()
    delay_ms: float | None = None  # the applied delay of its member element (first group)
    measured_ms: float | None = None  # the calibrated latency in config.toml (first group that has one)
    paired: bool | None = None  # None: BlueZ does not know it (or is not reachable)
    trusted: bool | None = None


@dataclass(frozen=True)
class MemberRow:
    group: str
    speaker: str
    name: str
    state: str  # playing | absent | unlinked | not built
    present: bool
    linked: bool
    delay_ms: float | None  # applied in the graph
    trim_ms: float | None  # from the config (None: not in the config)
    wanted_ms: float | None  # the config's total (calibrated plus trim)
    health: str = ""  # "reconnect: waiting 8 s", "needs calibration", "re-check latency", joined by ", "
    volume: float | None = None  # the config's (a linear gain, 1.0 = as played), else the graph's gain
    channels: str | None = None  # the config's channel role: both | left | right | mono
    gain: float | None = None  # the gain applied in the element's mixer (volume, halved for mono)


@dataclass(frozen=True)
class GroupRow:
    name: str
    description: str
    built: bool
    in_config: bool
    members: tuple[MemberRow, ...] = ()
    volume: float | None = None  # the group sink's own volume, on the mixer scale (pavucontrol's percent)
    muted: bool | None = None
    wanted_description: str | None = None  # the config's, while the sink still shows another


@dataclass(frozen=True)
class Snapshot:
    backend: str
    daemon: int | None
    speakers: tuple[SpeakerRow, ...] = ()
    groups: tuple[GroupRow, ...] = ()
    bluetooth: str | None = None  # why BlueZ's half is missing, or None
    config_error: str | None = None
    bluetooth_lost: bool = False  # BlueZ answered earlier in this session and does not now

    def group(self, name: str) -> GroupRow | None:
        return next((g for g in self.groups if g.name == name), None)

    def member(self, group: str, speaker: str) -> MemberRow | None:
        g = self.group(group)
        return next((m for m in g.members if m.speaker == speaker), None) if g else None


def build_snapshot(
    graph: Graph,
    config: Config,
    views: Sequence[SpeakerView],
    backend: str,
    daemon: int | None = None,
    bluetooth: str | None = None,
    config_error: str | None = None,
    known_names: Mapping[str, str] | None = None,
    reconnect: Mapping[str, str] | None = None,
    returned: Mapping[str, float] | None = None,
    now: dt.datetime | None = None,
    bluetooth_lost: bool = False,
) -> Snapshot:
    """What the dashboard shows, from what was observed and what is wanted; `known_names` names speakers that
    are away now (a member's name when it was last seen); `reconnect` and `returned` are the daemon's report
    (pwgroup.health); `now` (UTC) dates calibrations. Pure."""
    now = now or dt.datetime.now(dt.UTC)
    names: dict[str, str] = {}
    for v in views:
        for key in (v.address, v.node):
            if key:
                names.setdefault(key, v.name)
    groups: list[GroupRow] = []
    for name in sorted(set(layout.group_names(graph)) | set(config.groups)):
        state = layout.observe_group(graph, name)
        wanted = config.groups.get(name)
        rows: list[MemberRow] = []
        keys = [m.speaker for m in state.members]
        keys += [m.speaker for m in wanted.members if m.speaker not in keys] if wanted else []
        for key in keys:
            m = state.member(key)
            cm = wanted.member(key) if wanted else None
            present = (m is not None and m.present) or layout.find_speaker(graph, key) is not None
            linked = m is not None and m.linked
            if m is None or state.sink is None:
                text = "not built"
            else:
                text = "playing" if linked else ("unlinked" if present else "absent")
            rows.append(
                MemberRow(
                    group=name,
                    speaker=key,
                    name=names.get(key) or (known_names or {}).get(key, key),
                    state=text,
                    present=present,
                    linked=linked,
                    delay_ms=m.delay_ms if m else None,
                    trim_ms=cm.trim_ms if cm else None,
                    wanted_ms=cm.total_delay_ms if cm else None,
                    health=_health(key, present, cm, config, reconnect or {}, returned or {}, now),
                    volume=cm.volume if cm else (m.gain if m else None),
                    channels=cm.channels if cm else None,
                    gain=m.gain if m else None,
                )
            )
        description = state.sink.description if state.sink else (wanted.description if wanted else name)
        pending = wanted.description if wanted and state.sink and wanted.description != description else None
        groups.append(
            GroupRow(
                name,
                description,
                state.sink is not None,
                wanted is not None,
                tuple(rows),
                volume=layout.sink_volume(state.sink) if state.sink else None,
                muted=state.sink.mute if state.sink else None,
                wanted_description=pending,
            )
        )
    speakers: list[SpeakerRow] = []
    for v in views:
        key = v.address or v.node or v.name
        member_of = [(g.name, m) for g in groups for m in g.members if m.speaker in (v.address, v.node)]
        speakers.append(
            SpeakerRow(
                key=key,
                name=v.name,
                address=v.address,
                connection=v.connection,
                present=v.node is not None,
                codec=v.codec,
                reported_ms=v.delay_ms,
                battery=v.battery,
                groups=tuple(g for g, _ in member_of),
                delay_ms=next((m.delay_ms for _, m in member_of if m.delay_ms is not None), None),
                measured_ms=measured_latency(config, (v.address, v.node)),
                paired=v.paired,
                trusted=v.trusted,
            )
        )
    # A group member whose speaker is away (and BlueZ does not list it) is still a speaker to show: absent.
    listed = {k for v in views for k in (v.address, v.node) if k}
    away = sorted({m.speaker for g in groups for m in g.members if not m.present} - listed)
    for key in away:
        member_of = [(g.name, m) for g in groups for m in g.members if m.speaker == key]
        speakers.append(
            SpeakerRow(
                key=key,
                name=member_of[0][1].name,
                address=normalize_address(key),
                connection="absent",
                present=False,
                codec=None,
                reported_ms=None,
                battery=None,
                groups=tuple(g for g, _ in member_of),
                delay_ms=next((m.delay_ms for _, m in member_of if m.delay_ms is not None), None),
                measured_ms=measured_latency(config, (key,)),
            )
        )
    speakers.sort(key=lambda r: (r.address or "", r.key))
    return Snapshot(backend, daemon, tuple(speakers), tuple(groups), bluetooth, config_error, bluetooth_lost)


def _health(
    key: str,
    present: bool,
    cm: MemberConfig | None,
    config: Config,
    reconnect: Mapping[str, str],
    returned: Mapping[str, float],
    now: dt.datetime,
) -> str:
    notes = []
    if not present and reconnect.get(key):
        notes.append(f"reconnect: {reconnect[key]}")
    if cm is not None and cm.stale(now, config.calibration.stale_after_days):
        notes.append("needs calibration")
    back = returned.get(key)
    if cm is not None and back is not None and (cm.calibrated is None or back > cm.calibrated.timestamp()):
        # A Bluetooth speaker that reconnected may fill its buffers differently (as `pwgroup status` says).
        notes.append("re-check latency")
    return ", ".join(notes)


def events_between(old: Snapshot | None, new: Snapshot) -> list[tuple[str, str]]:
    """(level, text) lines for what changed that a person wants to hear about: members going and returning,
    speakers appearing and leaving, groups built and gone. Pure."""
    if old is None:
        return []
    out: list[tuple[str, str]] = []
    before = {s.key: s for s in old.speakers}
    after = {s.key: s for s in new.speakers}
    for key in sorted(after.keys() - before.keys()):
        out.append(("info", f"speaker {after[key].name} appeared"))
    for key in sorted(before.keys() - after.keys()):
        out.append(("info", f"speaker {before[key].name} is gone"))
    for g in new.groups:
        was = old.group(g.name)
        if was is None:
            out.append(("info", f"group {g.name} " + ("built" if g.built else "configured")))
            continue
        if g.built != was.built:
            out.append(("info" if g.built else "warning", f"group {g.name} " + ("built" if g.built else "sink gone")))
        for m in g.members:
            prev = next((p for p in was.members if p.speaker == m.speaker), None)
            if not prev or prev.present == m.present:
                continue
            name = m.name if m.name != m.speaker else prev.name
            if m.present:
                out.append(("info", f"group {g.name}: {name} returned"))
            else:
                out.append(("warning", f"group {g.name}: {name} went away; the others play on"))
    for g in old.groups:
        if new.group(g.name) is None:
            out.append(("info", f"group {g.name} deleted"))
    return out


# ---------------------------------------------------------------- what the dashboard listens to


@dataclass(frozen=True)
class StateUpdate:
    snapshot: Snapshot


@dataclass(frozen=True)
class ServerLost:
    reason: str


@dataclass(frozen=True)
class LogLine:
    level: str  # info | warning | error
    text: str


Update = StateUpdate | ServerLost | LogLine
Publish = Callable[[Update], None]
Progress = Callable[[str, float], None]  # a calibration's step, and the fraction done


class Source(Protocol):
    """Where the dashboard's data comes from and where its edits go: the live room, or fixed data in tests."""

    async def run(self, publish: Publish) -> None: ...

    async def create_group(self, name: str, speakers: Sequence[str]) -> None: ...

    async def delete_group(self, name: str) -> None: ...

    async def trim(self, group: str, speaker: str, delta_ms: float) -> float | None: ...

    async def bluetooth(self, action: str, address: str) -> None: ...

    async def close(self) -> None: ...

    async def calibrate(self, group: str, progress: Progress, method: str | None = None) -> Any: ...

    async def end_calibration(self, group: str, keep: bool) -> None: ...
    async def member_volume(self, group: str, speaker: str, delta: float) -> float | None: ...

    async def cycle_channels(self, group: str, speaker: str) -> str | None: ...

    async def group_volume(self, group: str, delta: float) -> float | None: ...

    async def group_mute(self, group: str) -> bool | None: ...

    async def rename_group(self, group: str, description: str) -> bool: ...

    async def add_member(self, group: str, speaker: str) -> None: ...

    async def remove_member(self, group: str, speaker: str) -> None: ...
    async def scan(self, publish: Callable[[tuple[FoundRow, ...]], None]) -> None: ...

    async def pair(self, address: str) -> None: ...


@dataclass
class FixedSource:
    """Shows one snapshot and refuses edits: for snapshot tests and screenshots."""

    snapshot: Snapshot
    lines: Sequence[LogLine] = ()
    lost: str | None = None
    edits: list[tuple[Any, ...]] = field(default_factory=list)
    report: Any = None  # what calibrate returns (a calibrate.session.Report)
    found: tuple[FoundRow, ...] = ()  # what its scan view finds

    async def run(self, publish: Publish) -> None:
        publish(StateUpdate(self.snapshot))
        for line in self.lines:
            publish(line)
        if self.lost:
            publish(ServerLost(self.lost))

    async def create_group(self, name: str, speakers: Sequence[str]) -> None:
        self.edits.append(("create", name, tuple(speakers)))

    async def delete_group(self, name: str) -> None:
        self.edits.append(("delete", name))

    async def trim(self, group: str, speaker: str, delta_ms: float) -> float | None:
        self.edits.append(("trim", group, speaker, delta_ms))
        return None

    async def bluetooth(self, action: str, address: str) -> None:
        self.edits.append((action, address))

    async def close(self) -> None:
        pass

    async def calibrate(self, group: str, progress: Progress, method: str | None = None) -> Any:
        self.edits.append(("calibrate", group, method))
        if self.report is None:
            raise PwgroupError("no microphone found: connect one")
        progress("measuring", 0.5)
        return self.report

    async def end_calibration(self, group: str, keep: bool) -> None:
        self.edits.append(("end calibration", group, keep))

    async def member_volume(self, group: str, speaker: str, delta: float) -> float | None:
        self.edits.append(("volume", group, speaker, delta))
        return None

    async def cycle_channels(self, group: str, speaker: str) -> str | None:
        self.edits.append(("channels", group, speaker))
        return None

    async def group_volume(self, group: str, delta: float) -> float | None:
        self.edits.append(("group-volume", group, delta))
        return None

    async def group_mute(self, group: str) -> bool | None:
        self.edits.append(("mute", group))
        return True

    async def rename_group(self, group: str, description: str) -> bool:
        self.edits.append(("rename", group, description))
        return True

    async def add_member(self, group: str, speaker: str) -> None:
        self.edits.append(("add", group, speaker))

    async def remove_member(self, group: str, speaker: str) -> None:
        self.edits.append(("remove", group, speaker))

    async def scan(self, publish: Callable[[tuple[FoundRow, ...]], None]) -> None:
        self.edits.append(("scan",))
        publish(self.found)

    async def pair(self, address: str) -> None:
        self.edits.append(("pair", address))


OpenBackend = Callable[[Mapping[str, str]], Any]


async def _open_backend(env: Mapping[str, str]) -> Backend:
    from pwgroup.graph.select import open_backend

    be, _ = await open_backend(env)
    return be


class LiveSource:
    """The sound server watched through one backend: a snapshot after every batch of graph changes (and every
    POLL_S for the config, the daemon and BlueZ); a lost server is reported and reached again by itself.
    Edits change config.toml and converge, or let the running daemon apply them, like the CLI."""

    def __init__(
        self,
        env: Mapping[str, str],
        bluetooth: bool = True,
        open_backend: OpenBackend = _open_backend,
        poll_s: float = POLL_S,
        retry_s: float = RETRY_S,
        keep: bool = True,
        bt_retry_s: float = BT_RETRY_S,
    ) -> None:
        self.env = dict(env)
        self.ask_bluetooth = bluetooth
        self._open_backend = open_backend
        self.poll_s = poll_s
        self.retry_s = retry_s
        self.backend: Backend | None = None
        self._bt: Any = None
        self._bt_reason: str | None = "Bluetooth not asked" if not bluetooth else None
        self._bt_next = 0.0
        self._edit_lock = asyncio.Lock()
        self._pending: dict[tuple[str, ...], float] = {}
        self._kick = asyncio.Event()
        self._closed = False
        self._names: dict[str, str] = {}  # speakers' names as last seen, for members that are away
        self._calibrations: dict[str, Any] = {}  # group -> edits.Calibration measured, not yet kept or discarded
        self.keep = keep  # while no daemon runs, keep the groups built here (tui.keeper)
        self._keeper: Any = None
        self._closing: tuple[Backend, asyncio.Future[None]] | None = None
        self.bt_retry_s = bt_retry_s
        self._bt_seen = False  # BlueZ answered once: its absence from then on is a loss to show
        self._scan_lock = asyncio.Lock()  # one discovery at a time on our connection

    # ------------------------------------------------------------ observing
    async def run(self, publish: Publish) -> None:
        lost: str | None = None
        if self.keep:
            from pwgroup.tui.keeper import Keeper

            self._keeper = Keeper(self.env, lambda level, text: publish(LogLine(level, text)), self._keeper_backend)
        try:
            while not self._closed:
                try:
                    be = await self._open_backend(self.env)
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
                    await self._watch(be, publish)
                finally:
                    await self._drop(be)
                if self._closed:
                    return
                lost = "the sound server went away: reconnecting"
                publish(ServerLost(lost))
        finally:
            if self._bt is not None:
                self._bt.close()
                self._bt = None

    async def _keeper_backend(self) -> Backend:
        be: Backend = await self._open_backend(self.env)
        return be

    async def close(self) -> None:
        """Stop watching, and end the watcher process before the event loop goes (a cancelled worker's own
        cleanup is not waited for when an app exits)."""
        self._closed = True
        self._kick.set()
        if self._keeper is not None:
            await self._keeper.stop()
        if self.backend is not None:
            await self._drop(self.backend)
        if self._bt is not None:
            self._bt.close()
            self._bt = None

    async def _drop(self, be: Backend) -> None:
        """Close `be` once, whoever asks first; the others wait for the same close."""
        if self._closing is None or self._closing[0] is not be:
            self._closing = (be, asyncio.ensure_future(be.close()))
        try:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._closing[1])
        finally:
            if self.backend is be:
                self.backend = None

    async def _watch(self, be: Backend, publish: Publish) -> None:
        while be.alive and not self._closed:
            serial = be.serial
            self._kick.clear()  # before the snapshot: an edit that ends while it is built asks for another
            if self._keeper is not None:
                self._keeper.try_start()
            await self._bluetooth()
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

    def snapshot(self, be: Backend) -> Snapshot:
        from pwgroup.health import daemon_state

        config_error = None
        try:
            config = load_config(config_path(self.env))
        except ConfigError as err:
            config, config_error = Config(), err.message
        devices = self._bt.devices() if self._bt is not None else None
        daemon, reconnect, returned = daemon_state(self.env)
        views = join(speakers_in(be.graph), devices)
        for v in views:
            for key in (v.address, v.node):
                if key and v.name:
                    self._names[key] = v.name
        return build_snapshot(
            be.graph,
            config,
            views,
            be.name,
            daemon,
            self._bt_reason,
            config_error=config_error,
            known_names=self._names,
            reconnect=reconnect,
            returned=returned,
            bluetooth_lost=self._bt_seen and self._bt_reason is not None,
        )

    async def _bluetooth(self) -> None:
        """Keep a BlueZ client when a system bus answers; ask again now and then when it does not. BlueZ leaving
        and coming back on a live bus is followed by the client itself."""
        if not self.ask_bluetooth:
            return
        if self._bt is not None and not getattr(self._bt.bus, "connected", False):
            with contextlib.suppress(Exception):
                self._bt.close()
            self._bt, self._bt_reason = None, "Bluetooth control unavailable: the system bus went away"
            self._bt_next = 0.0
        if self._bt is None:
            loop = asyncio.get_running_loop()
            if loop.time() < self._bt_next:
                return
            self._bt_next = loop.time() + self.bt_retry_s
            from pwgroup.bluez.client import BluezClient
            from pwgroup.bluez.errors import BluetoothError

            try:
                self._bt = await BluezClient.open(require_bluez=False, env=self.env)
            except BluetoothError as err:
                self._bt_reason = err.message
                return
        self._bt_reason = None if self._bt.available else BLUEZ_GONE
        self._bt_seen = self._bt_seen or self._bt.available

    def refresh_now(self) -> None:
        self._kick.set()

    async def bluetooth(self, action: str, address: str) -> None:
        """`connect`, `disconnect`, `trust` or `untrust` a speaker through BlueZ; its audio node follows, and
        the view with it."""
        if action not in ("connect", "disconnect", "trust", "untrust"):
            raise UserError(f"unknown Bluetooth action {action!r}")
        bt = self._need_bt()
        try:
            if action in ("trust", "untrust"):
                await bt.set_trusted(address, action == "trust")
            else:
                await (bt.connect(address) if action == "connect" else bt.disconnect(address))
        finally:
            self.refresh_now()

    # ------------------------------------------------------------ edits (as the CLI makes them)
    def _need_backend(self) -> Backend:
        if self.backend is None or not self.backend.alive:
            raise PwgroupError("the sound server is not reachable: the change was not made")
        return self.backend

    async def _edit(self, name: str, edit: Callable[[Graph, GroupConfig | None], GroupConfig | None]) -> Any:
        from pwgroup.edits import edit_group

        async with self._edit_lock:
            try:
                return await edit_group(self._need_backend(), ConfigFile.open(config_path(self.env)), name, edit)
            finally:
                self.refresh_now()

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
                self.refresh_now()

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

            await edit_group(self._need_backend(), ConfigFile.open(config_path(self.env)), group, edit)
            return saved

        return await self._fold(key, delta, run)

    # ------------------------------------------------------------ group editing: volume, role, members, name
    async def member_volume(self, group: str, speaker: str, delta: float) -> float | None:
        """Change a member's volume (config.toml's linear gain, 0 to 1.5) by `delta`; the reconciler sets the
        element's mixer gain. Folded like trim. Returns the new volume, or None when folded into another."""
        from pwgroup.config import with_member_values
        from pwgroup.edits import step_volume

        def change(current: GroupConfig, member: MemberConfig, total: float) -> GroupConfig:
            return with_member_values(current, speaker, volume=step_volume(member.volume, total))

        saved = await self._fold_member(("volume", group, speaker), group, speaker, delta, change)
        return saved.volume if saved else None

    async def cycle_channels(self, group: str, speaker: str) -> str | None:
        """The member's channel role one step on (both, left, right, mono); presses made meanwhile fold into
        one edit that takes as many steps. Returns the new role, or None when folded into another."""
        from pwgroup.config import with_member_values
        from pwgroup.edits import next_channels

        def change(current: GroupConfig, member: MemberConfig, total: float) -> GroupConfig:
            role = member.channels
            for _ in range(round(total) % 4):
                role = next_channels(role)
            return with_member_values(current, speaker, channels=role)

        saved = await self._fold_member(("channels", group, speaker), group, speaker, 1.0, change)
        return saved.channels if saved else None

    def _group_sink(self, group: str) -> tuple[Backend, Node]:
        be = self._need_backend()
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
                return await rename_group(self._need_backend(), cfg, group, description)
            finally:
                self.refresh_now()

    async def add_member(self, group: str, speaker: str) -> None:
        from pwgroup.edits import add_member

        await self._edit(group, add_member(group, speaker))

    async def remove_member(self, group: str, speaker: str) -> None:
        from pwgroup.edits import remove_member

        await self._edit(group, remove_member(group, speaker))

    # ------------------------------------------------------------ calibration (as `pwgroup calibrate` runs it)
    async def calibrate(self, group: str, progress: Progress, method: str | None = None) -> Any:
        """Measure `group` and leave the result applied but unsaved (the group held from the daemon) until
        end_calibration keeps or discards it."""
        from pwgroup.edits import Calibration

        be = self._need_backend()
        if be.name != "pipewire":
            raise UserError("calibration needs PipeWire for now: on PulseAudio trim the delays by ear")
        config = load_config(config_path(self.env))
        method = method or config.calibration.method
        told: dict[str, float] = {}
        if method == "reported" and self._bt is not None:
            told = {d.address: d.transport.delay_ms for d in self._bt.devices() if d.transport and d.transport.delay_ms}
        session = self._calibrations.get(group)
        if session is None or session.method != method:
            if session is not None:
                session.release()
            session = Calibration(be, config_path(self.env), group, method, None, told)
        self._calibrations[group] = session
        try:
            return await session.measure(progress)
        except BaseException:
            self._calibrations.pop(group, None)
            raise
        finally:
            self.refresh_now()

    async def end_calibration(self, group: str, keep: bool) -> None:
        session = self._calibrations.pop(group, None)
        if session is None:
            return
        try:
            if keep:
                await session.keep()
            else:
                await session.discard()
        finally:
            session.release()
            self.refresh_now()

    # ------------------------------------------------------------ Bluetooth: the scan view
    def _need_bt(self) -> Any:
        if self._bt is None or not self._bt.available:
            raise PwgroupError(self._bt_reason or BLUEZ_GONE)
        return self._bt

    async def scan(self, publish: Callable[[tuple[FoundRow, ...]], None]) -> None:
        """Discover until cancelled, publishing the devices found after every change of BlueZ's view; discovery
        stops when this ends (and BlueZ stops it by itself should our connection go)."""
        from pwgroup.bluez.errors import BluetoothError, InProgress

        async with self._scan_lock:
            bt = self._need_bt()
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
                    await bt.wait_changed(self.poll_s)
            finally:
                # Shielded: the screen that ran this may be cancelled again while discovery stops.
                stop = asyncio.ensure_future(bt.set_discovery(False))
                stop.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved even if not awaited
                with contextlib.suppress(Exception, asyncio.CancelledError):  # a bus gone stops it too
                    await asyncio.shield(stop)

    async def pair(self, address: str) -> None:
        """Pair, trust and connect a device found by a scan: `pwgroup pair` then `pwgroup connect`."""
        bt = self._need_bt()
        try:
            await bt.pair_and_trust(address, PAIR_FIND_S)
            await bt.connect(address)
        finally:
            self.refresh_now()


def now_text() -> str:
    return dt.datetime.now().strftime("%H:%M:%S")


# ---------------------------------------------------------------- Bluetooth: pairing words, the scan, the banner


def pairing_text(paired: bool | None, trusted: bool | None) -> str:
    """How the speakers table and the scan view say a device's pairing: '-' when BlueZ does not know it."""
    if paired is None:
        return "-"
    if paired and trusted:
        return "paired, trusted"
    return "paired" if paired else ("trusted" if trusted else "new")


@dataclass(frozen=True)
class FoundRow:
    """A device the scan view lists: `name` is from the air (hostile text), `rssi` None once not heard."""

    address: str
    name: str
    rssi: int | None
    audio_sink: bool
    paired: bool
    trusted: bool
    connected: bool


def found_rows(devices: Sequence[Device], seen: Set[str]) -> tuple[FoundRow, ...]:
    """What the scan view lists: the devices heard in this scan (`seen`, or an RSSI now) and every unpaired one
    BlueZ knows (it only keeps those it found lately); speakers first, then by address, so rows stay put. Pure."""
    rows = [
        FoundRow(d.address, d.alias, d.rssi, d.audio_sink, d.paired, d.trusted, d.connected)
        for d in devices
        if d.rssi is not None or d.address in seen or not d.paired
    ]
    return tuple(sorted(rows, key=lambda r: (not r.audio_sink, r.address)))


def banner_lines(server_lost: str | None, snap: Snapshot | None) -> list[str]:
    """Every problem the banner shows, one line each, so that one never hides another. Pure."""
    lines = []
    if server_lost:
        lines.append(f"sound server lost: {server_lost}")
    if snap is not None and snap.config_error:
        lines.append(f"config: {snap.config_error}")
    if snap is not None and snap.bluetooth_lost and snap.bluetooth:
        reason = snap.bluetooth.removeprefix("Bluetooth control unavailable: ")
        lines.append(f"Bluetooth lost: {reason}")  # one line at 80 columns; the event log says the rest
    return lines


def measured_latency(config: Config, keys: Sequence[str | None]) -> float | None:
    """The calibrated latency config.toml holds for a speaker known by any of `keys` (its address, its node),
    from the first group (by name) that measured it. Pure."""
    for name in sorted(config.groups):
        for member in config.groups[name].members:
            if member.speaker in keys and member.latency_ms is not None:
                return member.latency_ms
    return None
