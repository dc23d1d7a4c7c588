"""A dashboard fed fixed data with hostile speaker names: what the snapshot tests photograph."""

from __future__ import annotations

from dataclasses import replace

from pwgroup.calibrate.session import MemberResult, Report
from pwgroup.tui.app import PwgroupApp
from pwgroup.tui.state import BLUEZ_GONE, FixedSource, FoundRow, GroupRow, LogLine, MemberRow, Snapshot, SpeakerRow

HOSTILE = [
    "[bold red]Kitchen[/] \x1b[31mred\x1b[0m",
    "Bath\u202eroom\u202c [link=http://x]click[/link]",
    "Patio :smile: [$accent]$x\\n",
    "Plain speaker",
]


def snapshot() -> Snapshot:
    speakers = tuple(
        SpeakerRow(
            key=f"AA:BB:CC:00:00:0{i + 1}",
            name=name,
            address=f"AA:BB:CC:00:00:0{i + 1}",
            connection="audio present" if i != 2 else "disconnected",
            present=i != 2,
            codec="sbc_xq" if i != 2 else None,
            reported_ms=None if i == 3 else 150.0 + 10 * i,
            battery=(80, 12, None, 100)[i],
            groups=("living-room",) if i < 3 else (),
            delay_ms=(12.5, 0.0, None, None)[i],
            measured_ms=(171.5, 184.0, 140.0, None)[i],
            paired=(True, True, True, None)[i],
            trusted=(True, False, True, None)[i],
        )
        for i, name in enumerate(HOSTILE)
    )
    members = (
        MemberRow("living-room", "AA:BB:CC:00:00:01", HOSTILE[0], "playing", True, True, 12.5, 2.5, 12.5),
        MemberRow(
            "living-room", "AA:BB:CC:00:00:02", HOSTILE[1], "playing", True, True, 0.0, 0.0, 0.0, "needs calibration"
        ),
        MemberRow(
            "living-room",
            "AA:BB:CC:00:00:03",
            HOSTILE[2],
            "absent",
            False,
            False,
            40.0,
            -1.0,
            40.0,
            "reconnect: waiting 8 s",
        ),
    )
    # Group editing: volume and channel role per member, the group sink's own volume.
    members = tuple(
        replace(m, volume=v, channels=c, gain=v)
        for m, v, c in zip(members, (0.8, 1.0, 1.2), ("both", "left", "mono"), strict=True)
    )
    groups = (GroupRow("living-room", "Living room", True, True, members, volume=0.7, muted=False),)
    return Snapshot("pipewire", None, speakers, groups, bluetooth=None)


def _trace(reflection_ms: int, level_db: float) -> tuple[float, ...]:
    """An impulse response as the estimator draws it: the arrival 5 ms in, one reflection, a noise floor."""
    out = [-48.0 + (i * 7 % 5) for i in range(60)]
    out[4], out[5], out[6] = -20.0, 0.0, -14.0
    out[5 + reflection_ms] = level_db
    return tuple(out)


def calibration_report() -> Report:
    members = (
        MemberResult("AA:BB:CC:00:00:01", "ok", 212.31, 37.69, 41.2, 0.004, trace=_trace(9, -9.0)),
        MemberResult("AA:BB:CC:00:00:02", "ok", 250.0, 0.0, 35.7, -0.006, trace=_trace(17, -15.0)),
        MemberResult("AA:BB:CC:00:00:03", "absent", None, 40.0, None, None, source=None),
    )
    return Report("living-room", "usb-mic [bold]x[/]", members, 6.2, method="sweep", signal_s=0.5)


def found() -> tuple[FoundRow, ...]:
    """What the scan view hears: two new devices with hostile names, and a room speaker."""
    return (
        FoundRow("AA:BB:CC:10:00:01", HOSTILE[0], -52, True, False, False, False),
        FoundRow("AA:BB:CC:00:00:02", HOSTILE[1], -41, True, True, False, True),
        FoundRow("AA:BB:CC:10:00:02", "Someone's phone [i]x[/i]", -71, False, False, False, False),
        FoundRow("AA:BB:CC:10:00:03", "", None, True, False, False, False),
    )


def make_app(lost: str | None = None, bluetooth_lost: bool = False) -> PwgroupApp:
    lines = [LogLine("warning", f"group living-room: {HOSTILE[2]} went away; the others play on")]
    snap = snapshot()
    if bluetooth_lost:
        snap = replace(snap, bluetooth=BLUEZ_GONE, bluetooth_lost=True)
    source = FixedSource(snap, lines, lost=lost, found=found(), report=calibration_report())
    return PwgroupApp(source, clock=lambda: "12:00:00")


if __name__ == "__main__":
    make_app().run()
