"""`pwgroup daemon`: the supervisor run headless, for systemd or a terminal, and its systemd user unit.

Thin: signals (SIGHUP reloads, SIGTERM stops), readiness through NOTIFY_SOCKET, one log line per event.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

from pwgroup.config import config_path
from pwgroup.graph import Backend
from pwgroup.graph.select import open_backend
from pwgroup.model import EXIT_OK
from pwgroup.supervisor.loop import Supervisor
from pwgroup.supervisor.session import DaemonLock

# sd-daemon(3) level prefixes: journald reads them from the start of each line on stderr.
LEVELS = {"error": 3, "warning": 4, "info": 6, "debug": 7}


def log(level: str, message: str) -> None:
    line = " ".join(message.splitlines())
    if os.environ.get("JOURNAL_STREAM"):
        print(f"<{LEVELS.get(level, 6)}>{line}", file=sys.stderr, flush=True)
    else:
        print(f"pwgroup daemon: {level}: {line}", file=sys.stderr, flush=True)


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) how we are; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError as err:
            log("warning", f"could not notify systemd: {err}")


async def run(config: Path | None, keep: bool, verbose: bool = False, env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    lock = DaemonLock(env)
    lock.acquire()
    supervisor = Supervisor(
        config or config_path(env),
        env,
        log,
        open_backend=lambda: _open(env),
        keep=keep,
        verbose=verbose,
    )
    loop = asyncio.get_running_loop()
    # SIGHUP is systemd's reload; SIGUSR1 is what CLI and dashboard edits send (a dashboard keeping the groups
    # takes SIGUSR1 alone: its SIGHUP is the terminal going away).
    for sig in (signal.SIGHUP, signal.SIGUSR1):
        loop.add_signal_handler(sig, supervisor.request_reload)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, supervisor.request_stop)
    try:
        await supervisor.run(sd_notify)
    finally:
        lock.release()
    log("info", "stopped" + (", groups left standing" if keep else ""))
    return EXIT_OK


async def _open(env: Mapping[str, str]) -> Backend:
    # Asked again at every (re)connection: the server may come back as another one.
    backend, choice = await open_backend(env)
    log("info", f"sound server: {backend.capabilities.summary} ({choice.reason})")
    for bug in backend.capabilities.workarounds:
        log("info", f"working around: {bug}")
    return backend


def unit_text(python: str) -> str:
    """The systemd user unit that runs the daemon with this Python."""
    return f"""\
# Installed by `pwgroup service install`. Enable with: systemctl --user enable --now pwgroup
[Unit]
Description=pwgroup: Bluetooth speakers played as one group, in sync
Documentation=man:pwgroup(1)
After=pipewire.service wireplumber.service
Wants=pipewire.service

[Service]
Type=notify
ExecStart={python} -m pwgroup daemon
ExecReload=/bin/kill -HUP $MAINPID
# Only the daemon gets SIGTERM: it stops the delay elements it made itself (or leaves them with --keep), and
# after a crash the elements play on and the restarted daemon adopts them.
KillMode=process
Restart=on-failure
RestartSec=2

[Install]
WantedBy=default.target
"""


def unit_path(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "systemd" / "user" / "pwgroup.service"
