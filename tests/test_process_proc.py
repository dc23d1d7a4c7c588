"""Short-lived tools die with the process that ran them (whichever thread forked), and strays are found by the
runtime dir they point at: no sound server here, only `sleep` and Python."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pwgroup.graph import proc
from pwgroup.model import BackendError, ServerUnreachable
from pwgroup.sim.server import parse_environ, processes_under, runs_under

pytestmark = pytest.mark.process  # they start `sleep` and Python: no sound server


def _gone(pid: int, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state == "Z":
            return True
        time.sleep(0.02)
    return False


def test_environ_is_parsed_and_matched_by_runtime_dir(tmp_path: Path) -> None:
    env = parse_environ(b"A=1\0XDG_RUNTIME_DIR=" + str(tmp_path / "room").encode() + b"\0junk\0B=x=y\0")
    assert env["A"] == "1" and env["B"] == "x=y" and "junk" not in env
    assert runs_under(env, tmp_path)
    assert runs_under({"PULSE_RUNTIME_PATH": str(tmp_path)}, tmp_path)
    # A sibling folder sharing the prefix is not inside.
    assert not runs_under({"PIPEWIRE_RUNTIME_DIR": str(tmp_path) + "-other"}, tmp_path)
    assert not runs_under({"HOME": str(tmp_path)}, tmp_path)


def test_strays_are_found_by_runtime_dir_and_name_but_never_the_caller(tmp_path: Path) -> None:
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))
    child = subprocess.Popen(["sleep", "30"], env=env)
    try:
        # Until the child has exec'd, /proc shows it with its parent's environment (seen once on Debian 13).
        deadline = time.monotonic() + 5.0
        while child.pid not in processes_under(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert child.pid in processes_under(tmp_path)
        assert child.pid in processes_under(tmp_path, {"sleep"})
        assert child.pid not in processes_under(tmp_path, {"pw-cli"})
        assert child.pid not in processes_under(tmp_path / "elsewhere")
        # A process pointed at the room that looks for strays (a shell after `eval "$(pwgroup sim env)"`, or
        # `pwgroup sim down` itself) never finds itself or its parents.
        code = "import os,sys; from pathlib import Path; from pwgroup.sim.server import processes_under as p; "
        code += "sys.exit(os.getpid() in p(Path(sys.argv[1])) or os.getppid() in p(Path(sys.argv[1])))"
        assert subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, timeout=30).returncode == 0
    finally:
        child.kill()
        child.wait()


def test_a_tool_spawned_from_a_worker_thread_outlives_the_thread_but_not_the_process() -> None:
    # The pitfall: PR_SET_PDEATHSIG fires when the forking *thread* ends; asyncio.to_thread workers end.
    code = """
import asyncio, sys, threading
from pwgroup.graph import proc
kept = []
def worker():
    kept.append(proc.spawn(["sleep", "60"]))
t = threading.Thread(target=worker)
t.start()
t.join()
async def main():
    kept.append(await proc.start(["sleep", "61"]))
asyncio.run(main())
print(kept[0].pid, kept[1].pid, flush=True)
sys.stdin.read()
"""
    parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pids = [int(p) for p in parent.stdout.readline().split()]
    try:
        time.sleep(0.3)
        # The worker thread that asked is gone; its tool is not.
        assert not _gone(pids[0], 0.0)
        parent.kill()  # SIGKILL: no atexit, no finally
        parent.wait()
        assert all(_gone(pid) for pid in pids)
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_run_leaves_no_tool_on_any_way_out() -> None:
    async def scenario() -> None:
        assert (await proc.run(["echo", "hi"])).strip() == "hi"
        with pytest.raises(BackendError, match="did not answer within"):
            await proc.run(["sleep", "30"], timeout=0.2)
        gone = asyncio.Event()
        asyncio.get_running_loop().call_later(0.1, gone.set)
        started = time.monotonic()
        with pytest.raises(ServerUnreachable, match="went away"):
            await proc.run(["sleep", "30"], abandon=gone)
        assert time.monotonic() - started < 2
        task = asyncio.create_task(proc.run(["sleep", "31"]))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    left = subprocess.run(["pgrep", "-P", str(os.getpid()), "-x", "sleep"], capture_output=True, text=True)
    assert left.stdout.strip() == ""


def test_run_sync_kills_its_tool_at_the_deadline() -> None:
    assert proc.run_sync(["echo", "x"], capture_output=True, text=True, timeout=5).stdout == "x\n"
    with pytest.raises(subprocess.TimeoutExpired):
        proc.run_sync(["sleep", "30"], timeout=0.2)
    left = subprocess.run(["pgrep", "-P", str(os.getpid()), "-x", "sleep"], capture_output=True, text=True)
    assert left.stdout.strip() == ""


def test_a_zombie_is_not_alive_and_a_member_stop_does_not_wait_for_its_reaping() -> None:
    """An element started by an earlier pwgroup is an orphan when it exits; where orphans are reaped late (a
    container's init) its zombie stood for a live process and every member stop waited out _reap's 2 s."""
    from pwgroup.graph.pipewire import _reap

    child = subprocess.Popen(["sleep", "30"])
    try:
        assert proc.process_alive(child.pid) and not proc.zombie(child.pid)
        child.send_signal(signal.SIGTERM)
        assert _gone(child.pid)
        # Exited, not yet reaped (we are its parent and have not waited): a zombie, and not alive.
        assert proc.zombie(child.pid) and not proc.process_alive(child.pid)
    finally:
        child.wait()
    assert not proc.process_alive(child.pid)
    # A stranger's zombie (here: a grandchild whose parent, a shell, never waits) is gone for _reap at once.
    shell = subprocess.Popen(["sh", "-c", "sleep 0.01 & echo $!; exec sleep 5"], stdout=subprocess.PIPE, text=True)
    try:
        orphan = int(shell.stdout.readline())  # type: ignore[union-attr]
        assert _gone(orphan)
        started = time.monotonic()
        _reap(orphan)
        assert time.monotonic() - started < 0.5
    finally:
        shell.kill()
        shell.wait()
