"""What every virtual room shares, whichever server it runs: its speakers and their hidden truth, kept in a state
file so another process (the fake BlueZ, a second test) sees the same room.

A speaker is a Bluetooth one (named like BlueZ's node) or a plain sink named like an ALSA output; both can be pulled.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pwgroup.model import KIND_BLUETOOTH, KIND_SINK, PwgroupError
from pwgroup.sim.server import PrivateServer

RATE = 48000
MODELS = (
    ("JBL Flip 6", "sbc"),
    ("Sony SRS-XB13", "aac"),
    ("Bose SoundLink Flex", "sbc"),
    ("UE BOOM 3", "sbc"),
    ("Anker Soundcore 2", "aac"),
    ("Marshall Emberton II", "sbc_xq"),
    ("Tribit StormBox Micro 2", "sbc"),
    ("Bang & Olufsen Beosound A1", "aptx"),
)
# A sink's name goes into module arguments and process configs: keep to what both parse literally.
_SINK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


@dataclass
class SimSpeaker:
    """One fake speaker; `latency_samples` and `gain` are the room's hidden truth. A Bluetooth one is known by its
    address; a sink (`kind` "sink") by `sink_name`, and its address is empty."""

    index: int
    address: str
    description: str
    codec: str
    latency_samples: int
    gain: float
    reflections: list[tuple[float, float]] = field(default_factory=list)  # (ms after direct, relative gain)
    kind: str = KIND_BLUETOOTH
    sink_name: str = ""
    # Its sink reports a latency and honours a latency offset (Props latencyOffsetNsec) as a bluez5 node does
    # (see room.reporting_speaker_config); off by default.
    reports_latency: bool = False

    @property
    def node_name(self) -> str:
        return self.sink_name or f"bluez_output.{self.address.replace(':', '_')}.1"

    @property
    def key(self) -> str:
        """What pwgroup calls it as a member: the address, or a sink's node name."""
        return self.address or self.node_name

    @property
    def emit_name(self) -> str:
        return f"pwgroup-sim.emit.{self.index}"

    @property
    def link_name(self) -> str:
        """A reporting speaker's inner link: from its sink (a loopback) to its acoustics (the filter-chain)."""
        return f"pwgroup-sim.link.{self.index}"

    @property
    def air_name(self) -> str:
        return f"pwgroup-sim.air.{self.index}"

    @property
    def latency_ms(self) -> float:
        return self.latency_samples * 1000.0 / RATE


class SimRoom:
    """State and speaker bookkeeping; a subclass makes a speaker heard (`_build`) and pulls and returns it
    (`connect`, `disconnect`). `speakers` are the Bluetooth ones, in order; `sinks` the others, kept apart so
    that code walking the room's Bluetooth speakers (the fake BlueZ, the truth channels) sees what it always did."""

    backend = ""
    state_file = "room.json"

    def __init__(self, root: Path, server: PrivateServer) -> None:
        self.root = root
        self.server = server
        self.speakers: list[SimSpeaker] = []
        self.sinks: list[SimSpeaker] = []
        self._load()

    @property
    def env(self) -> dict[str, str]:
        return self.server.env

    # ------------------------------------------------------------ state (test-side API)
    def _load(self) -> None:
        try:
            data = json.loads((self.root / self.state_file).read_text())
        except (OSError, ValueError):
            return
        self.speakers = [SimSpeaker(**s) for s in data.get("speakers", [])]
        self.sinks = [SimSpeaker(**s) for s in data.get("sinks", [])]
        self._load_extra(data)

    def _load_extra(self, data: dict[str, Any]) -> None:
        """What a subclass keeps beside the speakers."""

    def _state(self) -> dict[str, Any]:
        return {"speakers": [asdict(s) for s in self.speakers], "sinks": [asdict(s) for s in self.sinks]}

    def _save(self) -> None:
        tmp = self.root / (self.state_file + ".tmp")
        tmp.write_text(json.dumps(self._state(), indent=1))
        tmp.replace(self.root / self.state_file)

    def _forget_speakers(self) -> None:
        self.speakers, self.sinks = [], []

    @property
    def everyone(self) -> list[SimSpeaker]:
        """Every speaker of the room, Bluetooth or not, by index."""
        return sorted([*self.speakers, *self.sinks], key=lambda s: s.index)

    def speaker(self, key: str) -> SimSpeaker:
        for spk in self.everyone:
            if key in (spk.address, spk.node_name):
                return spk
        raise KeyError(key)

    def hidden_latency_samples(self, key: str) -> int:
        return self.speaker(key).latency_samples

    def _next_index(self) -> int:
        return max((s.index for s in self.everyone), default=0) + 1

    # ------------------------------------------------------------ adding speakers
    def add_speaker(self, description: str, latency_ms: float, gain: float = 0.8) -> SimSpeaker:
        """One more Bluetooth speaker, for tests that need a particular name (a hostile one, say)."""
        index = self._next_index()
        spk = SimSpeaker(
            index=index,
            address=f"AA:BB:CC:00:00:{index:02X}",
            description=description,
            codec=MODELS[(index - 1) % len(MODELS)][1],
            latency_samples=round(latency_ms * RATE / 1000.0),
            gain=gain,
        )
        self._check_room_for(spk)
        self.speakers.append(spk)
        self._save()
        self._build(spk)
        return spk

    def add_sink(
        self, description: str, latency_ms: float, gain: float = 0.8, node_name: str | None = None
    ) -> SimSpeaker:
        """A speaker that is not Bluetooth: a sink named like an ALSA output (a USB, HDMI or analog one), with a
        hidden latency and a truth channel like the Bluetooth ones. Pulled and returned by its node name."""
        index = self._next_index()
        name = node_name or f"alsa_output.pci-0000_00_{index:02x}.0.analog-stereo"
        if not _SINK_NAME_RE.match(name):
            raise PwgroupError(f"a room sink's name takes letters, digits, '.', '_' and '-': {name!r}")
        if any(s.node_name == name for s in self.everyone):
            raise PwgroupError(f"the room has a sink named {name!r} already")
        spk = SimSpeaker(
            index=index,
            address="",
            description=description,
            codec="",
            latency_samples=round(latency_ms * RATE / 1000.0),
            gain=gain,
            kind=KIND_SINK,
            sink_name=name,
        )
        self._check_room_for(spk)
        self.sinks.append(spk)
        self._save()
        self._build(spk)
        return spk

    def _check_room_for(self, spk: SimSpeaker) -> None:
        """Refuse a speaker the room cannot hold (the PulseAudio room has a channel per speaker)."""

    def _build(self, spk: SimSpeaker) -> None:
        raise NotImplementedError

    def connect(self, key: str) -> None:
        raise NotImplementedError

    def disconnect(self, key: str) -> None:
        raise NotImplementedError
