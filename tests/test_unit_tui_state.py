"""The dashboard's data layer without Textual or a server: the snapshot built from a graph and a config, the
events between two snapshots, and the live source losing its server and finding it again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pwgroup.bluez.view import join
from pwgroup.config import Config, GroupConfig, MemberConfig
from pwgroup.graph import Capabilities, layout, no_member_gain
from pwgroup.model import Graph, Node, ServerUnreachable, UserError, speakers_in
from pwgroup.tui.state import LiveSource, LogLine, ServerLost, StateUpdate, build_snapshot, events_between

A, B, C = "AA:BB:CC:00:00:01", "AA:BB:CC:00:00:02", "AA:BB:CC:00:00:03"


def speaker(node_id: int, address: str, description: str) -> Node:
    return Node(
        node_id,
        f"bluez_output.{address.replace(':', '_')}.1",
        "Audio/Sink",
        {"device.api": "bluez5", "api.bluez5.address": address, "node.description": description},
    )


def member_in(node_id: int, group: str, key: str, delay_s: float) -> Node:
    props = {layout.PROP_GROUP: group, layout.PROP_ROLE: layout.ROLE_IN, layout.PROP_MEMBER: key}
    controls = {layout.LINE_A: delay_s, layout.LINE_B: 0.0, layout.GAIN_A: 1.0, layout.GAIN_B: 0.0}
    return Node(node_id, layout.member_node_name(group, key, "in"), "Stream/Input/Audio", props, controls)


def room_graph(with_b: bool = True) -> Graph:
    g = Graph()
    g.nodes[1] = speaker(1, A, "[bold]Kitchen[/bold]\x1b[2J")
    if with_b:
        g.nodes[2] = speaker(2, B, "Bath")
    g.nodes[10] = Node(
        10, "pwgroup.home", "Audio/Sink", {layout.PROP_GROUP: "home", layout.PROP_ROLE: layout.ROLE_SINK}
    )
    g.nodes[11] = member_in(11, "home", A, (480 + 0.5) / 48000)
    g.nodes[12] = member_in(12, "home", B, 0.5 / 48000)
    return g


def config() -> Config:
    members = (MemberConfig(A, 10.0, trim_ms=-2.0), MemberConfig(B), MemberConfig(C))
    return Config(groups={"home": GroupConfig("home", "Home", members), "spare": GroupConfig("spare", "Spare")})


def snap(with_b: bool = True):  # type: ignore[no-untyped-def]
    g = room_graph(with_b)
    return build_snapshot(g, config(), join(speakers_in(g), None), "pipewire")


def test_snapshot_joins_speakers_groups_and_config() -> None:
    s = snap()
    assert [r.key for r in s.speakers] == [A, B, C]  # C: a configured member never seen, listed as absent
    kitchen = s.speakers[0]
    assert kitchen.name == "[bold]Kitchen[/bold]\x1b[2J"  # kept raw here: the widgets escape it
    assert kitchen.groups == ("home",) and kitchen.delay_ms == 10.0
    home = s.group("home")
    assert home is not None and home.built and home.in_config
    rows = {m.speaker: m for m in home.members}
    assert set(rows) == {A, B, C}
    assert rows[A].delay_ms == 10.0 and rows[A].trim_ms == -2.0 and rows[A].wanted_ms == 8.0
    assert rows[A].present and not rows[A].linked and rows[A].state == "unlinked"  # no links in this graph
    assert rows[C].state == "not built" and not rows[C].present  # configured, no element yet
    spare = s.group("spare")
    assert spare is not None and not spare.built and spare.members == ()


def test_events_say_who_went_and_who_returned() -> None:
    full, without_b = snap(), snap(with_b=False)
    assert events_between(None, full) == []
    gone = events_between(full, without_b)
    # One line, not two: Bath stays listed (absent) as a member, so only its group speaks of it.
    assert gone == [("warning", "group home: Bath went away; the others play on")]
    assert events_between(without_b, full) == [("info", "group home: Bath returned")]
    g = room_graph()
    g.nodes[3] = speaker(3, "AA:BB:CC:00:00:09", "Loose")  # a speaker in no group
    with_loose = build_snapshot(g, config(), join(speakers_in(g), None), "pipewire")
    assert events_between(full, with_loose) == [("info", "speaker Loose appeared")]
    assert events_between(with_loose, full) == [("info", "speaker Loose is gone")]
    assert events_between(full, full) == []


class FakeBackend:
    """Alive for `life` waits, then its watcher ends, as when the sound server dies."""

    name = "pipewire"
    capabilities = Capabilities(server="PipeWire", calibrate=True)

    def __init__(self, env: dict[str, str], life: int) -> None:
        self.env = env
        self.graph = room_graph()
        self.life = life
        self.serial = 0
        self.closed = False

    @property
    def alive(self) -> bool:
        return self.life > 0 and not self.closed

    async def wait_changed(self, timeout: float, since: int | None = None) -> bool:
        await asyncio.sleep(0.01)
        self.life -= 1
        self.serial += 1
        return True

    async def close(self) -> None:
        self.closed = True


def test_live_source_reports_a_lost_server_and_recovers_by_itself(tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    script: list[object] = [ServerUnreachable("cannot reach PipeWire"), ServerUnreachable("cannot reach PipeWire")]
    opened: list[FakeBackend] = []

    async def open_backend(e):  # type: ignore[no-untyped-def]
        if script:
            err = script.pop(0)
            assert isinstance(err, Exception)
            raise err
        be = FakeBackend(dict(e), life=2)
        opened.append(be)
        if len(opened) == 1:
            script.append(ServerUnreachable("cannot reach PipeWire"))
        return be

    updates: list[object] = []

    async def main() -> None:
        source = LiveSource(env, bluetooth=False, open_backend=open_backend, poll_s=0.05, retry_s=0.01, keep=False)
        task = asyncio.ensure_future(source.run(updates.append))
        while len(opened) < 2 or sum(isinstance(u, StateUpdate) for u in updates) < 4:
            await asyncio.sleep(0.01)
        await source.close()
        await asyncio.wait_for(task, 1.0)

    asyncio.run(main())
    kinds = [type(u).__name__ for u in updates]
    # Unreachable once (said once, not per retry), back, snapshots, gone, unreachable, back again.
    assert kinds[0] == "ServerLost" and kinds[1] == "LogLine" and kinds[2] == "StateUpdate"
    assert kinds.count("ServerLost") == 3, kinds
    assert isinstance(updates[1], LogLine) and "back" in updates[1].text
    lost = [u.reason for u in updates if isinstance(u, ServerLost)]
    assert lost == ["cannot reach PipeWire", "the sound server went away: reconnecting", "cannot reach PipeWire"]
    assert all(be.closed for be in opened)


def test_a_member_that_is_away_keeps_the_name_it_was_last_seen_with() -> None:
    g = room_graph(with_b=False)
    s = build_snapshot(g, config(), join(speakers_in(g), None), "pipewire", known_names={B: "Bath"})
    away = s.member("home", B)
    assert away is not None and away.name == "Bath" and away.state == "absent"
    # Listed among the speakers too, as absent, with its group; C (configured, never seen) as well.
    rows = {r.key: r for r in s.speakers}
    assert [r.key for r in s.speakers] == [A, B, C]
    assert rows[B].connection == "absent" and not rows[B].present and rows[B].groups == ("home",)
    assert rows[B].name == "Bath" and rows[B].delay_ms == 0.0
    assert rows[C].connection == "absent" and rows[C].name == C
    assert snap(with_b=False).member("home", B).name == B  # type: ignore[union-attr]


def test_trim_presses_made_during_an_edit_fold_into_the_next_one(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    env = {"XDG_RUNTIME_DIR": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    trims: list[float] = []

    async def slow_edit_group(be, cfg, name, edit):  # type: ignore[no-untyped-def]
        current = GroupConfig(name, name, (MemberConfig(A, 10.0, trim_ms=trims[-1] if trims else 0.0),))
        trims.append(edit(be.graph, current).member(A).trim_ms)
        await asyncio.sleep(0.05)  # converging: more presses arrive meanwhile

    monkeypatch.setattr("pwgroup.edits.edit_group", slow_edit_group)

    async def main() -> list[float | None]:
        source = LiveSource(env, bluetooth=False)
        source.backend = FakeBackend(env, life=100)  # type: ignore[assignment]
        return await asyncio.gather(*(source.trim("home", A, d) for d in (1.0, 1.0, 1.0, 10.0, -1.0)))

    results = asyncio.run(main())
    assert trims == [1.0, 12.0]  # two edits for five presses, none lost
    assert results == [1.0, 12.0, None, None, None]


def test_health_says_reconnecting_needs_calibration_and_recheck() -> None:
    import datetime as dt

    now = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
    fresh = now - dt.timedelta(days=1)
    members = (
        MemberConfig(A, 10.0, calibrated=fresh),  # calibrated yesterday, then came back an hour ago
        MemberConfig(B, calibrated=fresh),  # away, the daemon reconnecting it
        MemberConfig(C, calibrated=now - dt.timedelta(days=90)),  # calibrated too long ago
    )
    cfg = Config(groups={"home": GroupConfig("home", "Home", members)})
    g = room_graph(with_b=False)
    s = build_snapshot(
        g,
        cfg,
        join(speakers_in(g), None),
        "pipewire",
        reconnect={B: "waiting 8 s"},
        returned={A: (now - dt.timedelta(hours=1)).timestamp()},
        now=now,
    )
    health = {m.speaker: m.health for m in s.group("home").members}  # type: ignore[union-attr]
    assert health == {A: "re-check latency", B: "reconnect: waiting 8 s", C: "needs calibration"}


def test_no_command_opens_the_dashboard_only_in_a_terminal(capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from pwgroup import cli

    opened: list[bool | None] = []
    monkeypatch.setattr("pwgroup.tui.app.run", lambda ascii_only=None: opened.append(ascii_only) or 0)
    # Under pytest stdin is no terminal: help and exit 2, as before the dashboard (scripts keep their answer).
    assert cli.main([]) == 2
    assert "With no command, in a terminal: the dashboard" in " ".join(capsys.readouterr().out.split())
    assert opened == []
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert cli.main([]) == 0 and opened == [None]  # ASCII or not: the locale decides
    assert cli.main(["--ascii"]) == 0 and opened == [None, True]


def test_the_dashboard_never_asks_which_backend_it_holds() -> None:
    """What differs between servers is in the backend's Capabilities (DESIGN.md): the dashboard reads those,
    never a backend's name, and probes no backend for attributes."""
    import re

    root = Path(__file__).resolve().parent.parent / "pwgroup" / "tui"
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        assert not re.search(r"\bgetattr\(|\bhasattr\(", text), path
        assert not re.search(r"[\"'](pipewire|pulse)[\"']", text), path
        assert not re.search(r"\.name\s*[!=]=\s*[\"']", text), path


# ---------------------------------------------------------------- group editing: volume, role, mute, name


def test_snapshot_shows_member_volume_role_and_the_group_sinks_volume_and_mute() -> None:
    g = room_graph()
    sink = g.nodes[10]
    g.nodes[10] = Node(sink.id, sink.name, sink.media_class, sink.props, channel_volumes=(0.125, 0.125), mute=True)
    members = (MemberConfig(A, volume=0.8, channels="left"), MemberConfig(B))
    cfg = Config(groups={"home": GroupConfig("home", "Home at last", members)})
    s = build_snapshot(g, cfg, join(speakers_in(g), None), "pipewire")
    home = s.group("home")
    assert home is not None
    assert home.volume == pytest.approx(0.5)  # the mixer scale: the cube root of the linear 0.125
    assert home.muted is True
    assert home.description == "pwgroup.home"  # what apps see now: the sink has no description of its own
    assert home.wanted_description == "Home at last"  # the config's, until the sink is built again
    a, b = home.members
    assert (a.volume, a.channels, a.gain) == (0.8, "left", 1.0)  # gain: as the graph applies it
    assert (b.volume, b.channels) == (1.0, "both")


def test_a_group_only_the_graph_knows_shows_the_applied_gain_as_volume() -> None:
    g = room_graph()
    s = build_snapshot(g, Config(), join(speakers_in(g), None), "pipewire")
    home = s.group("home")
    assert home is not None and home.volume is None and home.muted is None and home.wanted_description is None
    assert [(m.volume, m.channels) for m in home.members] == [(1.0, None), (1.0, None)]


def test_channel_roles_cycle_and_volume_steps_stay_in_range() -> None:
    from pwgroup.edits import next_channels, step_volume

    assert [next_channels(c) for c in ("both", "left", "right", "mono")] == ["left", "right", "mono", "both"]
    assert next_channels("nonsense") == "both"
    assert step_volume(1.0, 0.05) == 1.05
    assert step_volume(1.48, 0.05) == 1.5 and step_volume(0.02, -0.05) == 0.0
    assert step_volume(0.9, 0.2, top=1.0) == 1.0
    v = 1.0
    for _ in range(7):
        v = step_volume(v, -0.05)
    assert v == 0.65  # whole percent: no float drift after many presses


def test_descriptions_are_checked_and_apps_playing_are_counted() -> None:
    from pwgroup.edits import apps_playing_to, check_description
    from pwgroup.model import Link, UserError

    assert check_description("  Den  ") == "Den"
    for bad in ("", "   ", "x" * 257):
        with pytest.raises(UserError):
            check_description(bad)
    g = room_graph()
    sink = g.nodes[10]
    assert apps_playing_to(g, sink) == 0
    g.nodes[20] = Node(20, "firefox", "Stream/Output/Audio", {"application.name": "Firefox"})
    g.links[30] = Link(30, 20, 200, 10, 100)  # the app into the sink
    g.links[31] = Link(31, 10, 101, 11, 110)  # the sink's monitor into a member: not an app
    assert apps_playing_to(g, sink) == 1


def test_pw_dump_props_give_a_nodes_own_volume_and_mute() -> None:
    from pwgroup.graph import pwdump

    node = {
        "id": 59,
        "type": "PipeWire:Interface:Node",
        "info": {
            "props": {"node.name": "pwgroup.exp", "media.class": "Audio/Sink"},
            "params": {"Props": [{"volume": 1.0, "mute": True, "channelVolumes": [0.125, 0.25], "params": []}]},
        },
    }
    g = Graph()
    pwdump.apply(g, [node])
    assert g.nodes[59].channel_volumes == (0.125, 0.25) and g.nodes[59].mute is True
    assert layout.sink_volume(g.nodes[59]) == pytest.approx(0.25 ** (1 / 3))
    assert layout.linear_volume(0.5) == 0.125
    # An update without Props (a property change) keeps what was known.
    pwdump.apply(g, [{**node, "info": {"props": node["info"]["props"]}}])  # type: ignore[index]
    assert g.nodes[59].channel_volumes == (0.125, 0.25) and g.nodes[59].mute is True


def test_volume_and_role_presses_fold_like_trim(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    env = {"XDG_RUNTIME_DIR": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    saved: list[MemberConfig] = []

    async def slow_edit_group(be, cfg, name, edit):  # type: ignore[no-untyped-def]
        current = GroupConfig(name, name, (saved[-1] if saved else MemberConfig(A),))
        saved.append(edit(be.graph, current).member(A))
        await asyncio.sleep(0.05)

    monkeypatch.setattr("pwgroup.edits.edit_group", slow_edit_group)

    async def main() -> tuple[list[float | None], list[str | None]]:
        source = LiveSource(env, bluetooth=False)
        source.backend = FakeBackend(env, life=100)  # type: ignore[assignment]
        source.backend.capabilities = Capabilities(server="in-memory", member_gain=True)  # type: ignore[union-attr]
        volumes = await asyncio.gather(*(source.member_volume("home", A, d) for d in (-0.05, -0.05, -0.05, 0.05)))
        roles = await asyncio.gather(*(source.cycle_channels("home", A) for _ in range(3)))
        return list(volumes), list(roles)

    volumes, roles = asyncio.run(main())
    assert volumes == [0.95, 0.9, None, None]  # four presses, two edits
    assert roles == ["left", "mono", None]  # three presses, two edits: both -> left, then two steps at once
    assert [(m.volume, m.channels) for m in saved] == [(0.95, "both"), (0.9, "both"), (0.9, "left"), (0.9, "mono")]


def test_volume_and_role_are_refused_in_one_line_where_the_server_cannot_apply_them(  # type: ignore[no-untyped-def]
    tmp_path: Path, monkeypatch
) -> None:
    env = {"XDG_RUNTIME_DIR": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    edits: list[str] = []

    async def edit_group(be, cfg, name, edit):  # type: ignore[no-untyped-def]
        edits.append(name)

    monkeypatch.setattr("pwgroup.edits.edit_group", edit_group)

    async def main() -> list[str]:
        source = LiveSource(env, bluetooth=False)
        source.backend = FakeBackend(env, life=100)  # type: ignore[assignment]
        source.backend.capabilities = Capabilities(server="PulseAudio", member_gain=False)  # type: ignore[union-attr]
        said = []
        for press in (lambda: source.member_volume("home", A, 0.05), lambda: source.cycle_channels("home", A)):
            with pytest.raises(UserError) as err:
                await press()
            said.append(err.value.message)
        return said

    said = asyncio.run(main())
    assert edits == []  # nothing saved to go unheard
    assert said == [no_member_gain("PulseAudio")] * 2 and "\n" not in said[0]
    assert said[0].startswith("member volume and channel roles need PipeWire for now: on PulseAudio ")


def test_mute_presses_fold_and_an_even_number_changes_nothing(tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    calls: list[bool] = []

    class MutingBackend(FakeBackend):
        async def set_sink_mute(self, node_id: int, mute: bool) -> None:
            calls.append(mute)
            await asyncio.sleep(0.05)  # the server's round trip: more presses arrive meanwhile
            old = self.graph.nodes[node_id]
            self.graph.nodes[node_id] = Node(old.id, old.name, old.media_class, old.props, mute=mute)

    async def main() -> list[bool | None]:
        source = LiveSource(env, bluetooth=False)
        source.backend = MutingBackend(env, life=100)  # type: ignore[assignment]
        first = await asyncio.gather(*(source.group_mute("home") for _ in range(3)))
        second = await asyncio.gather(*(source.group_mute("home") for _ in range(2)))
        return [*first, *second]

    results = asyncio.run(main())
    # Three presses: the first mutes, the two made meanwhile fold into one edit that changes nothing. Two more:
    # the first unmutes, the second (alone in its fold) mutes again.
    assert calls == [True, False, True]
    assert results == [True, True, None, False, True]


# ---------------------------------------------------------------- Bluetooth: measured latency, pairing, scan, banner


def test_speaker_rows_carry_measured_latency_battery_and_pairing() -> None:
    from pwgroup.bluez.props import Battery, Device

    g = room_graph()
    kitchen = Device("/org/bluez/hci0/dev_A", A, "Kitchen", None, True, False, True, (), None, None, Battery(42))
    s = build_snapshot(g, config(), join(speakers_in(g), [kitchen]), "pipewire")
    rows = {r.key: r for r in s.speakers}
    assert rows[A].measured_ms is None  # in the config, never calibrated
    assert (rows[A].battery, rows[A].paired, rows[A].trusted) == (42, True, False)
    assert (rows[B].battery, rows[B].paired, rows[B].trusted) == (None, None, None)  # BlueZ does not know it
    members = (MemberConfig(A, 10.0, latency_ms=180.5), MemberConfig(B, latency_ms=90.0))
    cfg = Config(
        groups={"b": GroupConfig("b", "B", (MemberConfig(A, latency_ms=170.0),)), "a": GroupConfig("a", "A", members)}
    )
    s = build_snapshot(g, cfg, join(speakers_in(g), None), "pipewire")
    rows = {r.key: r for r in s.speakers}
    assert rows[A].measured_ms == 180.5 and rows[B].measured_ms == 90.0  # the first group by name that measured it


def test_measured_latency_finds_a_speaker_by_address_or_node() -> None:
    from pwgroup.tui.state import measured_latency

    node = "bluez_output.AA_BB_CC_00_00_07.1"
    cfg = Config(groups={"g": GroupConfig("g", "G", (MemberConfig(node, latency_ms=55.0), MemberConfig(A)))})
    assert measured_latency(cfg, (None, node)) == 55.0
    assert measured_latency(cfg, (A, None)) is None
    assert measured_latency(Config(), (A,)) is None


def test_pairing_text_says_what_bluez_knows() -> None:
    from pwgroup.tui.state import pairing_text

    assert pairing_text(None, None) == "-"
    assert pairing_text(True, True) == "paired, trusted"
    assert pairing_text(True, False) == "paired"
    assert pairing_text(False, True) == "trusted"
    assert pairing_text(False, False) == "new"


def test_found_rows_list_what_the_scan_heard_speakers_first() -> None:
    from pwgroup.bluez.props import A2DP_SINK_UUID, Device
    from pwgroup.tui.state import found_rows

    def dev(address: str, rssi: int | None, paired: bool, sink: bool = True) -> Device:
        uuids = (A2DP_SINK_UUID,) if sink else ()
        return Device(f"/dev_{address}", address, f"[b]{address}[/b]", None, paired, paired, False, uuids, None, rssi)

    phone = dev("AA:BB:CC:00:00:01", -70, False, sink=False)
    heard = dev("AA:BB:CC:00:00:09", -40, True)
    quiet_paired = dev("AA:BB:CC:00:00:05", None, True)  # paired, not heard in this scan: in the speakers table
    new_silent = dev("AA:BB:CC:00:00:07", None, False)  # found lately (BlueZ keeps unpaired ones a while)
    rows = found_rows([phone, heard, quiet_paired, new_silent], set())
    assert [r.address for r in rows] == [new_silent.address, heard.address, phone.address]
    assert rows[1].name == "[b]AA:BB:CC:00:00:09[/b]" and rows[1].rssi == -40 and rows[1].paired
    assert not rows[2].audio_sink
    # Heard earlier in this scan, RSSI dropped since: still listed.
    assert quiet_paired.address in [r.address for r in found_rows([quiet_paired], {quiet_paired.address})]


def test_banner_lines_keep_every_problem() -> None:
    from dataclasses import replace

    from pwgroup.tui.state import BLUEZ_GONE, banner_lines

    s = snap()
    assert banner_lines(None, None) == [] and banner_lines(None, s) == []
    assert banner_lines("cannot reach PipeWire", None) == ["sound server lost: cannot reach PipeWire"]
    never_had = replace(s, bluetooth="Bluetooth control unavailable: cannot reach the system bus")
    assert banner_lines(None, never_had) == []  # never reached this session: the event log says it, once
    lost = replace(s, bluetooth=BLUEZ_GONE, bluetooth_lost=True, config_error="config.toml:3: bad")
    assert banner_lines("the sound server went away: reconnecting", lost) == [
        "sound server lost: the sound server went away: reconnecting",
        "config: config.toml:3: bad",
        "Bluetooth lost: BlueZ (org.bluez) is not running",
    ]


class FakeBluezClient:
    """A BluezClient's surface as LiveSource uses it: a bus that may go, BlueZ that may leave."""

    def __init__(self, available: bool = True) -> None:
        self.available = available
        self.bus = type("Bus", (), {"connected": True})()
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def devices(self) -> list[object]:
        return []


def test_live_source_says_bluetooth_lost_only_after_having_it(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from pwgroup.bluez.client import BluezClient
    from pwgroup.bluez.errors import BluetoothUnavailable
    from pwgroup.tui.state import BLUEZ_GONE

    env = {"XDG_RUNTIME_DIR": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    opened: list[object] = []
    script: list[object] = [BluetoothUnavailable("Bluetooth control unavailable: cannot reach the system bus")]

    async def fake_open(require_bluez: bool = True, env: dict[str, str] | None = None) -> object:
        opened.append(env)
        item = script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    monkeypatch.setattr(BluezClient, "open", fake_open)

    async def main() -> list[tuple[str | None, bool]]:
        source = LiveSource(env, bt_retry_s=0.0)
        be = FakeBackend(env, life=100)
        states = []

        async def step() -> None:
            await source._bluetooth()
            s = source.snapshot(be)  # type: ignore[arg-type]
            states.append((s.bluetooth, s.bluetooth_lost))

        await step()  # no bus yet: said, not a loss
        client = FakeBluezClient(available=False)
        script.append(client)
        await step()  # the bus answers, BlueZ is not there yet
        client.available = True
        await step()
        client.available = False  # BlueZ went away on a live bus
        await step()
        client.available = True
        await step()
        client.bus.connected = False  # the bus went away: the client is dropped and the bus asked again
        script.append(BluetoothUnavailable("Bluetooth control unavailable: cannot reach the system bus"))
        await step()
        script.append(FakeBluezClient())
        await step()
        assert client.closed
        return states

    states = asyncio.run(main())
    assert states == [
        ("Bluetooth control unavailable: cannot reach the system bus", False),
        (BLUEZ_GONE, False),
        (None, False),
        (BLUEZ_GONE, True),
        (None, False),
        ("Bluetooth control unavailable: cannot reach the system bus", True),
        (None, False),
    ]
    assert opened == [env] * 4  # always the dashboard's own env, never the process's
