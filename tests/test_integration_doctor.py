"""`pwgroup doctor` against the room: a running private PipeWire with WirePlumber, pipewire-pulse and BlueZ."""

from __future__ import annotations

import glob
import json

import pytest

from pwgroup.graph.proc import linked_version

pytestmark = pytest.mark.integration


def test_doctor_sees_the_rooms_session(cli, room) -> None:  # type: ignore[no-untyped-def]
    code, out, err = cli("doctor", "--json")
    data = json.loads(out)
    checks = {c["name"]: c for c in data["checks"]}
    for name in ("pipewire", "pipewire running", "wireplumber running", "pipewire-pulse running", "bluez", "quantum"):
        assert checks[name]["status"] == "ok", checks[name]
    assert checks["adapters"]["status"] == "ok"  # the fake BlueZ's adapter is powered
    pipewire, wireplumber = linked_version("pipewire", "pipewire"), linked_version("wireplumber", "wireplumber")
    assert pipewire is not None and wireplumber is not None
    shown = ".".join(map(str, wireplumber))
    assert checks["versions"]["detail"].startswith(f"PipeWire {'.'.join(map(str, pipewire))} (the server running)")
    assert checks["versions"]["detail"].endswith(f"WirePlumber {shown}")
    if wireplumber == (0, 4, 13):  # the room's WirePlumber runs pwgroup's fixed script from the room's config home
        assert checks["wireplumber"]["status"] == "ok" and "fixed suspend-node.lua" in checks["wireplumber"]["detail"]
    else:  # 0.5 (Debian 13): the room leaves no Lua configuration behind
        assert checks["wireplumber"] == {
            "name": "wireplumber",
            "status": "ok",
            "detail": f"WirePlumber {shown} (SPA-JSON configuration)",
            "fix": None,
        }
    compensates = "yes" if pipewire >= (0, 3, 71) else "no (needs 0.3.71)"
    assert f"combine-stream with latency compensation: {compensates}" in checks["mechanisms"]["detail"]
    assert checks["quantum"]["detail"].startswith("rate 48000 Hz")
    plugin = bool(glob.glob("/usr/lib/*/spa-0.2/bluez5/libspa-bluez5.so"))
    assert checks["bluetooth plugin"]["status"] == ("ok" if plugin else "problem")
    problems = [c for c in data["checks"] if c["status"] == "problem"]
    assert code == (1 if problems else 0) and data["healthy"] is (not problems)
    assert err == ""
