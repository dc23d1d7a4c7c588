"""Running the sound server's command-line tools: argv lists only, never a shell, never outliving pwgroup.

Errors become PwgroupError subclasses carrying one line for the user.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import glob
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pwgroup.model import BackendError, ServerUnreachable

_UNREACHABLE_HINTS = ("Connection refused", "Host is down", "can't connect", "failed to connect", "No such file")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ServerUnreachable(f"{name} not found: install it (Debian: apt-get install pipewire-bin pulseaudio-utils)")
    return path


# ------------------------------------------------------------ tools that die with pwgroup
#
# A tool pwgroup runs for a moment (pw-cli, pw-link, pw-dump, pw-record, pw-cat, pactl...) must not outlive it:
# pw-cli 0.3.65 whose server vanished mid-call waits in epoll forever, and a daemon SIGKILLed while it waited
# (a logout, systemd's stop timeout) left it orphaned. Each such child asks the kernel for SIGKILL when its
# parent goes (PR_SET_PDEATHSIG). The kernel's "parent" is the *thread* that forked, not the process, so the
# fork happens only on a thread that lives as long as what owns the child:
# - asyncio children fork on the thread running their event loop, which awaits them: if that thread ends,
#   nothing is left to read them, and they should go too;
# - plain Popen children fork on the main thread (it ends only with the process) or else on one long-lived
#   spawner thread, never on an asyncio.to_thread worker, which may end while its recorder plays on.
# The long-lived delay elements (pipewire.start_member) and the room's servers are not started this way: they
# are meant to outlive the CLI or the daemon that started them.
#
# prctl is set in preexec_fn. That runs Python in the forked child, which the subprocess docs warn may deadlock
# in a threaded program if it takes a lock another thread held at fork time; this one calls only two
# syscalls through a ctypes function resolved before the fork (no import, no allocation of note, no logging),
# so no such lock is taken. It costs vfork: measured here, 5-7 ms more per tool on a loaded 2-core machine.
# `setpriv --pdeathsig KILL --` as an exec wrapper cost 1-2 ms, but cannot check that the parent still lives
# once armed, and a parent killed in that window would leave exactly the orphan this is about.

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int


def die_with_parent() -> Callable[[], None]:
    """A preexec_fn: the child gets SIGKILL when the thread that forks it ends (with its process, see above)."""
    parent = os.getpid()

    def arm() -> None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the wish was armed: nobody will send it
            os._exit(1)

    return arm


class _Spawner:
    """One daemon thread that lives as long as the process and forks on behalf of other threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def call(self, fn: Callable[[], Any]) -> Any:
        with self._lock:
            # is_alive is False in a forked child too, where the parent's thread does not exist.
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="pwgroup-spawner", daemon=True)
                self._thread.start()
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put((fn, done))
        return done.result()

    def _serve(self) -> None:
        while True:
            fn, done = self._jobs.get()
            try:
                done.set_result(fn())
            except BaseException as err:
                done.set_exception(err)


_spawner = _Spawner()


def spawn(argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
    """subprocess.Popen for a short-lived tool: it dies with this process, whichever thread asks."""
    popen["preexec_fn"] = die_with_parent()

    def start() -> subprocess.Popen[Any]:
        return subprocess.Popen(list(argv), **popen)

    if threading.current_thread() is threading.main_thread():
        return start()
    return _spawner.call(start)  # type: ignore[no-any-return]


def run_sync(
    argv: Sequence[str], *, timeout: float, input: bytes | None = None, check: bool = False, **popen: Any
) -> subprocess.CompletedProcess[Any]:
    """subprocess.run for a short-lived tool (see spawn); killed at its deadline like subprocess.run does."""
    if input is not None:
        popen["stdin"] = subprocess.PIPE
    if popen.pop("capture_output", False):
        popen["stdout"] = popen["stderr"] = subprocess.PIPE
    with spawn(argv, **popen) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    done = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
    if check:
        done.check_returncode()
    return done


async def start(argv: Sequence[str], **kwargs: Any) -> asyncio.subprocess.Process:
    """asyncio.create_subprocess_exec for a tool found on PATH; it dies with the thread running this loop."""
    return await asyncio.create_subprocess_exec(tool(argv[0]), *argv[1:], preexec_fn=die_with_parent(), **kwargs)


async def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    check: bool = True,
    abandon: asyncio.Event | None = None,
) -> str:
    """Run a tool and return its stdout; a failure raises with the tool's own first error line.

    `abandon`: an event set when the server is known gone (its watcher ended); the tool is killed then, since a
    tool whose server vanished mid-call may never return, and ServerUnreachable raised."""
    proc = await start(
        argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env) if env is not None else None,
    )
    talk = asyncio.ensure_future(proc.communicate())
    gone = asyncio.ensure_future(abandon.wait()) if abandon is not None else None
    try:
        await asyncio.wait({talk, *([gone] if gone else [])}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not talk.done():
            if gone is not None and gone.done():
                raise ServerUnreachable(f"the sound server went away while {argv[0]} ran")
            raise BackendError(f"{argv[0]} did not answer within {timeout:g} s: is the sound server stuck?")
        out, err = talk.result()
    finally:
        # Every way out (deadline, server gone, the caller cancelled) leaves no tool behind.
        for task in (talk, gone):
            if task is not None and not task.done():
                task.cancel()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(asyncio.CancelledError, ProcessLookupError):
                await asyncio.shield(proc.wait())
    if check and proc.returncode != 0:
        text = (err or out).decode(errors="replace").strip()
        first = text.splitlines()[0] if text else f"exit code {proc.returncode}"
        if any(h in text for h in _UNREACHABLE_HINTS) and argv[0] in ("pw-dump", "pw-cli", "pactl"):
            raise ServerUnreachable(
                "cannot reach PipeWire: start it (systemctl --user start pipewire wireplumber) "
                "or point PIPEWIRE_RUNTIME_DIR at a running one"
            )
        raise BackendError(f"{argv[0]} failed: {first}")
    return out.decode(errors="replace")


def process_alive(pid: int) -> bool:
    """Whether `pid` runs. A zombie does not: an element started by an earlier pwgroup is reparented when that
    one exits, and its exit status waits for whoever reaps orphans; where that is slow (a container's init),
    counting the zombie as alive made every member stop wait out _reap's 2 s."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not zombie(pid)


def zombie(pid: int) -> bool:
    """Whether `pid` has exited and waits to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def pipewire_config_of(pid: int) -> str | None:
    """The config path of a `pipewire -c PATH` process (a filter-chain host), or None for anything else."""
    argv = cmdline(pid)
    if len(argv) >= 3 and os.path.basename(argv[0]) == "pipewire" and argv[1] == "-c":
        return os.path.abspath(argv[2])
    return None


def pipewire_hosts(config: str) -> list[int]:
    """Every `pipewire -c` process running from exactly this config file."""
    wanted = os.path.abspath(config)
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and pipewire_config_of(int(entry)) == wanted:
            found.append(int(entry))
    return found


LIBRARY_DIRS = ("/usr/lib", "/usr/lib64", "/usr/local/lib", "/lib")


def wireplumber_library_version(dirs: Sequence[str] = LIBRARY_DIRS) -> tuple[int, int, int] | None:
    """The version of the libwireplumber installed in the system's library dirs, read from its file name without
    running anything: libwireplumber-0.4.so.0.4.13 -> (0, 4, 13); 0.5 writes minor*100+micro as one number,
    libwireplumber-0.5.so.0.508.0 -> (0, 5, 8). None when there is none, or several that differ."""
    found = set()
    for base in dirs:
        for pattern in (f"{base}/libwireplumber-*.so.*", f"{base}/*/libwireplumber-*.so.*"):
            for path in glob.glob(pattern):
                version = wireplumber_file_version(os.path.basename(path))
                if version is not None:
                    found.add(version)
    return found.pop() if len(found) == 1 else None


def wireplumber_file_version(filename: str) -> tuple[int, int, int] | None:
    m = re.fullmatch(r"libwireplumber-(\d+)\.(\d+)\.so\.(\d+)\.(\d+)\.(\d+)", filename)
    if m is None:
        return None
    major, minor, _, middle, last = map(int, m.groups())
    if middle >= 100 and middle // 100 == minor:  # 0.5's form
        return major, minor, middle % 100
    if middle == minor:  # 0.4's form
        return major, minor, last
    return None


def pipewire_library_version(dirs: Sequence[str] = LIBRARY_DIRS) -> tuple[int, int, int] | None:
    """The version of the libpipewire-0.3 installed in the system's library dirs (what pw-cat and pw-record link
    with), from its file name: major*1000 + minor*100 + micro, libpipewire-0.3.so.0.365.0 -> (0, 3, 65),
    libpipewire-0.3.so.0.1402.0 -> (1, 4, 2). None when there is none, or several that differ."""
    found = set()
    for base in dirs:
        for pattern in (f"{base}/libpipewire-0.3.so.0.*", f"{base}/*/libpipewire-0.3.so.0.*"):
            for path in glob.glob(pattern):
                m = re.fullmatch(r"libpipewire-0\.3\.so\.0\.(\d+)\.0", os.path.basename(path))
                if m is not None and int(m.group(1)) >= 300:
                    n = int(m.group(1))
                    found.add((n // 1000, n % 1000 // 100, n % 100))
    return found.pop() if len(found) == 1 else None


def linked_version(tool: str, library: str) -> tuple[int, int, int] | None:
    """The version of `library` that `tool --version` says it is linked against (PipeWire's tools print both
    their own and their library's), or None when the tool is missing or says nothing usable."""
    exe = shutil.which(tool)
    if exe is None:
        return None
    try:
        out = run_sync([exe, "--version"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.findall(rf"lib{library} (\d+)\.(\d+)\.(\d+)", out)
    if not found:
        return None
    major, minor, patch = found[-1]
    return int(major), int(minor), int(patch)
