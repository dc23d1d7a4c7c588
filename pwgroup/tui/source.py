"""What the dashboard listens to and where its edits go: the updates a source publishes, the Source protocol, and
FixedSource (one snapshot, edits recorded) for snapshot tests and screenshots. Without Textual."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pwgroup.model import PwgroupError
from pwgroup.tui.view import FoundRow, Snapshot


@dataclass(frozen=True)
class StateUpdate:
    snapshot: Snapshot


@dataclass(frozen=True)
class ServerLost:
    reason: str


@dataclass(frozen=True)
class LogLine:
    level: str  # info | warning | error
    text: str


Update = StateUpdate | ServerLost | LogLine
Publish = Callable[[Update], None]
Progress = Callable[[str, float], None]  # a calibration's step, and the fraction done


class Source(Protocol):
    """Where the dashboard's data comes from and where its edits go: the live room, or fixed data in tests."""

    async def run(self, publish: Publish) -> None: ...

    async def create_group(self, name: str, speakers: Sequence[str]) -> None: ...

    async def delete_group(self, name: str) -> None: ...

    async def trim(self, group: str, speaker: str, delta_ms: float) -> float | None: ...

    async def bluetooth(self, action: str, address: str) -> None: ...

    async def close(self) -> None: ...

    async def calibrate(self, group: str, progress: Progress, method: str | None = None) -> Any: ...

    async def end_calibration(self, group: str, keep: bool) -> None: ...
    async def member_volume(self, group: str, speaker: str, delta: float) -> float | None: ...

    async def cycle_channels(self, group: str, speaker: str) -> str | None: ...

    async def group_volume(self, group: str, delta: float) -> float | None: ...

    async def group_mute(self, group: str) -> bool | None: ...

    async def rename_group(self, group: str, description: str) -> bool: ...

    async def add_member(self, group: str, speaker: str) -> None: ...

    async def remove_member(self, group: str, speaker: str) -> None: ...
    async def scan(self, publish: Callable[[tuple[FoundRow, ...]], None]) -> None: ...

    async def pair(self, address: str) -> None: ...


@dataclass
class FixedSource:
    """Shows one snapshot and refuses edits: for snapshot tests and screenshots."""

    snapshot: Snapshot
    lines: Sequence[LogLine] = ()
    lost: str | None = None
    edits: list[tuple[Any, ...]] = field(default_factory=list)
    report: Any = None  # what calibrate returns (a calibrate.session.Report)
    found: tuple[FoundRow, ...] = ()  # what its scan view finds

    async def run(self, publish: Publish) -> None:
        publish(StateUpdate(self.snapshot))
        for line in self.lines:
            publish(line)
        if self.lost:
            publish(ServerLost(self.lost))

    async def create_group(self, name: str, speakers: Sequence[str]) -> None:
        self.edits.append(("create", name, tuple(speakers)))

    async def delete_group(self, name: str) -> None:
        self.edits.append(("delete", name))

    async def trim(self, group: str, speaker: str, delta_ms: float) -> float | None:
        self.edits.append(("trim", group, speaker, delta_ms))
        return None

    async def bluetooth(self, action: str, address: str) -> None:
        self.edits.append((action, address))

    async def close(self) -> None:
        pass

    async def calibrate(self, group: str, progress: Progress, method: str | None = None) -> Any:
        self.edits.append(("calibrate", group, method))
        if self.report is None:
            raise PwgroupError("no microphone found: connect one")
        progress("measuring", 0.5)
        return self.report

    async def end_calibration(self, group: str, keep: bool) -> None:
        self.edits.append(("end calibration", group, keep))

    async def member_volume(self, group: str, speaker: str, delta: float) -> float | None:
        self.edits.append(("volume", group, speaker, delta))
        return None

    async def cycle_channels(self, group: str, speaker: str) -> str | None:
        self.edits.append(("channels", group, speaker))
        return None

    async def group_volume(self, group: str, delta: float) -> float | None:
        self.edits.append(("group-volume", group, delta))
        return None

    async def group_mute(self, group: str) -> bool | None:
        self.edits.append(("mute", group))
        return True

    async def rename_group(self, group: str, description: str) -> bool:
        self.edits.append(("rename", group, description))
        return True

    async def add_member(self, group: str, speaker: str) -> None:
        self.edits.append(("add", group, speaker))

    async def remove_member(self, group: str, speaker: str) -> None:
        self.edits.append(("remove", group, speaker))

    async def scan(self, publish: Callable[[tuple[FoundRow, ...]], None]) -> None:
        self.edits.append(("scan",))
        publish(self.found)

    async def pair(self, address: str) -> None:
        self.edits.append(("pair", address))
