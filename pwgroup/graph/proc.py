"""Running the sound server's command-line tools: argv lists only, never a shell.

Errors become PwgroupError subclasses carrying one line for the user.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence

from pwgroup.model import BackendError, ServerUnreachable

_UNREACHABLE_HINTS = ("Connection refused", "Host is down", "can't connect", "failed to connect", "No such file")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ServerUnreachable(f"{name} not found: install it (Debian: apt-get install pipewire-bin pulseaudio-utils)")
    return path


async def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    check: bool = True,
) -> str:
    """Run a tool and return its stdout; a failure raises with the tool's own first error line."""
    exe = tool(argv[0])
    proc = await asyncio.create_subprocess_exec(
        exe,
        *argv[1:],
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env) if env is not None else None,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BackendError(f"{argv[0]} did not answer within {timeout:g} s: is the sound server stuck?") from None
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
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def linked_version(tool: str, library: str) -> tuple[int, int, int] | None:
    """The version of `library` that `tool --version` says it is linked against (PipeWire's tools print both
    their own and their library's), or None when the tool is missing or says nothing usable."""
    exe = shutil.which(tool)
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.findall(rf"lib{library} (\d+)\.(\d+)\.(\d+)", out)
    if not found:
        return None
    major, minor, patch = found[-1]
    return int(major), int(minor), int(patch)
