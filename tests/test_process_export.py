"""The drop-ins `pwgroup export-conf` renders, run by what reads them: Lua 5.4 loads the WirePlumber rules and runs
the offsets script against stand-ins of WirePlumber's API, and the command writes them under --output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_unit_export import GROUP

from pwgroup import export

pytestmark = pytest.mark.process


def _lua() -> str:
    lua = shutil.which("lua5.4")
    if lua is None:
        pytest.fail("lua5.4 is not installed: run 'make setup' (see README)")
    return lua


# Stand-ins for what WirePlumber (0.4 and 0.5 alike) gives a script: an ObjectManager that announces one node of
# each name the test lists, and nodes that print the Props they are given.
WP_STANDINS = """
local present = { "bluez_output.AA_BB_CC_00_00_01.1", "bluez_output.AA_BB_CC_00_00_02.1",
                  "bluez_output.weird-node", "bluez_output.AA_BB_CC_00_00_09.1" }
function Constraint(t) return t end
function Interest(t) return t end
Pod = { Object = function(t) return t end }
function ObjectManager(spec)
  local c = spec[1][1]  -- ObjectManager { Interest { type, Constraint { key, verb, value } } }
  local om = { handlers = {} }
  function om:connect(signal, f) self.handlers[signal] = f end
  function om:activate()
    for _, name in ipairs(present) do
      local hit = (c[2] == "equals" and name == c[3])
        or (c[2] == "matches" and name:match("^" .. c[3]:gsub("%.", "%%."):gsub("%*", ".*") .. "$"))
      if hit then
        local node = {}
        function node:set_param(id, pod) print(name .. " " .. id .. " " .. pod[1] .. " " .. pod.latencyOffsetNsec) end
        self.handlers["object-added"](self, node)
      end
    end
  end
  return om
end
"""


def test_offsets_script_sets_each_members_offset_as_its_node_appears(tmp_path: Path) -> None:
    # combine-stream delays each stream by (largest reported latency) - (its own): with equal reports,
    # an offset of (largest delay - member's delay) leaves each member delayed by its own delay.
    offsets = export.latency_offsets_us(GROUP)
    assert offsets == {"AA:BB:CC:00:00:01": 120000, "AA:BB:CC:00:00:02": 80500, "bluez_output.weird-node": 0}
    script = tmp_path / "offsets.lua"
    script.write_text(export.render_offsets_script(GROUP))
    proc = subprocess.run(
        [_lua(), "-e", WP_STANDINS, "-e", f"dofile({str(script)!r})"], capture_output=True, text=True, timeout=10
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "bluez_output.AA_BB_CC_00_00_01.1 Props Spa:Pod:Object:Param:Props 120000000",
        "bluez_output.AA_BB_CC_00_00_02.1 Props Spa:Pod:Object:Param:Props 80500000",
        "bluez_output.weird-node Props Spa:Pod:Object:Param:Props 0",
    ]


def test_cli_export_conf_writes_under_output(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'version = 1\n[groups.den]\ndescription = "Den"\n'
        '[[groups.den.members]]\naddress = "AA:BB:CC:00:00:05"\ndelay_ms = 12.5\n'
    )
    run = [sys.executable, "-m", "pwgroup", "export-conf"]
    proc = subprocess.run(
        [*run, "den", "--config", str(config), "--pipewire-version", "0.3.65", "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    conf = (tmp_path / "out" / "pipewire" / "pipewire.conf.d" / "pwgroup-den.conf").read_text()
    assert '"node.name" = "pwgroup.den"' in conf
    assert (tmp_path / "out" / "wireplumber" / "bluetooth.lua.d" / "51-pwgroup-den.lua").exists()
    proc = subprocess.run([*run, "nope", "--config", str(config)], capture_output=True, text=True)
    assert proc.returncode == 2 and "no group named 'nope'" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [*run, "den", "--config", str(config), "--pipewire-version", "x"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "0.3.65" in proc.stderr


def test_wireplumber_rules_run_in_lua(tmp_path: Path) -> None:
    """WirePlumber 0.4 runs its config in Lua 5.4: the rules load and say what they should."""
    lua = _lua()
    path = tmp_path / "51-pwgroup-living.lua"
    path.write_text(export.render_wireplumber_rules(GROUP))
    probe = (
        "for _, r in ipairs(bluez_monitor.rules) do local m = r.matches[1][1]; "
        "local keys = {}; for k, v in pairs(r.apply_properties) do keys[#keys + 1] = k .. '=' .. tostring(v) end; "
        "table.sort(keys); print(m[1] .. ' ' .. m[2] .. ' ' .. m[3] .. ' ' .. table.concat(keys, ',')) end"
    )
    proc = subprocess.run(
        [
            lua,
            "-e",
            "bluez_monitor = { rules = { 'system rules' } }",
            "-e",
            f"dofile({str(path)!r})",
            "-e",
            "table.remove(bluez_monitor.rules, 1)",
            "-e",
            probe,
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "device.name equals bluez_card.AA_BB_CC_00_00_01 bluez5.auto-connect=[ a2dp_sink ],device.profile=a2dp-sink",
        "node.name matches bluez_output.AA_BB_CC_00_00_01.* node.pause-on-idle=false,session.suspend-timeout-seconds=0",
        "device.name equals bluez_card.AA_BB_CC_00_00_02 bluez5.auto-connect=[ a2dp_sink ],device.profile=a2dp-sink",
        "node.name matches bluez_output.AA_BB_CC_00_00_02.* node.pause-on-idle=false,session.suspend-timeout-seconds=0",
    ]


def test_cli_export_conf_for_wireplumber_05_needs_a_data_home(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'version = 1\n[groups.den]\ndescription = "Den"\n'
        '[[groups.den.members]]\naddress = "AA:BB:CC:00:00:05"\ndelay_ms = 12.5\n'
    )
    run = [sys.executable, "-m", "pwgroup", "export-conf", "den", "--config", str(config)]
    run += ["--pipewire-version", "1.4.2", "--wireplumber-version", "0.5.8", "--output", str(tmp_path / "out")]
    proc = subprocess.run(run, capture_output=True, text=True)
    assert proc.returncode == 2 and "--data-output" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing half written
    proc = subprocess.run([*run, "--data-output", str(tmp_path / "share")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "share" / "wireplumber" / "scripts" / "pwgroup-den-offsets.lua").exists()
    assert (tmp_path / "out" / "wireplumber" / "wireplumber.conf.d" / "51-pwgroup-den.conf").exists()
    assert not (tmp_path / "out" / "wireplumber" / "bluetooth.lua.d").exists()  # 0.5 reads no Lua config
    # Into the config home itself: the script goes to the data home, as WirePlumber 0.5 looks for it.
    env = {**os.environ, "HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": "", "XDG_DATA_HOME": ""}
    home_run = [*run[:-1], str(tmp_path / "home" / ".config")]
    proc = subprocess.run(home_run, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "home" / ".local/share/wireplumber/scripts/pwgroup-den-offsets.lua").exists()
    proc = subprocess.run(
        [*run[:-6], "--pipewire-version", "1.0.1", "--wireplumber-version", "0.5"], text=True, capture_output=True
    )
    assert proc.returncode == 2 and "needs PipeWire 1.0.2" in proc.stderr
