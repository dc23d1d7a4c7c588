"""Short signals in and out of the graph: play a WAV into a node, record ports sample-aligned (pw-play, pw-record).

Only test and calibration audio passes through here; group playback never does.
"""

from __future__ import annotations

import functools
import os
import signal
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pwgroup.graph import StreamTools, pwdump, spajson
from pwgroup.graph.proc import linked_version, pipewire_library_version, run_sync, spawn, tool
from pwgroup.model import Graph, PwgroupError

RATE = 48000


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Read PCM or float WAV, including WAVE_FORMAT_EXTENSIBLE (what pw-record writes): (frames x channels)."""
    raw = path.read_bytes()
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise PwgroupError(f"{path} is not a WAV file")
    pos, fmt, data = 12, None, None
    while pos + 8 <= len(raw):
        cid, size = raw[pos : pos + 4], struct.unpack("<I", raw[pos + 4 : pos + 8])[0]
        body = raw[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            fmt = body
        elif cid == b"data":
            data = body
        pos += 8 + size + (size & 1)
    if fmt is None or data is None:
        raise PwgroupError(f"{path} has no fmt or data chunk")
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == 0xFFFE and len(fmt) >= 26:
        tag = struct.unpack("<H", fmt[24:26])[0]
    if tag == 3 and bits == 32:
        arr = np.frombuffer(data[: len(data) // 4 * 4], dtype="<f4")
    elif tag == 1 and bits == 16:
        arr = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    elif tag == 1 and bits == 32:
        arr = np.frombuffer(data[: len(data) // 4 * 4], dtype="<i4").astype(np.float32) / 2147483648.0
    else:
        raise PwgroupError(f"{path}: unsupported WAV format {tag}/{bits}")
    frames = len(arr) // channels
    return arr[: frames * channels].reshape(frames, channels).astype(np.float64), rate


def write_wav(path: Path, frames: np.ndarray, rate: int = RATE) -> None:
    arr = np.asarray(frames, dtype="<f4")
    if arr.ndim == 1:
        arr = arr[:, None]
    channels = arr.shape[1]
    data = arr.tobytes()
    fmt = struct.pack("<HHIIHH", 3, channels, rate, rate * 4 * channels, 4 * channels, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


@functools.cache
def installed_stream_tools() -> StreamTools:
    """The installed pw-cat's dialect, for callers that hold no backend (the room, benchmarks); a backend's
    `capabilities.stream_tools` says the same, read when it opens."""
    return StreamTools(pipewire_library_version() or linked_version("pw-cat", "pipewire"))


def dump_graph(env: Mapping[str, str]) -> Graph:
    out = run_sync([tool("pw-dump"), "-N"], env=dict(env), capture_output=True, text=True, timeout=10).stdout
    return pwdump.parse(out)


def _wait_node(env: Mapping[str, str], name: str, direction: str, count: int, timeout: float = 10.0) -> Graph:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        graph = dump_graph(env)
        node = graph.node_by_name(name)
        if node is not None and len(graph.ports_of(node.id, direction, monitor=False)) >= count:  # type: ignore[arg-type]
            return graph
        time.sleep(0.03)
    raise PwgroupError(f"timed out waiting for {name}")


def _link(env: Mapping[str, str], out_port: int, in_port: int) -> None:
    run_sync(
        [tool("pw-link"), "--", str(out_port), str(in_port)], env=dict(env), capture_output=True, timeout=10, check=True
    )


class Recorder:
    """Records the given output ports into one multichannel file: one stream, so channels are sample-aligned."""

    _count = 0

    def __init__(self, env: Mapping[str, str], ports: Sequence[int], tools: StreamTools | None = None) -> None:
        self.env = dict(env)
        self.ports = list(ports)
        self.tools = tools or installed_stream_tools()
        Recorder._count += 1
        self.name = f"pwgroup-rec.{os.getpid()}.{Recorder._count}"
        self._dir = tempfile.TemporaryDirectory(prefix="pwgroup-rec-")
        self.path = Path(self._dir.name) / "rec.wav"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Recorder:
        n = len(self.ports)
        channel_map = self.tools.channel_map([f"AUX{i}" for i in range(n)])
        props = {"node.name": self.name, "node.autoconnect": False}
        self._proc = spawn(
            [
                tool("pw-record"),
                "--rate",
                str(RATE),
                "--channels",
                str(n),
                "--channel-map",
                channel_map,
                "--format",
                "f32",
                "-P",
                spajson.dumps(props),
                str(self.path),
            ],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        graph = _wait_node(self.env, self.name, "in", n)
        node = graph.node_by_name(self.name)
        assert node is not None
        # Object ids are reused, so port order says nothing: match each port to its channel by name.
        by_channel = {p.channel: p.id for p in graph.ports_of(node.id, "in")}
        for i, out_port in enumerate(self.ports):
            _link(self.env, out_port, by_channel[f"AUX{i}"])
        return self

    def stop(self) -> np.ndarray:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        frames, _ = read_wav(self.path)
        self._dir.cleanup()
        return frames

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        self._dir.cleanup()


class Player:
    """Plays a signal into a node's input ports; starts linked, so not a sample is lost."""

    _count = 0

    def __init__(self, env: Mapping[str, str], target_node: str, frames: np.ndarray) -> None:
        self.env = dict(env)
        self.target = target_node
        Player._count += 1
        self.name = f"pwgroup-play.{os.getpid()}.{Player._count}"
        self._dir = tempfile.TemporaryDirectory(prefix="pwgroup-play-")
        self.path = Path(self._dir.name) / "play.wav"
        arr = np.asarray(frames, dtype=np.float64)
        self.channels = 1 if arr.ndim == 1 else arr.shape[1]
        write_wav(self.path, arr)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Player:
        graph = dump_graph(self.env)
        node = graph.node_by_name(self.target)
        if node is None:
            raise PwgroupError(f"no node named {self.target!r} to play into")
        serial = node.props.get("object.serial", node.id)
        props = {"node.name": self.name, "node.dont-reconnect": True}
        self._proc = spawn(
            [tool("pw-play"), "--target", str(serial), "-P", spajson.dumps(props), str(self.path)],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        return self

    def wait(self, timeout: float = 60.0) -> None:
        if self._proc is not None:
            self._proc.wait(timeout)
            self._proc = None
        self._dir.cleanup()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(5)
            self._proc = None
        self._dir.cleanup()


def stdin_playback_argv(
    names: Sequence[str], block: int, props: Mapping[str, object], tools: StreamTools | None = None
) -> list[str]:
    """pw-cat playing raw float samples from its stdin, one channel per name, unlinked (whoever starts it links
    it)."""
    tools = tools or installed_stream_tools()
    return [
        tool("pw-cat"),
        "--playback",
        *tools.raw_stdin(),
        "--target",
        "0",
        "--rate",
        str(RATE),
        "--channels",
        str(len(names)),
        "--channel-map",
        tools.channel_map(names),
        "--format",
        "f32",
        "--latency",
        str(block),
        "-P",
        spajson.dumps(dict(props)),
        "-",
    ]


class Feeder:
    """A multichannel signal streamed from Python into ports the caller links (channel i: AUX{i}).

    It sends silence until `release`, so the signal starts only once every link is in place: an unlinked
    stream is not scheduled, and the first link would otherwise start it before the others exist.
    """

    _count = 0
    BLOCK = 512

    def __init__(self, env: Mapping[str, str], channels: int, tools: StreamTools | None = None) -> None:
        self.env = dict(env)
        self.channels = channels
        self.tools = tools or installed_stream_tools()
        Feeder._count += 1
        self.name = f"pwgroup-feed.{os.getpid()}.{Feeder._count}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._signal: np.ndarray | None = None
        self._go = threading.Event()
        self._thread = threading.Thread(target=self._write, daemon=True)

    def start(self) -> list[int]:
        """Start the stream; returns its output port ids in channel order."""
        names = [f"AUX{i}" for i in range(self.channels)]
        # The reconciler leaves links from a probe into member elements alone while it measures.
        props = {"node.name": self.name, "node.autoconnect": False, "media.role": "Test", "pwgroup.role": "probe"}
        self._proc = spawn(
            stdin_playback_argv(names, self.BLOCK, props, self.tools),
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._thread.start()
        graph = _wait_node(self.env, self.name, "out", self.channels)
        node = graph.node_by_name(self.name)
        assert node is not None
        by_channel = {p.channel: p.id for p in graph.ports_of(node.id, "out")}
        return [by_channel[f"AUX{i}"] for i in range(self.channels)]

    def release(self, frames: np.ndarray) -> None:
        """Send `frames` (samples x channels) after the silence so far, then end the stream."""
        self._signal = np.ascontiguousarray(frames, dtype="<f4")
        self._go.set()

    def _write(self) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        pipe = self._proc.stdin
        silence = np.zeros((self.BLOCK, self.channels), dtype="<f4").tobytes()
        try:
            # The pipe paces us: writes block while pw-cat's buffer is full (and while it is not yet linked).
            while not self._go.is_set():
                pipe.write(silence)
            if self._signal is not None:
                pipe.write(self._signal.tobytes())
            pipe.close()
        except (BrokenPipeError, ValueError, OSError):
            pass

    def wait(self, timeout: float = 30.0) -> None:
        """Wait until the released signal has been played out."""
        if self._proc is not None:
            self._proc.wait(timeout)
            self._proc = None

    def stop(self) -> None:
        if self._proc is not None:
            self._go.set()
            self._proc.kill()
            self._proc.wait(5)
            self._proc = None
