"""The drop-ins `pwgroup export-conf` renders: which mechanism for which PipeWire, the delays and channel roles
they carry, and no speaker name in any of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pwgroup import export
from pwgroup.config import GroupConfig, MemberConfig
from pwgroup.graph import layout, spajson
from pwgroup.model import UserError

HOSTILE = 'Evil" } ] context.modules = [ { name = libpipewire-module-x } ] # \n'
GROUP = GroupConfig(
    "living",
    HOSTILE,
    (
        MemberConfig("AA:BB:CC:00:00:01", 0.0),
        MemberConfig("AA:BB:CC:00:00:02", 37.5, trim_ms=2.0, channels="left", volume=0.5),
        MemberConfig("bluez_output.weird-node", 120.0, channels="mono"),
    ),
)


def test_version_picks_the_mechanism() -> None:
    old = export.render(GROUP, export.parse_version("0.3.65"))
    new = export.render(GROUP, export.parse_version("0.3.71"))
    assert "libpipewire-module-filter-chain" in old["pipewire/pipewire.conf.d/pwgroup-living.conf"]
    assert "combine-stream" not in old["pipewire/pipewire.conf.d/pwgroup-living.conf"]
    conf = new["pipewire/pipewire.conf.d/pwgroup-living.conf"]
    assert "libpipewire-module-combine-stream" in conf
    assert '"combine.latency-compensate" = true' in conf
    # Every member by node name: combine-stream never matches api.bluez5.address (it made no stream on 1.4.2).
    assert "api.bluez5.address" not in conf
    assert '"node.name" = "bluez_output.AA_BB_CC_00_00_02.1"' in conf
    assert '"node.name" = "bluez_output.weird-node"' in conf  # a member that is not Bluetooth, by node name
    assert set(old) == {
        "pipewire/pipewire.conf.d/pwgroup-living.conf",
        "wireplumber/bluetooth.lua.d/51-pwgroup-living.lua",
    }
    # 0.3.71 pairs with WirePlumber 0.4: Lua rules, the offsets script in the config home, loaded from main.lua.d.
    assert set(new) == {
        "pipewire/pipewire.conf.d/pwgroup-living.conf",
        "wireplumber/bluetooth.lua.d/51-pwgroup-living.lua",
        "wireplumber/main.lua.d/51-pwgroup-living.lua",
        "wireplumber/scripts/pwgroup-living-offsets.lua",
    }
    assert 'load_script("pwgroup-living-offsets.lua")' in new["wireplumber/main.lua.d/51-pwgroup-living.lua"]
    with pytest.raises(UserError):
        export.render(GROUP, (0, 3, 48))
    with pytest.raises(UserError):
        export.parse_version("latest")


def test_wireplumber_05_gets_spa_json_and_a_data_home_script() -> None:
    files = export.render(GROUP, (1, 4, 2))  # Debian 13's PipeWire: WirePlumber 0.5 unless told otherwise
    assert set(files) == {
        "pipewire/pipewire.conf.d/pwgroup-living.conf",
        "wireplumber/wireplumber.conf.d/51-pwgroup-living.conf",
        "XDG_DATA_HOME/wireplumber/scripts/pwgroup-living-offsets.lua",
    }
    assert not any(k.endswith(".lua") and not k.startswith(export.DATA_HOME) for k in files)  # 0.5 reads no Lua config
    conf = files["wireplumber/wireplumber.conf.d/51-pwgroup-living.conf"]
    assert '"node.name" = "~bluez_output.AA_BB_CC_00_00_02.*"' in conf
    assert '"device.name" = "bluez_card.AA_BB_CC_00_00_01"' in conf
    assert '"name" = "pwgroup-living-offsets.lua"' in conf and '"type" = "script/lua"' in conf
    assert '"custom.pwgroup-living-offsets" = "required"' in conf
    assert "weird" not in conf  # the sink member gets no Bluetooth rule
    # Ubuntu 24.04's 1.0.5 ships with WirePlumber 0.4; 0.5 on a PipeWire older than 1.0.2 is refused.
    assert "wireplumber/main.lua.d/51-pwgroup-living.lua" in export.render(GROUP, (1, 0, 5))
    assert export.pick_wireplumber((1, 0, 5), None, None) < export.WIREPLUMBER_05
    assert export.pick_wireplumber((1, 0, 5), "0.5.1", None) == (0, 5, 1)
    assert export.pick_wireplumber((1, 4, 2), None, (0, 4, 17)) == (0, 4, 17)
    with pytest.raises(UserError, match=r"needs PipeWire 1\.0\.2"):
        export.pick_wireplumber((1, 0, 1), "0.5", None)
    with pytest.raises(UserError, match="invalid WirePlumber version"):
        export.pick_wireplumber((1, 4, 2), "five", None)


def test_offsets_script_sets_each_members_offset_by_node_name() -> None:
    lua = export.render_offsets_script(GROUP)
    assert '{ "matches", "bluez_output.AA_BB_CC_00_00_01.*", 120000000 },' in lua
    assert '{ "matches", "bluez_output.AA_BB_CC_00_00_02.*", 80500000 },' in lua
    assert '{ "equals", "bluez_output.weird-node", 0 },' in lua
    assert "latencyOffsetNsec = nsec" in lua and "Evil" not in lua


def test_lua_strings_escape_anything_but_plain_tokens() -> None:
    assert export._lua_quote("bluez_output.AA_BB.*") == '"bluez_output.AA_BB.*"'
    quoted = export._lua_quote('x" ) os.execute("rm") --\n')
    assert quoted.count('"') == 2 and "\n" not in quoted and "(" not in quoted
    assert quoted == '"x\\034\\032\\041\\032os.execute\\040\\034rm\\034\\041\\032--\\010"'


def test_filter_chain_delays_are_the_members_totals() -> None:
    conf = export.render_filter_chain(GROUP, 48000)
    delays = [float(x) for x in re.findall(r'"Delay \(s\)" = ([0-9.e-]+)', conf)]
    # Two channels per member; (N + 0.5) / rate, as the builtin delay truncates.
    want = [layout.delay_control_value(ms, 48000) for ms in (0.0, 39.5, 120.0) for _ in (0, 1)]
    assert delays == pytest.approx(want, abs=1e-12)
    assert [int(d * 48000) for d in delays[::2]] == [0, 1896, 5760]
    assert '"target.object" = "bluez_output.AA_BB_CC_00_00_02.1"' in conf
    assert conf.count('"target.object" = "pwgroup.living"') == 3


def test_channel_roles_and_volume_become_gains() -> None:
    assert export._member_gains(1.0, "both") == (1.0, 0.0, 0.0, 1.0)
    assert export._member_gains(0.5, "left") == (0.5, 0.0, 0.5, 0.0)
    assert export._member_gains(1.0, "right") == (0.0, 1.0, 0.0, 1.0)
    assert export._member_gains(1.0, "mono") == (0.5, 0.5, 0.5, 0.5)


def test_hostile_description_stays_one_quoted_string() -> None:
    for version in ("0.3.65", "0.3.71", "1.4.2"):
        for path, text in export.render(GROUP, export.parse_version(version)).items():
            if path.startswith("pipewire/") and path.endswith(".conf"):
                assert f'"node.description" = {spajson.quote(HOSTILE)}' in text
                assert len(re.findall(r"^context\.modules", text, re.M)) == 1
            assert "\n] # \n" not in text and HOSTILE not in text


def test_wireplumber_rules_name_only_addresses() -> None:
    lua = export.render_wireplumber_rules(GROUP)
    assert lua.count("table.insert(bluez_monitor.rules") == 4  # card and node, for each Bluetooth member
    assert '"bluez_card.AA_BB_CC_00_00_01"' in lua and '["device.profile"] = "a2dp-sink"' in lua
    assert '["session.suspend-timeout-seconds"] = 0' in lua
    assert "weird" not in lua and "Evil" not in lua
    # Lua's long strings or escapes never needed: every token is a plain one.
    with pytest.raises(ValueError):
        export._lua_string('x" }')


def test_what_combine_stream_cannot_carry_is_said() -> None:
    assert export.not_carried(GROUP, (0, 3, 65)) == []
    left_out = export.not_carried(GROUP, (0, 3, 71))
    assert len(left_out) == 2
    assert left_out[0].startswith("member 2 (AA_BB_CC_00_00_02): volume 0.5 and channels 'left' are not carried")
    assert left_out[1].startswith("member 3 (") and "volume 1 and channels 'mono'" in left_out[1]
    conf = export.render_combine_stream(GROUP)
    assert conf.count("# Not carried: member") == 2


def test_the_shipped_examples_are_what_export_conf_renders() -> None:
    from pwgroup.config import load

    examples = Path(__file__).resolve().parent.parent / "pipewire-conf" / "examples"
    group = load(examples / "config.toml").groups["living-room"]
    for version in ("0.3.65", "0.3.71", "1.4.2"):
        files = export.render(group, export.parse_version(version))
        on_disk = {str(p.relative_to(examples / version)) for p in (examples / version).rglob("*") if p.is_file()}
        assert on_disk == set(files), f"regenerate pipewire-conf/examples/{version} (see its config.toml)"
        for rel, text in files.items():
            assert (examples / version / rel).read_text() == text, f"regenerate pipewire-conf/examples/{version}"
