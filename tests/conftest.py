"""Fixtures: one private PipeWire room per test session, never the user's sound server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pwgroup.sim.room import Room

HIDDEN_MS = [100.0, 150.0, 200.0, 250.0]


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
    for item in items:
        if "room" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
        elif not any(m.name in ("integration", "slow") for m in item.iter_markers()):
            item.add_marker(pytest.mark.unit)


ROOT = Path(__file__).resolve().parent.parent
