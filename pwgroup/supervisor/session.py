"""One reconciler per user session: the daemon lock and the hold a calibration takes, in the runtime dir.

Cheap to import: `status`, `health` and the dashboard read these without loading the loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from pwgroup.graph.proc import process_alive
from pwgroup.model import UserError


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
