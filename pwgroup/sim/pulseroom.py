"""The virtual room on PulseAudio: a private `pulseaudio` daemon with fake Bluetooth speakers and a truth tap.

The PipeWire room's tests run here too; hidden latencies live in convolver files, emissions on one null sink.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pwgroup.graph.capture import write_wav
from pwgroup.graph.layout import PROP_ROLE
from pwgroup.graph.proc import run_sync, spawn, tool
from pwgroup.graph.pulse import ADJUST_THRESHOLD_USEC, ADJUST_TIME_S, BASE_MS, CONVERGE_S, hex_value, proplist_arg
from pwgroup.model import KIND_BLUETOOTH, PwgroupError
from pwgroup.sim.base import MODELS, RATE, SimRoom, SimSpeaker
from pwgroup.sim.server import PrivateServer, server_env

AIR = "pwgroup-sim.air"
REF = "pwgroup-sim.ref"
MIC = "pwgroup-sim.mic"
CHANNELS = 18  # aux0 the reference, aux1..aux16 one per speaker, aux17 where the right ears go
TRASH = CHANNELS - 1
STATE = "pulse-room.json"
# The room's own sinks (the air, the reference, each speaker's emission) are plumbing, never a member target.
ROOM_ROLE = {PROP_ROLE: "room"}
SETTLE_S = max(CONVERGE_S, 5.0)  # what truth() waits before recording: see there
DAEMON_CONF = """# Written by pwgroup's virtual room: one private PulseAudio, float at 48 kHz so nothing is resampled.
default-sample-format = float32le
default-sample-rate = 48000
alternate-sample-rate = 48000
exit-idle-time = -1
flat-volumes = no
"""


def pulse_env(root: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Points Pulse clients at the room's daemon, and PipeWire clients at a folder with no PipeWire in it."""
    env = server_env(root, base)
    env.update(
        {
            "PULSE_CONFIG": str(root / "config" / "daemon.conf"),
            "PULSE_CLIENTCONFIG": str(root / "config" / "client.conf"),
            "PULSE_STATE_PATH": str(root / "state"),
            # The daemon looks for a session bus; it must find none rather than the user's.
            "DBUS_SESSION_BUS_ADDRESS": f"unix:path={root / 'no-session-bus'}",
            "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={root / 'no-system-bus'}",
        }
    )
    return env


def _safe_path(path: Path) -> str:
    text = str(path)
    if not all(ch.isalnum() or ch in "/._-" for ch in text):
        raise PwgroupError(f"the room's folder {text!r} needs a plain path (letters, digits, / . _ -)")
    return text


def speaker_ir(spk: SimSpeaker) -> np.ndarray:
    """Both ears of the convolver hear half of each channel, after the hidden latency: a mono downmix."""
    tail = max((round(d * RATE / 1000) for d, _ in spk.reflections), default=0)
    ir = np.zeros(spk.latency_samples + tail + 1)
    ir[spk.latency_samples] = 0.5 * spk.gain
    for delay_ms, rel in spk.reflections:
        ir[spk.latency_samples + round(delay_ms * RATE / 1000)] += 0.5 * spk.gain * rel
    return np.stack([ir, ir], axis=1)


class PulseRoom(SimRoom):
    """A virtual room on a private PulseAudio. Synchronous: it is test and benchmark infrastructure."""

    backend = "pulse"
    state_file = STATE

    def __init__(self, root: Path) -> None:
        self.modules: dict[str, list[int]] = {}  # a present speaker's modules, by its key
        server = PrivateServer(root)
        server.env = pulse_env(root)
        super().__init__(root, server)

    # ------------------------------------------------------------ state
    def _load_extra(self, data: dict[str, Any]) -> None:
        self.modules = {k: list(v) for k, v in data.get("modules", {}).items()}

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "modules": self.modules}

    # ------------------------------------------------------------ the daemon
    def pactl(self, *args: str) -> str:
        res = run_sync([tool("pactl"), *args], env=self.env, capture_output=True, text=True, timeout=10, check=False)
        if res.returncode != 0:
            raise PwgroupError(f"pactl {args[0]} failed: {(res.stderr or res.stdout).strip()}")
        return res.stdout

    def load(self, module: str, *args: str) -> int:
        return int(self.pactl("load-module", module, *args).strip())

    @property
    def running(self) -> bool:
        return self.server.running("pulseaudio") and (self.root / "pulse" / "native").exists()

    def _start(self) -> None:
        self.server.stop()
        for sub in ("log", "config", "state", "pulse", "ir"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        (self.root / "config" / "daemon.conf").write_text(DAEMON_CONF)
        (self.root / "config" / "client.conf").write_text("autospawn = no\n")
        aux = ",".join(f"aux{i}" for i in range(CHANNELS))
        socket = _safe_path(self.root / "pulse" / "native")
        script = [
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={socket}",
            f"load-module module-null-sink sink_name={AIR} channels={CHANNELS} channel_map={aux} "
            f"sink_properties={proplist_arg({'device.description': hex_value('Room air (virtual)'), **ROOM_ROLE})}",
            f"load-module module-remap-sink sink_name={REF} master={AIR} channels=2 "
            f"channel_map=front-left,front-right master_channel_map=aux0,aux{TRASH} remix=no "
            f"sink_properties={proplist_arg(ROOM_ROLE)}",
            f"set-default-sink {AIR}",
            # A chosen default source, so no recorder is "on the default" and moved when sources come and go
            # (PulseAudio 16 died here moving an 18-channel recorder onto a 2-channel source).
            f"load-module module-null-source source_name={MIC} channels=1 description=Room_microphone",
            f"set-default-source {MIC}",
            "",
        ]
        (self.root / "config" / "room.pa").write_text("\n".join(script))
        self.server.spawn(
            "pulseaudio",
            [
                "pulseaudio",
                "-n",
                "--daemonize=no",
                "--use-pid-file=no",
                "--exit-idle-time=-1",
                # Its watchdog kills a daemon that takes most of a core for a while; four convolving speakers
                # on two busy cores can, and a test room must not vanish for it.
                "--no-cpu-limit=yes",
                "--log-target=stderr",
                "-F",
                str(self.root / "config" / "room.pa"),
            ],
        )
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(PwgroupError):
                if self.running and AIR in self.pactl("list", "short", "sinks"):
                    break
            if time.monotonic() > deadline:
                raise PwgroupError(f"the private PulseAudio did not start: see {self.root}/log/pulseaudio.log")
            time.sleep(0.05)
        # A null sink's latency follows the smallest one its clients ask for, and every loopback into the room
        # re-converges when it changes: a recorder that never leaves pins the air's latency where measurements
        # will ask for it.
        self.server.spawn("air-keeper", [*parec_argv(), "--file-format=wav", "/dev/null"])
        while "parec" not in self.pactl("list", "source-outputs"):
            if time.monotonic() > deadline:
                raise PwgroupError(f"the room's air keeper did not start: see {self.root}/log/air-keeper.log")
            time.sleep(0.05)

    def up(self, speakers: int = 3, latencies_ms: list[float] | None = None, seed: int = 1) -> None:
        if not self.running:
            self._forget_speakers()
            self.modules = {}
            self._start()
        if self.speakers:
            return
        import random

        rng = random.Random(seed)
        for i in range(speakers):
            latency = latencies_ms[i] if latencies_ms is not None else rng.uniform(80.0, 300.0)
            self.add_speaker(MODELS[i % len(MODELS)][0], latency, gain=round(rng.uniform(0.5, 1.0), 3))

    def down(self) -> None:
        """Stop every process the room started and remove what it wrote, pwgroup's config among it."""
        self.server.stop()
        (self.root / STATE).unlink(missing_ok=True)
        for sub in ("config", "state", "ir"):
            shutil.rmtree(self.root / sub, ignore_errors=True)
        self._forget_speakers()
        self.modules = {}

    # ------------------------------------------------------------ speakers
    def _check_room_for(self, spk: SimSpeaker) -> None:
        if spk.index >= TRASH:
            raise PwgroupError(f"the PulseAudio room holds at most {TRASH - 1} speakers")

    def _build(self, spk: SimSpeaker) -> None:
        write_wav(self.root / "ir" / f"{spk.index}.wav", speaker_ir(spk))
        self.connect(spk.key)

    def connect(self, key: str) -> None:
        """The speaker comes into range: its sink appears, playing into its own channel of the air."""
        spk = self.speaker(key)
        if spk.key in self.modules:
            return
        emit = self.load(
            "module-remap-sink",
            f"sink_name={spk.emit_name}",
            f"master={AIR}",
            "channels=2",
            "channel_map=front-left,front-right",
            f"master_channel_map=aux{spk.index},aux{TRASH}",
            "remix=no",
            f"sink_properties={proplist_arg(ROOM_ROLE)}",
        )
        props: dict[str, str | int] = {"device.description": hex_value(spk.description)}
        if spk.kind == KIND_BLUETOOTH:
            props |= {
                "device.api": "bluez5",
                "device.bus": "bluetooth",
                "api.bluez5.address": spk.address,
                "api.bluez5.codec": spk.codec,
                "api.bluez5.profile": "a2dp-sink",
            }
        # The convolver's impulse response holds the hidden latency: nothing the server reports shows it.
        sink = self.load(
            "module-virtual-surround-sink",
            f"sink_name={spk.node_name}",
            f"sink_master={spk.emit_name}",
            f"hrir={_safe_path(self.root / 'ir' / f'{spk.index}.wav')}",
            f"sink_properties={proplist_arg(props)}",
        )
        self.modules[spk.key] = [sink, emit]
        self._save()

    def disconnect(self, key: str) -> None:
        """The speaker walks out of range: its sink vanishes, and with it whatever played into it."""
        spk = self.speaker(key)
        for index in self.modules.pop(spk.key, []):
            self.pactl("unload-module", str(index))
        self._save()

    # ------------------------------------------------------------ measuring
    @contextlib.contextmanager
    def truth(self, group: str, n: int, hold: bool = True) -> Iterator[PulseRecorder]:
        """Record the group's monitor (the reference) and the first `n` speakers' emissions in one stream."""
        with self.truth_of(group, self.speakers[:n], hold) as rec:
            yield rec

    @contextlib.contextmanager
    def truth_of(self, group: str, speakers: Sequence[SimSpeaker], hold: bool = True) -> Iterator[PulseRecorder]:
        """Record the group's monitor (the reference) and these speakers' emissions, in this order, in one stream.

        PulseAudio cannot record two devices in one stream, so the reference reaches the air by the same kind of
        path as a member's (a remap-source of the monitor, then a loopback at the backend's base latency), as a
        member with delay 0 would: arrivals then read as each member's delay plus its hidden latency.
        hold=False leaves a group sink that had no stream without one until the caller plays into it, as a
        user's first song finds it."""
        # First pin the group sink's latency where the measurement's players will ask for it (the holder asks
        # the same), so that the loopbacks settle once, below, and not again when a player starts.
        holder = PulsePlayer(self.env, f"pwgroup.{group}", None).start() if hold else None
        tap = self.load("module-remap-source", f"source_name={REF}.tap.{group}", f"master=pwgroup.{group}.monitor")
        index = self.load(
            "module-loopback",
            f"source={REF}.tap.{group}",
            f"sink={REF}",
            f"latency_msec={BASE_MS}",
            f"adjust_time={ADJUST_TIME_S:g}",
            f"adjust_threshold_usec={ADJUST_THRESHOLD_USEC}",
            "source_dont_move=true",
            "sink_dont_move=true",
        )
        try:
            # The holder is often the first stream into an idle group sink, and that throws every loopback reading
            # its monitor (the members' and the fresh reference) about 20 ms off at once; at 1 % rate they are
            # back within a sample of each other in about 3 s. Measured on PulseAudio 16.1.
            time.sleep(SETTLE_S)
            with PulseRecorder(self.env, [0, *(s.index for s in speakers)]) as rec:
                yield rec
        finally:
            if holder is not None:
                holder.stop()
            for module in (index, tap):
                with contextlib.suppress(PwgroupError):
                    self.pactl("unload-module", str(module))

    def play(self, group: str, frames: np.ndarray) -> PulsePlayer:
        return PulsePlayer(self.env, f"pwgroup.{group}", frames)

    @property
    def lead_s(self) -> float:
        """How long before audio reaches the truth channels: the base latency of every path."""
        return BASE_MS / 1000.0


def parec_argv() -> list[str]:
    return [
        "parec",
        f"--device={AIR}.monitor",
        "--format=float32le",
        f"--rate={RATE}",
        f"--channels={CHANNELS}",
        "--channel-map=" + ",".join(f"aux{i}" for i in range(CHANNELS)),
        "--latency-msec=20",
    ]


class PulseRecorder:
    """`parec` of the air's monitor: every channel in one stream, so they are sample-aligned."""

    def __init__(self, env: dict[str, str], channels: list[int]) -> None:
        self.env = env
        self.channels = channels
        self._chunks: list[bytes] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._started = threading.Event()

    def __enter__(self) -> PulseRecorder:
        self._proc = spawn(
            [tool("parec"), "--raw", *parec_argv()[1:]],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._thread.start()
        if not self._started.wait(10):
            self.__exit__()
            raise PwgroupError("parec delivered nothing: is the room's PulseAudio running?")
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while chunk := os.read(fd, 1 << 16):
            self._chunks.append(chunk)
            self._started.set()

    def stop(self) -> np.ndarray:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(5)
            self._thread.join(5)
            self._proc = None
        raw = b"".join(self._chunks)
        frame = 4 * CHANNELS
        y = np.frombuffer(raw[: len(raw) // frame * frame], dtype="<f4").reshape(-1, CHANNELS)
        return y[:, self.channels].astype(np.float64)

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None


class PulsePlayer:
    """`pacat` into a sink, fed from memory; `wait` returns once the server has played it out. Without frames
    it plays silence until stopped."""

    def __init__(self, env: dict[str, str], sink: str, frames: np.ndarray | None) -> None:
        self.env = env
        self.sink = sink
        self.data: bytes | None = None
        if frames is not None:
            arr = np.asarray(frames, dtype="<f4")
            self.data = (arr if arr.ndim == 2 else np.stack([arr, arr], axis=1)).tobytes()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> PulsePlayer:
        self._proc = spawn(
            [
                tool("pacat"),
                "--raw",
                f"--device={self.sink}",
                "--format=float32le",
                f"--rate={RATE}",
                "--channels=2",
                "--latency-msec=30",
            ],
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._thread = threading.Thread(target=self._write, daemon=True)
        self._thread.start()
        return self

    def _write(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            if self.data is None:
                silence = bytes(4 * 2 * 1024)
                while self._proc is proc:  # the pipe paces this: pacat reads in real time
                    proc.stdin.write(silence)
                return
            proc.stdin.write(self.data)
            proc.stdin.close()

    def wait(self, timeout: float = 60.0) -> None:
        if self._proc is not None:
            self._proc.wait(timeout)
            self._proc = None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            proc.wait(5)
