"""The status view model (pwgroup.status) without a server: `status --json`, `status` and the dashboard render the
same member states from one fixed graph; the daemon's log and the dashboard say a member's coming and going in
the same words; the per-process shared watcher and BlueZ client, and a reconciler that uses them without
closing them."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from test_unit_tui_state import A, B, C, FakeBackend, config, room_graph

from pwgroup.bluez.view import join
from pwgroup.config import Config, GroupConfig, MemberConfig
from pwgroup.graph import Capabilities
from pwgroup.model import Link, Port, UserError, speakers_in
from pwgroup.status import DaemonReport, derive, presence, presence_change, status_json, status_lines
from pwgroup.tui.state import build_snapshot

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def playing_graph():  # type: ignore[no-untyped-def]
    """room_graph with A's element linked (sink monitor -> element in, element out -> speaker): A plays, B's
    element is unlinked, C is configured with no element."""
    from pwgroup.graph import layout
    from pwgroup.model import Node

    g = room_graph()
    g.nodes[13] = Node(
        13,
        layout.member_node_name("home", A, "out"),
        "Stream/Output/Audio",
        {layout.PROP_GROUP: "home", layout.PROP_ROLE: layout.ROLE_OUT, layout.PROP_MEMBER: A},
    )
    g.ports[100] = Port(100, 10, "monitor_FL", "out", "FL", monitor=True)
    g.ports[110] = Port(110, 11, "input_FL", "in", "FL")
    g.ports[130] = Port(130, 13, "output_FL", "out", "FL")
    g.ports[140] = Port(140, 1, "playback_FL", "in", "FL")
    g.links[200] = Link(200, 10, 100, 11, 110)
    g.links[201] = Link(201, 13, 130, 1, 140)
    return g


def test_status_json_text_and_the_dashboard_show_the_same_member_states() -> None:
    g = playing_graph()
    cfg = config()
    report = DaemonReport(4242, {C: "waiting 8 s"}, {A: (NOW - dt.timedelta(hours=1)).timestamp()})
    groups = derive(g, cfg, report, NOW)
    data = status_json(groups, report.pid, "pipewire", "forced", Capabilities(server="PipeWire").as_dict())
    snap = build_snapshot(
        g,
        cfg,
        join(speakers_in(g), None),
        "pipewire",
        report.pid,
        reconnect=report.reconnect,
        returned=report.returned,
        now=NOW,
    )
    from_json = {(gr["name"], m["speaker"]): m["state"] for gr in data["groups"] for m in gr["members"]}
    from_dashboard = {(gr.name, m.speaker): m.state for gr in snap.groups for m in gr.members}
    assert from_json == from_dashboard == {("home", A): "playing", ("home", B): "unlinked", ("home", C): "not built"}
    notes = {m["speaker"]: ", ".join(m["notes"]) for gr in data["groups"] for m in gr["members"]}
    assert notes == {m.speaker: m.health for gr in snap.groups for m in gr.members}
    assert notes[A] == "needs calibration, re-check latency" and notes[C] == "reconnect: waiting 8 s, needs calibration"
    assert [gr["name"] for gr in data["groups"]] == [gr.name for gr in snap.groups] == ["home", "spare"]
    # The keys `status --json` printed before the view model stay; state, notes and capabilities are new.
    a = data["groups"][0]["members"][0]
    old = {"address", "speaker", "node", "present", "linked", "delay_ms", "reconnect", "in_config", "recheck_latency"}
    assert old | {"trim_ms", "volume", "channels", "latency_ms", "calibrated", "needs_calibration"} <= set(a)
    assert a["node"] == "bluez_output.AA_BB_CC_00_00_01.1" and a["recheck_latency"] and a["trim_ms"] == -2.0
    assert {"name", "description", "sink", "built"} <= set(data["groups"][0])
    assert data["daemon"] == 4242 and data["capabilities"]["server"] == "PipeWire"
    text = status_lines(groups, report.pid, "pipewire", "forced")
    lines = {line.split()[0]: line for line in text if line.startswith("  ")}
    assert lines[A].split("  ")[2] == "playing" and lines[B].split("  ")[2] == "unlinked"
    assert "not built, reconnect: waiting 8 s" in lines[C]
    assert "re-check its latency" in lines[A] and "needs calibration" in lines[A]


def test_the_daemon_and_the_dashboard_say_a_member_going_and_returning_alike() -> None:
    assert presence_change("home", "Bath", False) == ("warning", "group home: Bath went away; the others play on")
    assert presence_change("home", "Bath", True) == ("info", "group home: Bath returned")
    level, text = presence_change("home", A, True, relinking=True)
    assert level == "info" and text.startswith(f"group home: {A} returned; relinking it with its delay")
    assert "'pwgroup calibrate home --method fast'" in text
    # Presence is the speaker's node, element or not: B away, C never seen, A there.
    g = room_graph(with_b=False)
    assert presence(g, "home", config().groups["home"]) == {A: True, B: False, C: False}
    assert presence(g, "nope", None) == {}


def test_status_of_an_empty_room_and_a_group_only_the_config_knows() -> None:
    cfg = Config(groups={"den": GroupConfig("den", "Den", (MemberConfig(A),))})
    from pwgroup.model import Graph

    (den,) = derive(Graph(), cfg, None, NOW)
    assert not den.built and den.in_config and den.description is None and den.wanted_description == "Den"
    assert [(m.state, m.present, m.needs_calibration) for m in den.members] == [("not built", False, True)]
    text = status_lines((), None, "pulse", "the Pulse server says 'pulseaudio'")
    assert text[1].startswith("daemon: not running") and text[2].startswith("no groups")


def test_a_volume_or_role_the_server_cannot_apply_is_noted_on_its_member() -> None:
    from pwgroup.model import Graph

    members = (MemberConfig(A), MemberConfig(B, volume=0.5), MemberConfig(C, channels="left"))
    cfg = Config(groups={"den": GroupConfig("den", "Den", members)})
    note = "volume/role not applied here"
    (pulse,) = derive(Graph(), cfg, None, NOW, member_gain=False)
    assert [note in m.notes for m in pulse.members] == [False, True, True]
    (pipewire,) = derive(Graph(), cfg, None, NOW)
    assert not any(note in m.notes for m in pipewire.members)


# ---------------------------------------------------------------- one watcher and one BlueZ client per process


def test_shared_resource_opens_once_and_closes_with_its_last_holder() -> None:
    from pwgroup.supervisor.shared import graph_watcher

    opened: list[FakeBackend] = []

    async def open_backend(env):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.01)  # both ask while the first is opening
        opened.append(FakeBackend(dict(env), life=100))
        return opened[-1]

    async def main() -> None:
        env = {"XDG_RUNTIME_DIR": "/nowhere"}
        dashboard, reconciler = await asyncio.gather(
            graph_watcher(env, open_backend).acquire(), graph_watcher(dict(env)).acquire()
        )
        assert dashboard is reconciler and len(opened) == 1
        other = await graph_watcher({"XDG_RUNTIME_DIR": "/elsewhere"}, open_backend).acquire()
        assert other is not dashboard  # another server: another watcher
        await graph_watcher(env).release(reconciler)
        assert not dashboard.closed
        dashboard.life = 0  # the server died: the next to ask gets a new watcher; the dead one stays held
        fresh = await graph_watcher(env).acquire()
        assert fresh is not dashboard and not dashboard.closed
        await graph_watcher(env).release(dashboard)
        assert dashboard.closed and not fresh.closed
        await graph_watcher(env).release(fresh)
        assert fresh.closed

    asyncio.run(main())


def test_a_reconciler_on_a_shared_watcher_lets_go_of_it_and_never_closes_it(tmp_path: Path) -> None:
    from pwgroup.supervisor.loop import Supervisor

    env = {"XDG_RUNTIME_DIR": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}

    class Watcher(FakeBackend):
        async def refresh(self):  # type: ignore[no-untyped-def]
            return self.graph

    first, second = Watcher(env, life=3), Watcher(env, life=1000)  # the server dies under the first
    given = [first, second]
    released: list[object] = []

    async def acquire():  # type: ignore[no-untyped-def]
        return given.pop(0)

    async def release(be) -> None:  # type: ignore[no-untyped-def]
        released.append(be)

    async def main() -> None:
        sup = Supervisor(tmp_path / "none.toml", env, lambda *_: None, acquire, keep=True, release_backend=release)
        task = asyncio.ensure_future(sup.run(lambda _: None))
        while sup.backend is not second:
            await asyncio.sleep(0.01)
        sup.request_stop()
        await asyncio.wait_for(task, 5.0)

    asyncio.run(main())
    assert released == [first, second]  # let go of each once: the dead one on its loss, the live one on stop
    assert not first.closed and not second.closed  # closing is the owner's


def test_calibration_asks_the_backends_capabilities(tmp_path: Path) -> None:
    from pwgroup.tui.state import LiveSource

    env = {"XDG_RUNTIME_DIR": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}

    class PulseLike(FakeBackend):
        name = "anything"  # never asked: the capabilities decide
        capabilities = Capabilities(server="PulseAudio", calibrate=False)

    async def main() -> None:
        source = LiveSource(env, bluetooth=False)
        source.backend = PulseLike(env, life=100)  # type: ignore[assignment]
        with pytest.raises(UserError, match="on PulseAudio trim the delays by ear"):
            await source.calibrate("home", lambda *_: None)

    asyncio.run(main())
