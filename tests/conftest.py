"""Fixtures: one private PipeWire room per test session, never the user's sound server."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pwgroup.graph.proc import cmdline
from pwgroup.sim.pulseroom import PulseRoom
from pwgroup.sim.room import Room
from pwgroup.sim.server import processes_under

HIDDEN_MS = [100.0, 150.0, 200.0, 250.0]


STRAYS_BASE = pytest.StashKey[Path]()


def stack_label() -> str:
    """The stack these results come from, as the run's header and its last line say it."""
    import platform
    import re

    from pwgroup.graph.proc import linked_version

    os_name = "unknown system"
    with contextlib.suppress(OSError):
        fields = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
        os_name = fields.get("PRETTY_NAME", os_name).strip('"')
    parts = []
    for label, tool, lib in (("PipeWire", "pipewire", "pipewire"), ("WirePlumber", "wireplumber", "wireplumber")):
        found = linked_version(tool, lib)
        parts.append(f"{label} {'.'.join(map(str, found)) if found else 'missing'}")
    pulse = "missing"
    if shutil.which("pulseaudio"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            said = subprocess.run(["pulseaudio", "--version"], capture_output=True, text=True, timeout=10).stdout
            pulse = m.group(0) if (m := re.search(r"\d+(\.\d+)+", said)) else "?"
    parts.append(f"PulseAudio {pulse}")
    return f"{os_name}: {', '.join(parts)}, Python {platform.python_version()}"


STACK = pytest.StashKey[str]()


def pytest_report_header(config: pytest.Config) -> str:
    config.stash[STACK] = stack_label()
    return f"stack: {config.stash[STACK]}"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    """The last lines say which stack the counts above are from (`make test` runs the suite on two)."""
    counts = {k: len(terminalreporter.stats.get(k, [])) for k in ("passed", "failed", "error", "skipped")}
    said = ", ".join(f"{v} {k}" for k, v in counts.items())
    terminalreporter.write_line(f"stack: {config.stash.get(STACK, None) or stack_label()}: {said}", bold=True)


@pytest.fixture(scope="session", autouse=True)
def _sweep_base(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every room of the session lives under its base temp folder: the session-end sweep looks there."""
    request.config.stash[STRAYS_BASE] = tmp_path_factory.getbasetemp()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Whatever ended the tests (pytest-timeout included), no sound server, tool or daemon pointed at one of
    the session's rooms outlives it; having to end one fails the run, since a finalizer missed it."""
    base = session.config.stash.get(STRAYS_BASE, None)
    if base is None or os.environ.get("PWGROUP_KEEP_ROOM"):
        return
    strays = {pid: " ".join(cmdline(pid))[:160] for pid in processes_under(base)}
    for pid in strays:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if strays:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = [f"the session-end sweep had to end {len(strays)} process(es) left running:"]
        lines += [f"  {pid} {text}" for pid, text in strays.items()]
        for line in lines:
            if reporter is not None:
                reporter.write_line(line, red=True)
            else:
                print(line, file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _have_pipewire() -> bool:
    return all(shutil.which(t) for t in ("pipewire", "wireplumber", "pipewire-pulse", "pw-dump", "dbus-daemon"))


@pytest.fixture(scope="session")
def room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    if not _have_pipewire():
        pytest.fail("PipeWire is not installed: run 'make setup' (see README)")
    root = tmp_path_factory.mktemp("room")
    r = Room(root)
    r.up(speakers=len(HIDDEN_MS), latencies_ms=HIDDEN_MS)
    yield r
    # WirePlumber must have lived through the whole session (0.4.13 segfaults on idle nodes that go away).
    wireplumber_alive = r.server.running("wireplumber")
    if not os.environ.get("PWGROUP_KEEP_ROOM"):  # keep it up to inspect a failure
        r.down()
    assert wireplumber_alive, f"WirePlumber died during the tests: see {root}/log/wireplumber.log and dmesg"


@pytest.fixture(scope="session")
def pulse_room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseRoom]:
    """The same speakers on a private PulseAudio daemon, for the tests that run on both backends."""
    if not shutil.which("pulseaudio"):
        pytest.fail("PulseAudio is not installed: run 'make setup' (see README)")
    r = PulseRoom(tmp_path_factory.mktemp("pulse"))
    r.up(speakers=len(HIDDEN_MS), latencies_ms=HIDDEN_MS)
    yield r
    alive = r.running
    if not os.environ.get("PWGROUP_KEEP_ROOM"):
        r.down()
    assert alive, f"PulseAudio died during the tests: see {r.root}/log/pulseaudio.log"


@pytest.fixture(params=["pipewire", "pulse"])
def sound_room(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """The room on each backend in turn: PipeWire, then PulseAudio."""
    return request.getfixturevalue("room" if request.param == "pipewire" else "pulse_room")


def _cli_for(r: Room | PulseRoom):  # type: ignore[no-untyped-def]
    def run(*args: str, check: bool = False) -> tuple[int, str, str]:
        proc = subprocess.run(
            [sys.executable, "-m", "pwgroup", *args], env=r.env, capture_output=True, text=True, timeout=60
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"pwgroup {' '.join(args)} failed: {proc.stderr}")
        return proc.returncode, proc.stdout, proc.stderr

    return run


@pytest.fixture
def sound_cli(sound_room):  # type: ignore[no-untyped-def]
    return _cli_for(sound_room)


@pytest.fixture
def sound_group(sound_cli, sound_room):  # type: ignore[no-untyped-def]
    """A fresh group over the first three speakers of the room on either backend, deleted afterwards."""
    name = f"g{os.getpid() % 1000}"
    sound_cli("group", "create", name, *[s.address for s in sound_room.speakers[:3]], check=True)
    yield name
    sound_cli("group", "delete", name)


@pytest.fixture
def cli(room: Room):  # type: ignore[no-untyped-def]
    """Run the real `pwgroup` command against the room; returns (code, stdout, stderr)."""

    def run(*args: str, check: bool = False) -> tuple[int, str, str]:
        proc = subprocess.run(
            [sys.executable, "-m", "pwgroup", *args],
            env=room.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"pwgroup {' '.join(args)} failed: {proc.stderr}")
        return proc.returncode, proc.stdout, proc.stderr

    return run


@pytest.fixture
def group(cli, room: Room):  # type: ignore[no-untyped-def]
    """A fresh group over the first three speakers, deleted afterwards."""
    name = f"g{os.getpid() % 1000}"
    addrs = [s.address for s in room.speakers[:3]]
    cli("group", "create", name, *addrs, check=True)
    yield name
    cli("group", "delete", name)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that asks for a room is integration; one marked for what it runs (integration, slow, process)
    keeps that; the rest are unit, and no_processes below holds them to it."""
    for item in items:
        if any(f == "room" or f.endswith("_room") for f in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
        elif not any(m.name in ("integration", "slow", "process") for m in item.iter_markers()):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(autouse=True)
def no_processes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test starts no process: every way one is started here (subprocess, asyncio's subprocesses, which
    go through it, os.system, fork, posix_spawn) fails the test. Mark such a test `process` (or integration)."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a unit test started a process: mark it `process` (or integration) for what it is")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
    for name in ("system", "fork", "forkpty", "posix_spawn", "posix_spawnp"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse)


ROOT = Path(__file__).resolve().parent.parent
