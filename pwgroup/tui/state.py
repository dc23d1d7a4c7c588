"""The dashboard's data layer in one import, without Textual: the view (tui.view), what a source publishes and
the Source protocol (tui.source), and the live room (tui.live, built from tui.server, tui.bluetooth,
tui.keeper, tui.editing and tui.calibration)."""

from __future__ import annotations

from pwgroup.tui.bluetooth import BT_RETRY_S, PAIR_FIND_S, BluetoothLink
from pwgroup.tui.live import POLL_S, LiveSource
from pwgroup.tui.server import RETRY_S, OpenBackend, ServerLink
from pwgroup.tui.source import FixedSource, LogLine, Progress, Publish, ServerLost, Source, StateUpdate, Update
from pwgroup.tui.view import (
    BLUEZ_GONE,
    FoundRow,
    GroupRow,
    MemberRow,
    Snapshot,
    SpeakerRow,
    banner_lines,
    build_snapshot,
    events_between,
    found_rows,
    measured_latency,
    now_text,
    pairing_text,
)

__all__ = [
    "BLUEZ_GONE",
    "BT_RETRY_S",
    "PAIR_FIND_S",
    "POLL_S",
    "RETRY_S",
    "BluetoothLink",
    "FixedSource",
    "FoundRow",
    "GroupRow",
    "LiveSource",
    "LogLine",
    "MemberRow",
    "OpenBackend",
    "Progress",
    "Publish",
    "ServerLink",
    "ServerLost",
    "Snapshot",
    "Source",
    "SpeakerRow",
    "StateUpdate",
    "Update",
    "banner_lines",
    "build_snapshot",
    "events_between",
    "found_rows",
    "measured_latency",
    "now_text",
    "pairing_text",
]
