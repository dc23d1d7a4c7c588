"""The configuration file: validation with file:line:key, round trips that keep comments, atomic saves."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from pwgroup.config import ConfigError, ConfigFile, GroupConfig, MemberConfig, config_path, parse, with_member_values

USER_FILE = """\
# my speakers, by hand
version = 1

[groups.living-room]  # the big one
description = "Living room"

# the kitchen one is quieter
[[groups.living-room.members]]
address = "aa:bb:cc:00:00:01"
delay_ms = 12.5   # measured in March
trim_ms = 3.0

[[groups.living-room.members]]
address = "AA:BB:CC:00:00:02"
channels = "left"
volume = 0.8

[reconnect]
max_s = 30
"""


def test_a_users_file_is_read_whole() -> None:
    cfg = parse(USER_FILE, Path("c.toml"))
    group = cfg.groups["living-room"]
    assert [m.speaker for m in group.members] == ["AA:BB:CC:00:00:01", "AA:BB:CC:00:00:02"]
    first, second = group.members
    assert (first.delay_ms, first.trim_ms, first.total_delay_ms) == (12.5, 3.0, 15.5)
    assert (second.channels, second.volume) == ("left", 0.8)
    spec = group.spec()
    assert spec.members[0].delay_ms == 15.5 and spec.members[1].channels == "left"
    assert cfg.reconnect.max_s == 30 and cfg.reconnect.initial_s == 2.0
    assert cfg.warnings == ()


@pytest.mark.parametrize(
    ("text", "where", "needle"),
    [
        ('[groups.x]\n[[groups.x.members]]\naddress = "zz"\n', "c.toml:3: groups.x.members[0].address", "AA:BB"),
        ("[groups.x]\n\n[[groups.x.members]]\nnode = 'n'\ndelay_ms = 5000\n", "c.toml:5:", "use 0 to 1900"),
        ("[groups.x]\n[[groups.x.members]]\nnode = 'n'\n[[groups.x.members]]\nnode = 'n'\n", "c.toml:4:", "twice"),
        ('[groups.x]\n[[groups.x.members]]\naddress = "AA:BB:CC:00:00:01"\nnode = "y"\n', "c.toml:2:", "exactly one"),
        ("[reconnect]\nmax_s = 'soon'\n", "c.toml:2: reconnect.max_s", "a number from 1 to 3600"),
        ("[reconnect]\ninitial_s = 20\nmax_s = 10\n", "c.toml:3: reconnect.max_s", "at least initial_s"),
        ("[calibration]\nmethod = 'loud'\n", "c.toml:2: calibration.method", "sweep, fast"),
        ('[groups."bad name"]\n', "c.toml:1: groups.bad name", "invalid group name"),
        ("version = 9\n", "c.toml:1: version", "reads 1"),
        ("a = [\n", "c.toml:", "not valid TOML"),
        ('[groups.x]\nmembers = "all"\n', "c.toml:2: groups.x.members", "array of tables"),
    ],
)
def test_every_error_names_file_line_and_key(text: str, where: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(text, Path("c.toml"))
    assert err.value.message.startswith(where), err.value.message
    assert needle in err.value.message
    assert "\n" not in err.value.message


def test_unknown_keys_are_warned_about_with_their_line() -> None:
    text = '[groups.x]\ncolour = "red"\n[[groups.x.members]]\naddress = "AA:BB:CC:00:00:01"\nloud = true\n'
    warnings = parse(text, Path("c.toml")).warnings
    assert len(warnings) == 2
    assert warnings[0].startswith("c.toml:1: groups.x: unknown key 'colour'") and "allowed: description" in warnings[0]
    assert warnings[1].startswith("c.toml:3: groups.x.members[0]: unknown key 'loud'")


def test_edits_keep_the_users_comments_and_order(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(USER_FILE)
    cfg = ConfigFile.open(path)
    group = cfg.group("living-room")
    assert group is not None
    group = with_member_values(group, "AA:BB:CC:00:00:01", delay_ms=40.0)
    group = GroupConfig(group.name, group.description, (*group.members[:1], MemberConfig("AA:BB:CC:00:00:03")))
    cfg.set_group(group)
    cfg.set_group(GroupConfig("kitchen", "Kitchen", (MemberConfig("AA:BB:CC:00:00:04", 5.0),)))
    cfg.save()
    text = path.read_text()
    for kept in ("# my speakers, by hand", "# the big one", "# the kitchen one is quieter", "# measured in March"):
        assert kept in text
    assert "delay_ms = 40.0   # measured in March" in text
    assert "AA:BB:CC:00:00:02" not in text and "AA:BB:CC:00:00:03" in text
    assert text.index("[groups.living-room]") < text.index("[groups.kitchen]") < text.index("[reconnect]")
    again = parse(text, path)
    assert [m.speaker for m in again.groups["living-room"].members] == ["AA:BB:CC:00:00:01", "AA:BB:CC:00:00:03"]
    assert again.groups["kitchen"].members[0].delay_ms == 5.0 and again.reconnect.max_s == 30
    assert (tmp_path / "config.toml.bak").read_text() == USER_FILE  # what the user wrote is never lost
    cfg.remove_group("kitchen")
    cfg.save()
    assert "kitchen" not in parse(path.read_text(), path).groups


def test_save_is_atomic_and_keeps_the_files_mode(tmp_path: Path) -> None:
    path = tmp_path / "pwgroup" / "config.toml"
    cfg = ConfigFile.open(path)  # no file yet: an empty config
    assert cfg.config.groups == {}
    cfg.set_group(GroupConfig("g", "G", (MemberConfig("AA:BB:CC:00:00:01"),)))
    cfg.save()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert path.read_text().startswith("# pwgroup configuration")
    os.chmod(path, 0o640)
    cfg.set_group(GroupConfig("g", "G2", ()))
    cfg.save()
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_a_calibration_date_marks_staleness() -> None:
    now = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC)
    fresh = MemberConfig("A", calibrated=now - dt.timedelta(days=2))
    old = MemberConfig("A", calibrated=now - dt.timedelta(days=40))
    assert not fresh.stale(now, 30) and old.stale(now, 30) and MemberConfig("A").stale(now, 30)
    text = '[groups.x]\n[[groups.x.members]]\nnode = "n"\ncalibrated = 2026-11-20T10:00:00Z\n'
    assert parse(text, Path("c.toml")).groups["x"].members[0].calibrated == dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)


def test_config_path_follows_xdg() -> None:
    assert config_path({"XDG_CONFIG_HOME": "/x"}) == Path("/x/pwgroup/config.toml")
    assert config_path({"HOME": "/home/u"}) == Path("/home/u/.config/pwgroup/config.toml")
