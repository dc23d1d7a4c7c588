"""The command in a fresh interpreter, no sound server: what it loads, what a new user's `doctor` says, and
concurrent config edits from separate processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pwgroup.config import ConfigFile, GroupConfig, MemberConfig

pytestmark = pytest.mark.process


def test_cli_loads_bluetooth_only_when_a_command_needs_it() -> None:
    code = "import sys, pwgroup.cli; sys.exit('dbus_fast' in sys.modules or 'pwgroup.bluez.client' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0


def test_the_data_layer_and_the_core_never_import_textual() -> None:
    code = (
        "import sys, pwgroup.tui.state, pwgroup.tui.live, pwgroup.status, pwgroup.edits, pwgroup.health, pwgroup.cli, "
        "pwgroup.supervisor.loop, pwgroup.supervisor.shared; "
        "sys.exit('textual' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0


def test_a_new_user_with_no_pipewire_is_told_what_to_do(tmp_path: Path) -> None:
    empty = tmp_path / "run"
    empty.mkdir()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "XDG_RUNTIME_DIR": str(empty),
        "PIPEWIRE_RUNTIME_DIR": str(empty),
        "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
        "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path / 'no-bus'}",
    }
    proc = subprocess.run([sys.executable, "-m", "pwgroup", "doctor"], env=env, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr == ""  # no traceback, no log noise
    out = proc.stdout
    assert f"PROBLEM  pipewire running  no PipeWire answers in {empty}: no pipewire-0 socket there" in out
    assert "fix: systemctl --user enable --now pipewire pipewire-pulse wireplumber" in out
    assert "fix: sudo apt-get install dbus bluez" in out
    assert "skipped  quantum" in out
    proc = subprocess.run(
        [sys.executable, "-m", "pwgroup", "doctor", "--json"], env=env, capture_output=True, text=True
    )
    data = json.loads(proc.stdout)
    assert proc.returncode == 1 and data["healthy"] is False
    assert all(c["fix"] for c in data["checks"] if c["status"] == "problem")


def test_edits_made_at_the_same_moment_all_land(tmp_path: Path) -> None:
    """Eight writers at once, each adding its own member (read, modify, write): under the lock none is lost.
    Processes, not threads: each has its own open file, as two pwgroup commands do."""
    import multiprocessing

    path = tmp_path / "config.toml"
    cfg = ConfigFile.open(path)
    cfg.set_group(GroupConfig("home", "Home", (MemberConfig("AA:BB:CC:00:00:00"),)))
    cfg.save()
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    writers = [ctx.Process(target=_add_member, args=(path, i, start)) for i in range(1, 9)]
    for w in writers:
        w.start()
    start.set()
    for w in writers:
        w.join(30)
        assert w.exitcode == 0
    group = ConfigFile.open(path).group("home")
    assert group is not None
    assert sorted(m.speaker for m in group.members) == [f"AA:BB:CC:00:00:0{i}" for i in range(9)]


def _add_member(path: Path, i: int, start: object) -> None:
    import time

    start.wait()  # type: ignore[attr-defined]
    with ConfigFile.locked(path) as cfg:
        group = cfg.group("home")
        assert group is not None
        time.sleep(0.01)  # widen the window between read and write that the lock closes
        cfg.set_group(GroupConfig("home", "Home", (*group.members, MemberConfig(f"AA:BB:CC:00:00:0{i}"))))
        cfg.save()
