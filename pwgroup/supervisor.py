"""Reconcile and execute: a pure step from (desired, observed) to actions, and a loop that applies them.

Level-triggered: the whole desired group is compared with the whole observed graph each time, so running it
twice does nothing the second time and a restart converges to the same graph.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pwgroup.config import Config, ReconnectConfig
from pwgroup.config import load as load_config
from pwgroup.graph import Backend, layout
from pwgroup.graph.proc import process_alive
from pwgroup.model import (
    Action,
    BackendError,
    CreateSink,
    DestroySink,
    Graph,
    GroupSpec,
    LinkPorts,
    MemberSpec,
    MemberState,
    PwgroupError,
    SetDelay,
    SetGain,
    StartMember,
    StopMember,
    Unlink,
    UserError,
    normalize_address,
)


def reconcile(desired: GroupSpec | None, graph: Graph, name: str) -> list[Action]:
    """What to do so that group `name` in `graph` matches `desired` (None: the group should not exist)."""
    state = layout.observe_group(graph, name)
    actions: list[Action] = []
    wanted = {m.speaker: m for m in desired.members} if desired else {}

    for old in state.members:
        if old.speaker not in wanted:
            actions.append(_stop(name, old))
    if desired is None:
        if state.sink is not None:
            actions.append(DestroySink(name, state.sink.id))
        return actions
    if state.sink is None:
        # Members link to the sink's monitor: build the sink first, the rest on the next pass.
        return [*actions, CreateSink(desired)]

    rate = layout.graph_rate(graph)
    for spec in desired.members:
        member = state.member(spec.speaker)
        if member is None:
            actions.append(StartMember(name, spec))
            continue
        if member.in_node is None or member.out_node is None:
            # Half an element is no element: stop it, the next pass starts a whole one.
            actions.append(_stop(name, member))
            continue
        # The group's monitor feeds the element by the member's channel role; the element feeds its speaker.
        outs = graph.ports_of(state.sink.id, "out", monitor=True)
        wanted_feed = set(layout.feed_pairs(outs, graph.ports_of(member.in_node.id, "in"), spec.channels))
        wanted_out: set[tuple[int, int]] = set()
        if member.speaker_node is not None:
            wanted_out = set(
                layout.channel_pairs(
                    graph.ports_of(member.out_node.id, "out"), graph.ports_of(member.speaker_node.id, "in")
                )
            )
        have = {(lk.out_port, lk.in_port) for lk in graph.links_of(member.in_node.id)}
        have |= {(lk.out_port, lk.in_port) for lk in graph.links_of(member.out_node.id)}
        actions += [LinkPorts(o, i) for o, i in sorted(wanted_feed | wanted_out) if (o, i) not in have]
        # A member's element feeds only its own speaker and is fed only by its group's sink (and, while a
        # calibration runs, by its probe).
        for lk in graph.links_of(member.out_node.id):
            if lk.out_node == member.out_node.id and (lk.out_port, lk.in_port) not in wanted_out:
                actions.append(Unlink(lk.id))
        for lk in graph.links_of(member.in_node.id):
            if lk.in_node != member.in_node.id or (lk.out_port, lk.in_port) in wanted_feed:
                continue
            source = graph.nodes.get(lk.out_node)
            if source is None or source.props.get(layout.PROP_ROLE) != layout.ROLE_PROBE:
                actions.append(Unlink(lk.id))
        # Compared at the backend's resolution, or a delay it cannot make exactly would be set forever.
        step = layout.graph_delay_step(graph)
        want = layout.delay_samples(spec.delay_ms, rate, step)
        have_ms = member.delay_ms
        if have_ms is not None and layout.delay_samples(have_ms, rate, step) != want:
            actions.append(SetDelay(name, spec.speaker, member.in_node.id, want * 1000.0 / rate))
        gain = layout.member_gain(spec.volume, spec.channels)
        if member.gain is not None and abs(member.gain - gain) > 1e-4:
            actions.append(SetGain(name, spec.speaker, member.in_node.id, gain))
    return actions


def _stop(name: str, member: MemberState) -> StopMember:
    ids = tuple(n.id for n in (member.in_node, member.out_node) if n is not None)
    return StopMember(name, member.speaker, member.pid, ids)


async def execute(backend: Backend, action: Action, at_once: bool = False) -> None:
    """Carry out one action; `at_once` makes delay changes skip the glitch-free line fill (calibration)."""
    match action:
        case CreateSink(group):
            await backend.create_sink(group)
        case DestroySink(_, node_id):
            await backend.destroy_node(node_id)
        case StartMember(group, member):
            await backend.start_member(group, member)
        case StopMember(group, speaker, pid, node_ids):
            await backend.stop_member(group, speaker, pid, node_ids)
        case LinkPorts(out_port, in_port):
            await backend.link(out_port, in_port)
        case Unlink(link_id):
            await backend.unlink(link_id)
        case SetDelay(_, _, node_id, delay_ms):
            await backend.set_delay(node_id, delay_ms, at_once=at_once)
        case SetGain(_, _, node_id, gain):
            await backend.set_gain(node_id, gain)


async def apply_actions(backend: Backend, actions: list[Action], at_once: bool = False) -> None:
    """Execute one pass of actions, independent ones side by side: removals, then new elements, then links,
    then delay and gain changes (a delay change mostly waits for its line to fill)."""
    stages: tuple[tuple[type, ...], ...] = (
        (CreateSink,),
        (StopMember, Unlink, DestroySink),
        (StartMember,),
        (LinkPorts,),
        (SetDelay, SetGain),
    )
    for kinds in stages:
        batch = [a for a in actions if isinstance(a, kinds)]
        if batch:
            await asyncio.gather(*(execute(backend, a, at_once) for a in batch))


async def converge(
    backend: Backend, desired: GroupSpec | None, name: str, passes: int = 8, at_once: bool = False
) -> list[Action]:
    """Reconcile and execute until nothing is left to do; returns every action taken."""
    taken: list[Action] = []
    for _ in range(passes):
        actions = reconcile(desired, await backend.refresh(), name)
        if not actions:
            return taken
        await apply_actions(backend, actions, at_once)
        taken += actions
        await backend.settle()
    left = reconcile(desired, await backend.refresh(), name)
    if left:
        raise BackendError(f"group {name!r} did not settle after {passes} passes: {left[0]!r}")
    return taken


async def wait_applied(backend: Backend, desired: GroupSpec | None, name: str, timeout: float = 10.0) -> None:
    """Wait until someone else (the daemon) has made group `name` match `desired`."""
    deadline = time.monotonic() + timeout
    while reconcile(desired, await backend.refresh(), name):
        if time.monotonic() > deadline:
            raise BackendError(
                f"the pwgroup daemon did not apply the change to {name!r} within {timeout:g} s: "
                "see its log (journalctl --user -u pwgroup)"
            )
        await backend.wait_changed(0.2)


def desired_from_graph(graph: Graph, name: str) -> GroupSpec | None:
    """The group as it stands: what CLI edits start from when no config holds it."""
    state = layout.observe_group(graph, name)
    if state.sink is None and not state.members:
        return None
    description = state.sink.description if state.sink else name
    members = tuple(MemberSpec(m.speaker, m.delay_ms or 0.0) for m in state.members)
    return GroupSpec(name=name, description=description, members=members)


# ---------------------------------------------------------------- one reconciler per session


def runtime_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_RUNTIME_DIR") or f"/tmp/pwgroup-{os.getuid()}"
    return Path(base) / "pwgroup"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class DaemonLock:
    """An flock in the runtime dir: only one reconciler drives a session's graph."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.path = runtime_dir(env) / "daemon.lock"
        self._fd: int | None = None

    def acquire(self, attempts: int = 40) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        for _ in range(attempts):  # a CLI may be probing the lock for a moment
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.025)
        else:
            os.close(fd)
            pid = _read_pid(self.path)
            raise UserError(f"a pwgroup daemon already runs in this session (pid {pid}): stop it first")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def daemon_pid(env: Mapping[str, str]) -> int | None:
    """The pid of the session's running daemon, or None."""
    path = runtime_dir(env) / "daemon.lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(path)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold(env: Mapping[str, str], group: str) -> Iterator[None]:
    """While held (a calibration measuring), the daemon leaves the group's graph alone."""
    path = runtime_dir(env) / f"hold.{group}"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(f"{os.getpid()}\n")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def held(env: Mapping[str, str], group: str) -> bool:
    path = runtime_dir(env) / f"hold.{group}"
    pid = _read_pid(path)
    if pid is None:
        return False
    if process_alive(pid):
        return True
    with contextlib.suppress(OSError):
        path.unlink()  # its holder died: the hold goes with it
    return False


# ---------------------------------------------------------------- bringing Bluetooth members back


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

    async def _open(self) -> None:
        from pwgroup.bluez.client import BluezClient
        from pwgroup.bluez.errors import BluetoothError

        try:
            self.client = await BluezClient.open(require_bluez=False, env=self.env)
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
        if self.client is None or not getattr(self.client.bus, "connected", False):
            self.client = None
            self.pending = True
            if self.opening is None or self.opening.done():
                self.opening = asyncio.ensure_future(self._open())
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

    def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        if self.opening is not None:
            self.opening.cancel()
        if self.client is not None:
            self.client.close()


# ---------------------------------------------------------------- the daemon's loop

MAX_PASSES_PER_S = 30  # a flapping speaker costs at most this many reconcile passes a second
RECONNECT_PERIOD_S = 0.2  # how often a lost sound server is looked for again
LINK_GRACE_S = 0.5  # how long a link we made is taken as there before our own watcher shows it
PENDING_RECHECK_S = 1.0  # how often members away without a reconnect under way are looked at again


def server_label(backend_name: str) -> str:
    """The sound server a backend speaks to, as users know it."""
    return {"pipewire": "PipeWire", "pulse": "PulseAudio"}.get(backend_name, backend_name)


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
    ) -> None:
        self.config_path = config_path
        self.announce = announce  # log members coming and going (the dashboard says that in its own words)
        self.env = dict(env)
        self.log = log
        self.open_backend = open_backend
        self.keep = keep
        self.verbose = verbose
        self.config = Config()
        self.backend: Backend | None = None
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
                    self.log("warning", f"lost {server_label(backend.name)}: waiting for it to come back")
                    await backend.close()
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
                if said:
                    self.log("info", f"{server_label(self.backend.name)} is back: rebuilding the groups")
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
        """One log line per member that comes or goes."""
        state = layout.observe_group(graph, name)
        group = self.config.groups.get(name)
        for m in group.members if group else ():
            seen = state.member(m.speaker)
            now = bool(seen and seen.present) or layout.find_speaker(graph, m.speaker) is not None
            before = self._present.get((name, m.speaker))
            if before is not None and before != now:
                if now:
                    self.returned[m.speaker] = time.time()
                    self._write_status()
                if self.announce and now:
                    self.log(
                        "info",
                        f"group {name}: {m.speaker} returned; relinking it with its delay (its latency may have "
                        f"changed: 'pwgroup calibrate {name} --method fast' checks it)",
                    )
                elif self.announce:
                    self.log("info", f"group {name}: {m.speaker} went away; the others play on")
            self._present[(name, m.speaker)] = now

    async def _shutdown(self) -> None:
        self.bluetooth.close()
        with contextlib.suppress(OSError):
            self.status_path.unlink()
        backend = self.backend
        if backend is None:
            return
        if not self.keep and backend.alive:
            for name in sorted(set(self.config.groups) | self._removed):
                try:
                    await converge(backend, None, name)
                    self.log("info", f"group {name} removed")
                except PwgroupError as err:
                    self.log("warning", f"group {name} not fully removed: {err.message}")
        await backend.close()
