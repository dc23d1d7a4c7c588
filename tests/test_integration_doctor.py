"""`pwgroup doctor` against the room: a running private PipeWire with WirePlumber, pipewire-pulse and BlueZ."""

from __future__ import annotations

import glob
import json

import pytest

pytestmark = pytest.mark.integration


def test_doctor_sees_the_rooms_session(cli, room) -> None:  # type: ignore[no-untyped-def]
    code, out, err = cli("doctor", "--json")
    data = json.loads(out)
    checks = {c["name"]: c for c in data["checks"]}
    for name in ("pipewire", "pipewire running", "wireplumber running", "pipewire-pulse running", "bluez", "quantum"):
        assert checks[name]["status"] == "ok", checks[name]
    assert checks["adapters"]["status"] == "ok"  # the fake BlueZ's adapter is powered
    # The room's WirePlumber runs pwgroup's fixed script from the room's config home.
    assert checks["wireplumber"]["status"] == "ok" and "fixed suspend-node.lua" in checks["wireplumber"]["detail"]
    assert "combine-stream with latency compensation: no (needs 0.3.71)" in checks["mechanisms"]["detail"]
    assert checks["quantum"]["detail"].startswith("rate 48000 Hz")
    plugin = bool(glob.glob("/usr/lib/*/spa-0.2/bluez5/libspa-bluez5.so"))
    assert checks["bluetooth plugin"]["status"] == ("ok" if plugin else "problem")
    problems = [c for c in data["checks"] if c["status"] == "problem"]
    assert code == (1 if problems else 0) and data["healthy"] is (not problems)
    assert err == ""
