"""Which sound server is there, and so which backend: PipeWire (also behind pipewire-pulse) or PulseAudio.

The choice and the reason for it are reported by `pwgroup status`; PWGROUP_BACKEND overrides it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pwgroup.graph import Backend
from pwgroup.model import ServerUnreachable, UserError

BACKEND_ENV = "PWGROUP_BACKEND"
CHOICES = ("pipewire", "pulse")


@dataclass(frozen=True)
class Choice:
    name: str  # pipewire | pulse
    reason: str


def pipewire_socket(env: Mapping[str, str]) -> Path | None:
    remote = env.get("PIPEWIRE_REMOTE", "pipewire-0")
    if remote.startswith("/"):
        return Path(remote)
    base = env.get("PIPEWIRE_RUNTIME_DIR") or env.get("XDG_RUNTIME_DIR")
    return Path(base) / remote if base else None


def _answers(path: Path) -> bool:
    """A socket that accepts a connection: a stale file left by a dead server does not count."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


PULSE_PROCESSES = {"pulseaudio": "pulse", "pipewire-pulse": "pipewire", "pipewire": "pipewire"}


def pulse_socket(env: Mapping[str, str]) -> Path | None:
    """The Pulse protocol's local socket: PULSE_SERVER's `unix:` path, else the runtime dir's pulse/native."""
    server = env.get("PULSE_SERVER")
    if server:
        path = server.removeprefix("unix:")
        return Path(path) if path.startswith("/") else None  # tcp:, a host name, a list: ask the protocol
    base = env.get("XDG_RUNTIME_DIR")
    return Path(base) / "pulse" / "native" if base else None


def pulse_socket_owner(path: Path) -> tuple[str, str] | None:
    """Who serves the Pulse socket, by the process on the other end (SO_PEERCRED): (backend, process name), or
    None when that cannot be told (nothing answers, a server in another PID namespace, an unknown process).
    No library, no protocol round trip: `status` starts ~60 ms sooner than through libpulse."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
            pid, _, _ = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        except OSError:
            return None
    if pid <= 0:
        return None
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    backend = PULSE_PROCESSES.get(comm)
    return (backend, comm) if backend else None


async def pulse_server_name(env: Mapping[str, str], timeout: float = 2.0) -> str | None:
    """The Pulse protocol server's name (`pulseaudio`, or `PulseAudio (on PipeWire 0.3.65)`), None if none answers."""
    from pulsectl import PulseError
    from pulsectl_asyncio import PulseAsync

    pulse = PulseAsync("pwgroup-probe", server=env.get("PULSE_SERVER"))
    try:
        await asyncio.wait_for(pulse.connect(autospawn=False), timeout)
        info = await asyncio.wait_for(pulse.server_info(), timeout)
        return f"{info.server_name} {info.server_version}".strip()
    except (PulseError, TimeoutError):
        return None
    finally:
        pulse.close()


async def choose(env: Mapping[str, str] | None = None) -> Choice:
    """Ask who serves the Pulse protocol first: it tells PulseAudio from pipewire-pulse (by the socket's peer
    process, else by the protocol's server name). A PipeWire socket without a Pulse server is PipeWire too.
    Nothing answering is exit code 3."""
    env = os.environ if env is None else env
    forced = env.get(BACKEND_ENV)
    if forced:
        if forced not in CHOICES:
            raise UserError(f"{BACKEND_ENV}={forced!r} is not a backend: use pipewire or pulse")
        return Choice(forced, f"{BACKEND_ENV}={forced}")
    sock = pulse_socket(env)
    owner = pulse_socket_owner(sock) if sock is not None else None
    if owner is not None:
        backend, process = owner
        kind = "PipeWire" if backend == "pipewire" else "PulseAudio, not PipeWire"
        return Choice(backend, f"the Pulse socket {sock} is served by {process} ({kind})")
    name = await pulse_server_name(env)
    if name is not None:
        if "pipewire" in name.lower():
            return Choice("pipewire", f"the Pulse server says {name!r}")
        return Choice("pulse", f"the Pulse server says {name!r} (PulseAudio, not PipeWire)")
    sock = pipewire_socket(env)
    if sock is not None and _answers(sock):
        return Choice("pipewire", f"no Pulse server answers; PipeWire's socket {sock} does")
    raise ServerUnreachable(
        "cannot reach PipeWire or PulseAudio: start one (systemctl --user start pipewire wireplumber "
        "pipewire-pulse, or pulseaudio --start), or point PIPEWIRE_RUNTIME_DIR or PULSE_SERVER at it"
    )


async def open_backend(env: Mapping[str, str] | None = None) -> tuple[Backend, Choice]:
    """The chosen backend, opened, and why it was chosen."""
    choice = await choose(env)
    backend: Backend
    if choice.name == "pulse":
        from pwgroup.graph.pulse import PulseBackend

        backend = await PulseBackend(env).open()
    else:
        from pwgroup.graph.pipewire import PipeWireBackend

        backend = await PipeWireBackend(env).open()
    return backend, choice
