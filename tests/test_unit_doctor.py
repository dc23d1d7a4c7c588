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


def test_wireplumber_05_names_the_lua_rules_it_ignores(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    system = tmp_path / "etc-wireplumber"
    clean = doctor.check_wireplumber(env, (0, 5, 8), [str(system)])
    assert [(c.status, c.detail) for c in clean] == [("ok", "WirePlumber 0.5.8 (SPA-JSON configuration)")]
    (tmp_path / "cfg" / "wireplumber" / "main.lua.d").mkdir(parents=True)  # empty: nothing is lost
    assert doctor.check_wireplumber(env, (0, 5, 8), [str(system)])[0].status == "ok"
    bluetooth = tmp_path / "cfg" / "wireplumber" / "bluetooth.lua.d"
    bluetooth.mkdir()
    (bluetooth / "51-pwgroup-den.lua").write_text("-- rules\n")
    (system / "main.lua.d").mkdir(parents=True)
    (system / "main.lua.d" / "50-alsa.lua").write_text("-- rules\n")
    (check,) = doctor.check_wireplumber(env, (0, 5, 8), [str(system)])
    assert check.status == "problem"
    assert check.detail == (
        f"WirePlumber 0.5.8 ignores Lua configuration, and rules are left in {bluetooth}, {system / 'main.lua.d'}"
    )
    assert check.fix is not None and check.fix.startswith(
        "rewrite them as SPA-JSON in ~/.config/wireplumber/wireplumber.conf.d/*.conf"
    )
    assert f"then remove {bluetooth} and systemctl --user restart wireplumber" in check.fix
    # WirePlumber 0.4 reads those very files: no problem there.
    assert doctor.check_wireplumber(env, (0, 4, 17), [str(system)])[0].status == "ok"


def test_wireplumber_0413_needs_the_fixed_suspend_script(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    (check,) = doctor.check_wireplumber(env, (0, 4, 13), [])
    assert check.status == "problem"
    assert check.detail == "WirePlumber 0.4.13 crashes in suspend-node.lua when an idle node is removed"
    installed = tmp_path / "wireplumber" / "scripts" / "suspend-node.lua"
    assert check.fix == f"install -Dm644 {doctor.SUSPEND_FIX} {installed} && systemctl --user restart wireplumber"
    installed.parent.mkdir(parents=True)
    installed.write_bytes(doctor.SUSPEND_FIX.read_bytes())
    assert doctor.check_wireplumber(env, (0, 4, 13), [])[0].status == "ok"


def test_a_combine_stream_drop_in_on_a_pipewire_too_old_to_compensate(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    conf_d = tmp_path / "pipewire" / "pipewire.conf.d"
    conf_d.mkdir(parents=True)
    (conf_d / "pwgroup-den.conf").write_text("context.modules = [ ] # delay lines\n")
    assert doctor.check_combine_drop_ins(env, (0, 3, 65)) == []
    combine = conf_d / "pwgroup-den.conf"
    combine.write_text("combine.props = { combine.latency-compensate = true }\n")
    (check,) = doctor.check_combine_drop_ins(env, (0, 3, 65))
    assert check.status == "problem" and check.detail == (
        "pwgroup-den.conf: combine-stream on PipeWire 0.3.65 has no latency compensation (needs 0.3.71): "
        "every member plays undelayed"
    )
    assert check.fix is not None
    assert check.fix.startswith("pwgroup export-conf NAME --pipewire-version 0.3.65 --output ~/.config")
    assert f"remove {combine}" in check.fix and "bookworm-backports" in check.fix
    assert doctor.check_combine_drop_ins(env, (1, 4, 2)) == []


def test_the_running_versions_are_named() -> None:
    g = Graph()
    g.core_version = "1.4.2"
    g.clients[40] = {"application.name": "WirePlumber"}
    assert doctor.running_versions(g, (0, 5, 8))[0].detail == "PipeWire 1.4.2 (the server running), WirePlumber 0.5.8"
    g.clients[40] = {"application.name": "pipewire-media-session", "application.version": "0.4.2"}
    assert doctor.running_versions(g, None)[0].detail.endswith("pipewire-media-session 0.4.2")
    assert doctor.running_versions(Graph(), None)[0].detail == "PipeWire ? (the server running), no session manager"
    assert doctor.running_versions(None, None) == []
