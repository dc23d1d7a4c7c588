"""The sound-server room: one Backend protocol, the only door to a sound server, and its adapters: PipeWire
(pw-dump/pw-cli/pw-link) and PulseAudio (pulsectl-asyncio).

Backends turn actions into server calls and report the observed Graph; they never decide what should exist. What
differs between servers and versions is in the Capabilities a backend fills when it opens: callers read those and
never ask which backend they hold.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

# Member kinds a backend can play a group to (see model: a member is a target the backend resolves).
from pwgroup.model import KIND_BLUETOOTH, KIND_SINK, Graph, GroupSpec, MemberSpec

if TYPE_CHECKING:  # numpy loads only where audio is measured, not for every command
    import numpy as np

# Known bugs worked around, as `doctor` and `status` say them.
SUSPEND_CRASH = (
    "WirePlumber before 0.4.15 crashes when a node it was about to suspend is destroyed: "
    "group sinks are never armed for suspend"
)
QUANTUM_SKIP = (
    "PipeWire 1.x skips a quantum of the audio a delay line holds when the graph's quantum changes: "
    "members lock the quantum while they run (apps get the group's quantum meanwhile)"
)


# PipeWire's stream tools changed their arguments in 1.3.81 (pw-cat's streaming rework): from then on pw-cat reads
# stdin through libsndfile unless given --raw, and parses --channel-map as a SPA-JSON array, rejecting the comma
# list of 3 or 5 channels that 0.3.65 needs (and 0.3.65 rejects the array form).
STREAM_TOOLS_REWORK = (1, 3, 81)


@dataclass(frozen=True)
class StreamTools:
    """How the installed pw-cat and pw-record take their arguments (they are client tools: their own version
    decides, which is the server's where both come from one distribution)."""

    version: tuple[int, int, int] | None = None  # libpipewire the tools are linked with; None: not known

    @property
    def reworked(self) -> bool:
        return self.version is not None and self.version >= STREAM_TOOLS_REWORK

    def channel_map(self, names: Sequence[str]) -> str:
        """`--channel-map`'s value for these channel names, in the form this pw-cat parses."""
        return f"[ {' '.join(names)} ]" if self.reworked else ",".join(names)

    def raw_stdin(self) -> list[str]:
        """The arguments that make pw-cat read raw samples (not a sound file) from its stdin."""
        return ["--raw"] if self.reworked else []


# What bluez5 reports as a speaker's transport delay when the speaker sends no delay report, by codec
# (spa/plugins/bluez5/bluez5-dbus.c, spa_bt_transport_get_delay_nsec): 1.2 lowered the A2DP ones to 125 ms.
BLUEZ_FALLBACK_CHANGED = (1, 2, 0)
_FALLBACK_LOW_LATENCY = {"aptx_ll": 40.0, "aptx_ll_duplex": 40.0, "faststream": 40.0, "faststream_duplex": 40.0}
BLUEZ_FALLBACK_OLD = {"sbc": 200.0, "sbc_xq": 200.0, "mpeg": 200.0, "aac": 200.0, "aptx": 150.0, "aptx_hd": 150.0}
BLUEZ_FALLBACK_OLD |= {"ldac": 175.0, **_FALLBACK_LOW_LATENCY}
BLUEZ_FALLBACK_NEW = dict.fromkeys(("sbc", "sbc_xq", "mpeg", "aac", "aptx", "aptx_hd", "ldac"), 125.0)
BLUEZ_FALLBACK_NEW |= {"aac_eld": 40.0, "lc3": 40.0, **_FALLBACK_LOW_LATENCY}


def bluez_fallback_ms(server_version: tuple[int, int, int] | None) -> dict[str, float]:
    """bluez5's fallback transport delay by codec at this PipeWire version (the older table when unknown)."""
    new = server_version is not None and server_version >= BLUEZ_FALLBACK_CHANGED
    return dict(BLUEZ_FALLBACK_NEW if new else BLUEZ_FALLBACK_OLD)


def no_member_gain(server: str) -> str:
    """Why a member's volume or channel role is refused on a server without `member_gain`, in one line."""
    return (
        f"member volume and channel roles need PipeWire for now: on {server} each member is a module-loopback, "
        "which has no per-member gain or remix pwgroup can set; the group's own volume works"
    )


def parse_version(text: object) -> tuple[int, int, int] | None:
    """The first dotted version in `text`: "0.3.65", "1.0.5-1ubuntu2", "libwireplumber 0.4.13" -> (0, 4, 13);
    a missing patch counts as 0; None when `text` holds no version."""
    if not isinstance(text, str):
        return None
    found = re.search(r"(?<![\d.])(\d+)\.(\d+)(?:\.(\d+))?", text)
    if found is None:
        return None
    major, minor, patch = found.groups()
    return int(major), int(minor), int(patch or 0)


@dataclass(frozen=True)
class Capabilities:
    """What one sound server, at its version, can do for pwgroup: filled by the backend when it opens."""

    server: str  # as users know it: "PipeWire", "PulseAudio"
    server_version: str | None = None
    session_manager: str | None = None  # "WirePlumber" (None where the server has none)
    session_manager_version: str | None = None
    calibrate: bool = False  # can play test signals and record the microphone on one timeline
    member_gain: bool = False  # a member's volume and channel role are applied (not only saved)
    rename_when_idle: bool = False  # the graph shows apps' streams, so a sink can be made again while none plays
    glitch_free_delay: bool = False  # a delay change while playing skips and repeats nothing
    member_kinds: frozenset[str] = field(default_factory=lambda: frozenset({KIND_BLUETOOTH, KIND_SINK}))
    # How much longer than an ordinary pass a change may take to apply well (PulseAudio: a joining line settles).
    settle_budget_s: float = 0.0
    # Known bugs of this version that pwgroup works around: one line each, as `doctor` and `status` say them.
    workarounds: tuple[str, ...] = ()
    stream_tools: StreamTools = field(default_factory=StreamTools)  # pw-cat/pw-record's argument dialect
    # The transport delay bluez5 reports, by codec, for a speaker that sends no delay report (a guess, not news).
    bluez_fallback_ms: Mapping[str, float] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """The server and its session manager with their versions, as a log line says them."""
        parts = [" ".join(x for x in (self.server, self.server_version) if x)]
        if self.session_manager:
            parts.append(" ".join(x for x in (self.session_manager, self.session_manager_version) if x))
        return ", ".join(parts)

    def as_dict(self) -> dict[str, object]:
        return {
            "server": self.server,
            "server_version": self.server_version,
            "session_manager": self.session_manager,
            "session_manager_version": self.session_manager_version,
            "calibrate": self.calibrate,
            "member_gain": self.member_gain,
            "rename_when_idle": self.rename_when_idle,
            "glitch_free_delay": self.glitch_free_delay,
            "member_kinds": sorted(self.member_kinds),
            "settle_budget_s": self.settle_budget_s,
            "workarounds": list(self.workarounds),
            "stream_tools": ".".join(map(str, self.stream_tools.version)) if self.stream_tools.version else None,
        }


class Backend(Protocol):
    name: str  # "pipewire" | "pulse": for display and --json only; decide by `capabilities`

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def env(self) -> Mapping[str, str]:
        """The environment the backend reaches its server with (and the session's runtime dir)."""
        ...

    @property
    def graph(self) -> Graph: ...

    async def refresh(self) -> Graph: ...

    @property
    def alive(self) -> bool: ...

    @property
    def serial(self) -> int: ...

    async def wait_changed(self, timeout: float, since: int | None = None) -> bool: ...

    async def settle(self, quiet: float = 0.05, timeout: float = 2.0) -> None: ...

    async def create_sink(self, group: GroupSpec) -> None: ...

    async def destroy_node(self, node_id: int) -> None: ...

    async def start_member(self, group: str, member: MemberSpec) -> None: ...

    async def stop_member(self, group: str, speaker: str, pid: int | None, node_ids: tuple[int, ...]) -> None: ...

    async def link(self, out_port: int, in_port: int) -> None: ...

    async def unlink(self, link_id: int) -> None: ...

    async def set_delay(self, node_id: int, delay_ms: float, at_once: bool = False) -> None: ...

    async def set_gain(self, node_id: int, gain: float) -> None: ...

    async def set_sink_volume(self, node_id: int, volume: float) -> None: ...

    async def set_sink_mute(self, node_id: int, mute: bool) -> None: ...

    # ---- measuring (calibration): the only audio that passes through pwgroup, in memory

    async def play_and_record(self, sink_id: int, signal: np.ndarray, record: Sequence[int]) -> np.ndarray:
        """Play the mono `signal` on every channel of sink node `sink_id` while recording the output ports
        `record` in one stream, so all of them share one timeline. The recording starts before the signal and
        ends after it has played out; returns samples x len(record). Needs `capabilities.calibrate`."""
        ...

    async def feed_and_record(
        self, probes: np.ndarray, into: Sequence[Sequence[int]], record: Sequence[int]
    ) -> np.ndarray:
        """Stream `probes` (samples x N) as N channels, channel i linked into the input ports `into[i]`, while
        recording the output ports `record` and the N channels as they were fed, in one stream: returns samples x
        (len(record) + N). The probes start only once every link is in place, and leave nothing in the graph.
        Needs `capabilities.calibrate`."""
        ...

    async def close(self) -> None: ...


async def wait_next_change(changed: asyncio.Event, serial: int, since: int | None, timeout: float) -> bool:
    """What both backends' `wait_changed` do: with `since` (a serial), a change already seen after it returns
    at once; otherwise wait for the next one, up to `timeout`."""
    if since is not None and serial != since:
        return True
    changed.clear()
    try:
        await asyncio.wait_for(changed.wait(), timeout)
    except TimeoutError:
        return False
    return True
