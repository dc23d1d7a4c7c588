"""A private PipeWire session (dbus-daemons, pipewire, wireplumber, pipewire-pulse) in its own runtime dir.

It never touches the user's session: every socket, config and state file lives under one folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

from pwgroup.graph.capture import dump_graph
from pwgroup.graph.pipewire import SUSPEND_FIXED
from pwgroup.graph.proc import (
    cmdline,
    linked_version,
    pipewire_config_of,
    process_alive,
    tool,
    wireplumber_library_version,
    zombie,
)
from pwgroup.model import Graph, PwgroupError

PIDS_FILE = "pids.json"
RUNTIME_KEYS = ("XDG_RUNTIME_DIR", "PIPEWIRE_RUNTIME_DIR", "PULSE_RUNTIME_PATH")
# What a room runs, and what pwgroup runs against one for a moment: `sim down` ends these when it finds them
# pointed at its room (a user's shell with `eval "$(pwgroup sim env)"` is pointed there too, and is spared).
ROOM_PROGRAMS = frozenset(
    {
        "pipewire",
        "wireplumber",
        "pipewire-pulse",
        "pulseaudio",
        "dbus-daemon",
        "pw-cli",
        "pw-link",
        "pw-dump",
        "pw-record",
        "pw-play",
        "pw-cat",
        "pw-loopback",
        "pw-metadata",
        "pactl",
        "parec",
        "pacat",
        "paplay",
    }
)
SYSTEM_BUS = "system_bus"
SUSPEND_FIX = Path(__file__).resolve().parent.parent / "data" / "suspend-node.lua"


def default_root() -> Path:
    base = os.environ.get("PWGROUP_SIM_DIR")
    if base:
        return Path(base)
    return Path(f"/tmp/pwgroup-room-{os.getuid()}")


def server_env(root: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment that points PipeWire, Pulse and D-Bus clients at the private session in `root`."""
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "XDG_RUNTIME_DIR": str(root),
            "PIPEWIRE_RUNTIME_DIR": str(root),
            "PULSE_RUNTIME_PATH": str(root / "pulse"),
            "PULSE_SERVER": f"unix:{root / 'pulse' / 'native'}",
            "DBUS_SESSION_BUS_ADDRESS": f"unix:path={root / 'bus'}",
            # The room's own system bus, where its fake org.bluez lives; the machine's is never touched.
            "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={root / SYSTEM_BUS}",
            "XDG_CONFIG_HOME": str(root / "config"),
            "XDG_STATE_HOME": str(root / "state"),
            "XDG_DATA_HOME": str(root / "data"),
        }
    )
    env.pop("PIPEWIRE_REMOTE", None)
    return env


def system_bus_config(root: Path) -> str:
    """A dbus-daemon config for a private system bus: system type, one socket under `root`, anyone may
    own names and call anything (it is only reachable through a 0700 folder)."""
    socket = xml_escape(str(root / SYSTEM_BUS))
    return f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""


def _wait(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise PwgroupError(f"the private sound server did not start: {what} (see logs under the room's log/ folder)")


class PrivateServer:
    """Starts and stops the processes of one private session; their pids are kept in `root/pids.json`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = server_env(root)

    # ------------------------------------------------------------ process bookkeeping
    def _pids(self) -> dict[str, int]:
        try:
            data = json.loads((self.root / PIDS_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): int(v) for k, v in data.items()}

    def _save_pid(self, key: str, pid: int) -> None:
        pids = self._pids()
        pids[key] = pid
        tmp = self.root / (PIDS_FILE + ".tmp")
        tmp.write_text(json.dumps(pids))
        tmp.replace(self.root / PIDS_FILE)

    def _forget_pid(self, key: str) -> None:
        pids = self._pids()
        if pids.pop(key, None) is not None:
            (self.root / PIDS_FILE).write_text(json.dumps(pids))

    def spawn(self, key: str, argv: Sequence[str]) -> int:
        """Start a long-lived helper in its own session (it outlives the CLI) and remember it."""
        log = open(self.root / "log" / f"{key}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [tool(argv[0]), *argv[1:]],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=self.env,
            start_new_session=True,
            cwd=self.root,
        )
        log.close()
        self._save_pid(key, proc.pid)
        return proc.pid

    def kill(self, key: str, timeout: float = 3.0) -> None:
        pid = self._pids().get(key)
        if pid is not None:
            _terminate(pid, timeout)
        self._forget_pid(key)

    def crash(self, key: str) -> None:
        """SIGKILL one process, as a crash would end it; reaped and forgotten."""
        pid = self._pids().get(key)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _terminate(pid, 1.0)
        self._forget_pid(key)

    def running(self, key: str) -> bool:
        # Alive and not a zombie. Not "has a command line": right after a spawn it can read empty for a moment
        # (seen with Python 3.13's vfork spawning on Debian 13), and a just-started helper was taken for dead.
        pid = self._pids().get(key)
        return pid is not None and process_alive(pid)

    # ------------------------------------------------------------ lifecycle
    @property
    def up(self) -> bool:
        # A room without its system bus was made by an older pwgroup: it is rebuilt rather than half used.
        return self.running("pipewire") and (self.root / "pipewire-0").exists() and (self.root / SYSTEM_BUS).exists()

    def start(self) -> None:
        if self.up:
            return
        self.stop()
        for sub in ("log", "config", "state", "data", "pulse"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self._install_wireplumber_fix()
        self.spawn(
            "dbus",
            ["dbus-daemon", "--session", "--nofork", "--nopidfile", f"--address=unix:path={self.root / 'bus'}"],
        )
        _wait(lambda: (self.root / "bus").exists(), 10, "dbus-daemon made no socket")
        (self.root / "config" / "system-bus.conf").write_text(system_bus_config(self.root))
        self.spawn(
            "system-dbus",
            ["dbus-daemon", f"--config-file={self.root / 'config' / 'system-bus.conf'}", "--nofork", "--nopidfile"],
        )
        _wait(lambda: (self.root / SYSTEM_BUS).exists(), 10, "the system dbus-daemon made no socket")
        self.spawn("pipewire", ["pipewire"])
        _wait(lambda: (self.root / "pipewire-0").exists(), 10, "pipewire made no socket")
        self.spawn("wireplumber", ["wireplumber"])
        self.spawn("pipewire-pulse", ["pipewire-pulse"])
        _wait(lambda: (self.root / "pulse" / "native").exists(), 10, "pipewire-pulse made no socket")
        _wait(self._session_manager_ready, 15, "wireplumber did not connect")

    def _install_wireplumber_fix(self) -> None:
        """The room's WirePlumber gets pwgroup's fixed suspend-node.lua where it is one that crashes on removed
        nodes (0.4.13; fixed in 0.4.15; 0.5 keeps its scripts elsewhere and would never load this one)."""
        version = wireplumber_library_version() or linked_version("wireplumber", "wireplumber")
        if version is not None and not (0, 4, 0) <= version < SUSPEND_FIXED:
            return
        scripts = self.root / "config" / "wireplumber" / "scripts"
        scripts.mkdir(parents=True, exist_ok=True)
        (scripts / "suspend-node.lua").write_bytes(SUSPEND_FIX.read_bytes())

    @staticmethod
    def session_manager_in(graph: Graph) -> bool:
        return any(c.get("application.name") == "WirePlumber" for c in graph.clients.values())

    def _session_manager_ready(self) -> bool:
        try:
            graph = dump_graph(self.env)
        except ValueError:
            return False
        return self.session_manager_in(graph)

    def restart(self, key: str) -> None:
        """Kill one of the server's processes and start it again (fault tests)."""
        self.kill(key)
        argv = {"pipewire": ["pipewire"], "wireplumber": ["wireplumber"], "pipewire-pulse": ["pipewire-pulse"]}[key]
        self.spawn(key, argv)

    def stop(self) -> None:
        """Stop every process this session started, newest first, then forget them; also any client process
        running from a config under the room (pwgroup's member elements), which would outlive the server."""
        for pid in _processes_configured_under(self.root):
            _terminate(pid, 3.0)
        for key in reversed(list(self._pids())):
            self.kill(key)
        # Strays: a tool or server pointed at this room that no pid file names (its starter was killed).
        for pid in processes_under(self.root, ROOM_PROGRAMS):
            _terminate(pid, 1.0)
        for leftover in (
            "bus",
            SYSTEM_BUS,
            "pipewire-0",
            "pipewire-0.lock",
            "pipewire-0-manager",
            "pipewire-0-manager.lock",
        ):
            with contextlib.suppress(OSError):
                (self.root / leftover).unlink()
        shutil.rmtree(self.root / "pulse", ignore_errors=True)


def _processes_configured_under(root: Path) -> list[int]:
    found = []
    prefix = str(root.resolve()) + os.sep
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        conf = pipewire_config_of(int(entry.name))
        if conf is not None and conf.startswith(prefix):
            found.append(int(entry.name))
    return found


def environ_of(pid: int) -> dict[str, str]:
    """A process's environment as it was started (empty when it is gone or not ours)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return parse_environ(raw)


def parse_environ(raw: bytes) -> dict[str, str]:
    env = {}
    for entry in raw.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def runs_under(env: Mapping[str, str], root: Path) -> bool:
    """Whether an environment points a sound client or server at a runtime dir inside `root`."""
    base = str(root)
    return any((v := env.get(k)) and (v == base or v.startswith(base + os.sep)) for k in RUNTIME_KEYS)


def _ancestors() -> Iterator[int]:
    pid = os.getpid()
    while pid > 1:
        yield pid
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return


def processes_under(root: Path, names: Collection[str] | None = None) -> list[int]:
    """Live processes pointed at a runtime dir under `root` (by their environment) or running from a config
    under it; with `names`, only programs of those names. Never this process or one of its ancestors."""
    root = root.resolve()
    spared = set(_ancestors())
    configured = set(_processes_configured_under(root))
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in spared:
            continue
        pid = int(entry.name)
        argv = cmdline(pid)
        if not argv or zombie(pid):
            continue
        if names is not None and os.path.basename(argv[0]) not in names:
            continue
        if pid in configured or runs_under(environ_of(pid), root):
            found.append(pid)
    return found


def _terminate(pid: int, timeout: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return
        except ChildProcessError:
            # Not our child (another process of the room started it): it is gone once it is a zombie.
            if not process_alive(pid):
                return
        time.sleep(0.01)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
