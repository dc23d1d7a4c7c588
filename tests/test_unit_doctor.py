"""`pwgroup doctor`'s checks on their own (no server): each problem with a fix and the exit code (a new user's
machine with no PipeWire, no system bus and no configuration: tests/test_process_cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

from pwgroup import doctor
from pwgroup.model import Graph

EMPTY_GRAPH = Graph()


def test_exit_code_says_whether_anything_is_wrong(capsys) -> None:  # type: ignore[no-untyped-def]
    fine = [doctor.Check("pipewire", "ok", "0.3.65"), doctor.Check("codecs", "info", "sbc")]
    assert doctor.report(fine) == 0
    assert "healthy" in capsys.readouterr().out
    bad = [*fine, doctor.Check("bluez", "problem", "not running", "sudo systemctl enable --now bluetooth")]
    assert doctor.report(bad, as_json=True) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["healthy"] is False and data["checks"][2]["fix"] == "sudo systemctl enable --now bluetooth"


def test_plugin_and_codecs_found_where_pipewire_looks(tmp_path: Path) -> None:
    missing = doctor.check_plugin({"SPA_PLUGIN_DIR": str(tmp_path)})
    assert missing[0].status == "problem" and "libspa-0.2-bluetooth" in (missing[0].fix or "")
    (tmp_path / "bluez5").mkdir()
    for name in ("libspa-bluez5.so", "libspa-codec-bluez5-sbc.so", "libspa-codec-bluez5-aac.so"):
        (tmp_path / "bluez5" / name).touch()
    found = doctor.check_plugin({"SPA_PLUGIN_DIR": str(tmp_path)})
    assert found[0].status == "ok" and found[1].detail.endswith("aac, sbc")


def test_small_quantum_is_a_problem_with_its_fix() -> None:
    g = Graph()
    g.settings.update({"clock.rate": 48000, "clock.quantum": 1024, "clock.force-quantum": 128})
    check = doctor.check_graph_settings(g)[0]
    assert check.status == "problem" and check.fix == "pw-metadata -n settings 0 clock.force-quantum 0"
    g.settings["clock.force-quantum"] = 0
    assert doctor.check_graph_settings(g)[0].status == "ok"
    assert doctor.check_graph_settings(None)[0].status == "skipped"


def test_config_errors_and_a_missing_daemon(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    path = tmp_path / "cfg" / "pwgroup" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text('version = 1\n[groups.den]\n[[groups.den.members]]\naddress = "AA:BB:CC:00:00:01"\ndelay_ms = -4\n')
    checks = {c.name: c for c in doctor.check_config_and_daemon(env)}
    assert (
        checks["config"].status == "problem" and f"{path}:5: groups.den.members[0].delay_ms" in checks["config"].detail
    )
    path.write_text('version = 1\n[groups.den]\n[[groups.den.members]]\naddress = "AA:BB:CC:00:00:01"\n')
    checks = {c.name: c for c in doctor.check_config_and_daemon(env)}
    assert checks["config"].status == "ok"
    assert checks["daemon"].status == "problem" and "pwgroup service install" in (checks["daemon"].fix or "")
    conf_d = tmp_path / "cfg" / "pipewire" / "pipewire.conf.d"
    conf_d.mkdir(parents=True)
    (conf_d / "pwgroup-den.conf").touch()  # the group comes from a drop-in instead: no daemon needed
    assert {c.name: c for c in doctor.check_config_and_daemon(env)}["daemon"].status == "info"


def test_no_login_session_is_named() -> None:
    checks = doctor.check_session(None, "cannot reach PipeWire", {"HOME": "/home/x"})
    assert checks[0].detail.startswith("XDG_RUNTIME_DIR is not set")
    assert (checks[0].fix or "").startswith("log in through a desktop or `loginctl enable-linger $USER`")
