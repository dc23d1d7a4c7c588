"""Benchmark: the daemon healing a group in the virtual room; prints one JSON object.

- heal: a member's speaker leaves and returns N times; from its node reappearing to both of its links being
  back, read from one `pw-dump -m` stream (so the monitor's own delay cancels), and every 10th return the
  truth channels checked for alignment (within 1 sample of the hidden latencies plus delays);
- crash: PipeWire killed with SIGKILL and restarted; from its socket being back to the group linked again,
  and to the first burst heard aligned on the truth channels;
- idle: the daemon's CPU and RSS over 60 s with nothing happening, and bytes it read while an app played;
- status: `pwgroup status --json` from a cold start, median of 10.
Usage: python bench/heal.py [--cycles 100] [--crashes 5] [--idle 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from pwgroup.graph import pwdump, spajson
from pwgroup.graph.capture import installed_stream_tools
from pwgroup.graph.proc import tool
from pwgroup.sim.measure import lag
from pwgroup.sim.room import Room

GROUP = "heal"
HIDDEN_MS = [100.0, 150.0, 200.0, 250.0]
DELAYS_MS = [150.0, 100.0, 50.0, 0.0]


class Watch:
    """A `pw-dump -m` stream of our own, timestamping when a node appears and when a link appears."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([tool("pw-dump"), "-m", "-N"], env=env, stdout=subprocess.PIPE, text=True)
        self.graph = pwdump.parse("[]")
        self.events: list[tuple[float, str, int, Any]] = []  # (time, kind, id, object)
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        decoder = pwdump.StreamDecoder()
        for line in self.proc.stdout:
            for batch in decoder.feed(line):
                now = time.monotonic()
                with self.lock:
                    for obj in batch:
                        kind = str(obj.get("type", "")).rsplit(":", 1)[-1] or "removed"
                        self.events.append((now, kind, int(obj.get("id", -1)), obj))
                    pwdump.apply(self.graph, batch)

    def since(self, t0: float) -> list[tuple[float, str, int, Any]]:
        with self.lock:
            return [e for e in self.events if e[0] >= t0]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def cli(room: Room, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pwgroup", *args], env=room.env, capture_output=True, text=True, timeout=60
    )


def aligned(room: Room, n: int) -> bool:
    burst = np.zeros((int(0.6 * 48000), 2))
    burst[4800:7200, :] = np.random.default_rng(0).standard_normal((2400, 1)) * 0.3
    with room.truth(GROUP, n) as rec:
        time.sleep(0.15)
        room.play(GROUP, burst).start().wait()
        time.sleep(0.45)
        y = rec.stop()
    if any(np.abs(y[:, ch]).max() < 0.05 for ch in range(1, n + 1)):
        return False
    lags = [lag(y[:, 0], y[:, ch]) for ch in range(1, n + 1)]
    want = [round(d * 48) + s.latency_samples for d, s in zip(DELAYS_MS, room.speakers, strict=False)]
    return all(abs(a - b) <= 1 for a, b in zip(lags, want, strict=False))


def member_linked(graph: Any, speaker_node: str, element: str) -> bool:
    spk, out = graph.node_by_name(speaker_node), graph.node_by_name(element)
    if spk is None or out is None:
        return False
    return len(graph.links_between(out.id, spk.id)) >= 2


def heal(room: Room, cycles: int) -> dict[str, Any]:
    watch = Watch(room.env)
    while watch.graph.node_by_name(f"pwgroup.{GROUP}") is None:  # caught up with the graph as it stands
        time.sleep(0.01)
    times: list[float] = []
    port_waits: list[float] = []
    after_ports: list[float] = []
    checks = failures = 0
    try:
        for i in range(cycles):
            spk = room.speakers[i % len(room.speakers)]
            element = f"pwgroup.{GROUP}.{spk.address.replace(':', '_')}.out"
            room.disconnect(spk.address)
            while watch.graph.node_by_name(spk.node_name) is not None:  # our stream has seen it go too
                time.sleep(0.002)
            t0 = time.monotonic()
            room.connect(spk.address)
            deadline = time.monotonic() + 5
            while not member_linked(watch.graph, spk.node_name, element) and time.monotonic() < deadline:
                time.sleep(0.002)
            events = watch.since(t0)
            appeared = next((t for t, kind, _, obj in events if kind == "Node" and _name(obj) == spk.node_name), None)
            spk_id = watch.graph.node_by_name(spk.node_name)
            out = watch.graph.node_by_name(element)
            linked = [
                t
                for t, kind, _, obj in events
                if kind == "Link"
                and spk_id is not None
                and out is not None
                and (obj.get("info") or {}).get("input-node-id") == spk_id.id
                and (obj.get("info") or {}).get("output-node-id") == out.id
            ]
            if appeared is None or len(linked) < 2:
                print(f"cycle {i}: node seen {appeared is not None}, links {len(linked)}", file=sys.stderr)
                failures += 1
                continue
            ports = [
                t
                for t, kind, _, obj in events
                if kind == "Port" and spk_id is not None and _port_node(obj) == spk_id.id and _is_input(obj)
            ]
            times.append((max(linked[:2]) - appeared) * 1000)
            if len(ports) >= 2:
                port_waits.append((ports[1] - appeared) * 1000)
                after_ports.append((max(linked[:2]) - ports[1]) * 1000)
            if i % 10 == 9:
                checks += 1
                if not aligned(room, len(room.speakers)):
                    print(f"cycle {i}: not aligned", file=sys.stderr)
                    failures += 1
    finally:
        watch.close()
    return {
        "cycles": cycles,
        "heal_ms_p50": round(statistics.median(times), 1) if times else None,
        "heal_ms_p95": round(float(np.percentile(times, 95)), 1) if times else None,
        "heal_ms_max": round(max(times), 1) if times else None,
        "ports_ms_p50": round(statistics.median(port_waits), 1) if port_waits else None,
        "after_ports_ms_p50": round(statistics.median(after_ports), 1) if after_ports else None,
        "after_ports_ms_p95": round(float(np.percentile(after_ports, 95)), 1) if after_ports else None,
        "after_ports_ms_max": round(max(after_ports), 1) if after_ports else None,
        "alignment_checks": checks,
        "failures": failures,
        "note": "heal_ms: the speaker's node added to both of its links added, on one pw-dump -m stream (audio "
        "follows at the next graph cycle); ports_ms: node added to its input ports added (WirePlumber configures "
        "them: nothing can link before); after_ports_ms: ports added to links added, the daemon's own part",
    }


def _is_input(obj: Any) -> bool:
    return (obj.get("info") or {}).get("direction") == "input"


def _port_node(obj: Any) -> Any:
    return ((obj.get("info") or {}).get("props") or {}).get("node.id")


def _name(obj: Any) -> str | None:
    props = (obj.get("info") or {}).get("props") or {}
    return props.get("node.name")


def crash(room: Room, crashes: int) -> dict[str, Any]:
    linked_s: list[float] = []
    aligned_s: list[float] = []
    if crashes == 0:
        return {"crashes": 0}
    for _ in range(crashes):
        up = room.crash_server()
        while True:
            graph = room.dump()
            if all(
                member_linked(graph, s.node_name, f"pwgroup.{GROUP}.{s.address.replace(':', '_')}.out")
                for s in room.speakers
            ):
                linked_s.append(time.monotonic() - up)
                break
            if time.monotonic() - up > 20:
                raise SystemExit("the group did not come back within 20 s of PipeWire")
            time.sleep(0.01)
        while not aligned(room, len(room.speakers)):
            if time.monotonic() - up > 30:
                raise SystemExit("the group did not play aligned within 30 s of PipeWire")
        # The first burst heard aligned ended about 0.45 s after its start.
        aligned_s.append(time.monotonic() - up - 0.45)
        time.sleep(1.0)
    return {
        "crashes": crashes,
        "linked_s_median": round(statistics.median(linked_s), 2),
        "linked_s_max": round(max(linked_s), 2),
        "aligned_s_median": round(statistics.median(aligned_s), 2),
        "aligned_s_max": round(max(aligned_s), 2),
        "note": "from PipeWire's socket being back (the room restarts its speakers too, as BlueZ would)",
    }


def proc_stat(pid: int) -> tuple[float, int, int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = next(int(x.split()[1]) for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS"))
    rchar = next(int(x.split()[1]) for x in Path(f"/proc/{pid}/io").read_text().splitlines() if x.startswith("rchar"))
    return cpu, rss, rchar


def idle(room: Room, pid: int, seconds: float) -> dict[str, Any]:
    cpu0, _, _ = proc_stat(pid)
    time.sleep(seconds)
    cpu1, rss, _ = proc_stat(pid)
    app = subprocess.Popen(
        [tool("pw-cat"), "--playback", *installed_stream_tools().raw_stdin(),
         "--target", f"pwgroup.{GROUP}", "--rate", "48000", "--channels", "2",
         "--format", "f32", "-P", spajson.dumps({"node.name": "bench-app"}), "/dev/zero"],
        env=room.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(2)
        _, _, r0 = proc_stat(pid)
        time.sleep(10)
        _, _, r1 = proc_stat(pid)
    finally:
        app.terminate()
        app.wait()
    return {
        "seconds": seconds,
        "cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / seconds, 3),
        "rss_mb": round(rss / 1024, 1),
        "bytes_read_per_s_while_playing": round((r1 - r0) / 10),
        "note": "a 48 kHz stereo float stream is 384000 bytes/s; what the daemon reads is pw-dump's text",
    }


def status_cold(room: Room) -> dict[str, Any]:
    runs = []
    for _ in range(10):
        t0 = time.monotonic()
        cli(room, "status", "--json")
        runs.append((time.monotonic() - t0) * 1000)
    return {"runs": 10, "ms_median": round(statistics.median(runs)), "ms_max": round(max(runs))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=100)
    ap.add_argument("--crashes", type=int, default=5)
    ap.add_argument("--idle", type=float, default=60.0)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed benchmark still takes its room down
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
    }
    with tempfile.TemporaryDirectory(prefix="pwgroup-bench-") as tmp:
        room = Room(Path(tmp) / "room")
        daemon = None
        try:
            room.up(speakers=len(HIDDEN_MS), latencies_ms=HIDDEN_MS)
            made = cli(room, "group", "create", GROUP, *(s.address for s in room.speakers))
            if made.returncode != 0:
                raise SystemExit(made.stderr)
            for spk, ms in zip(room.speakers, DELAYS_MS, strict=True):
                cli(room, "delay", "set", GROUP, spk.address, str(ms))
            # The room's fake BlueZ would have the daemon reconnect a speaker the moment it leaves: here the
            # speakers leave and come back by themselves, and what is measured is PipeWire's side.
            conf = Path(room.env["XDG_CONFIG_HOME"]) / "pwgroup" / "config.toml"
            conf.write_text(conf.read_text() + "\n[reconnect]\nenabled = false\n")
            log = open(Path(tmp) / "daemon.log", "wb")  # noqa: SIM115 - closed with the daemon
            daemon = subprocess.Popen([sys.executable, "-m", "pwgroup", "daemon"], env=room.env, stderr=log)
            time.sleep(2)
            if not aligned(room, len(room.speakers)):
                raise SystemExit("the group is not aligned before the benchmark starts")
            result["status_cold"] = status_cold(room)
            result["idle"] = idle(room, daemon.pid, args.idle)
            result["heal"] = heal(room, args.cycles)
            result["crash"] = crash(room, args.crashes)
        finally:
            if daemon is not None:
                daemon.terminate()
                daemon.wait(15)
            room.down()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
