"""Member kinds without a server: which nodes are member targets, how a key resolves to one, how the speakers
list shows them, and how export names each kind's node; the group sink's props and delay lines in one place."""

from __future__ import annotations

import pytest

from pwgroup import config, export
from pwgroup.bluez.view import join
from pwgroup.cli import SPEAKER_HEADER, speaker_rows
from pwgroup.config import GroupConfig, MemberConfig
from pwgroup.edits import resolve_speaker
from pwgroup.graph import layout
from pwgroup.graph.pipewire import sink_props
from pwgroup.graph.pulse import PaSink, Snapshot, to_graph
from pwgroup.model import (
    KIND_BLUETOOTH,
    KIND_SINK,
    Graph,
    GroupSpec,
    MemberSpec,
    Node,
    UserError,
    speaker_from_node,
    speakers_in,
    target_kind,
)

ADDR = "AA:BB:CC:00:00:01"
BT = "bluez_output.AA_BB_CC_00_00_01.1"
ALSA = "alsa_output.pci-0000_00_1f.3.analog-stereo"
HDMI = "alsa_output.pci-0000_01_00.1.hdmi-stereo"


def graph() -> Graph:
    g = Graph()
    nodes = [
        Node(
            10,
            BT,
            "Audio/Sink",
            {"device.api": "bluez5", "api.bluez5.address": ADDR, "api.bluez5.codec": "sbc", "node.description": "Flip"},
        ),
        Node(11, ALSA, "Audio/Sink", {"device.api": "alsa", "node.description": "Built-in Audio Analog Stereo"}),
        Node(12, HDMI, "Audio/Sink", {"device.api": "alsa", "node.description": "HDMI"}),
        Node(13, "pwgroup.living", "Audio/Sink", {layout.PROP_GROUP: "living", layout.PROP_ROLE: layout.ROLE_SINK}),
        Node(14, "alsa_input.pci-0000_00_1f.3.analog-stereo", "Audio/Source", {"device.api": "alsa"}),
        Node(15, "pwgroup-sim.air", "Audio/Sink", {layout.PROP_ROLE: "room"}),
    ]
    g.nodes = {n.id: n for n in nodes}
    return g


def test_every_sink_pwgroup_did_not_make_is_a_target_of_its_kind() -> None:
    found = {s.node_name: s for s in speakers_in(graph())}
    assert set(found) == {BT, ALSA, HDMI}  # not the group sink, the room's plumbing, nor a source
    assert found[BT].kind == KIND_BLUETOOTH and found[BT].address == ADDR and found[BT].key == ADDR
    assert found[ALSA].kind == KIND_SINK and found[ALSA].address is None and found[ALSA].key == ALSA
    assert found[ALSA].codec is None and found[ALSA].description == "Built-in Audio Analog Stereo"
    # A Bluetooth node whose address is unreadable is still Bluetooth, keyed by its node name.
    odd = speaker_from_node(Node(20, "bluez_output.x", "Audio/Sink", {"device.api": "bluez5"}))
    assert odd is not None and odd.kind == KIND_BLUETOOTH and odd.key == "bluez_output.x"


def test_a_key_names_its_kind_and_resolves_by_address_or_exact_node_name() -> None:
    assert target_kind("aa_bb_cc_00_00_01") == KIND_BLUETOOTH and target_kind(ALSA) == KIND_SINK
    assert MemberSpec(ALSA).kind == KIND_SINK and MemberSpec(ADDR).kind == KIND_BLUETOOTH
    g = graph()
    assert layout.find_speaker(g, "aa-bb-cc-00-00-01").node_id == 10  # type: ignore[union-attr]
    assert layout.find_speaker(g, ALSA).node_id == 11  # type: ignore[union-attr]
    # Exact names only: no prefix, no other case.
    assert layout.find_speaker(g, "alsa_output.pci-0000_00_1f.3") is None
    assert layout.find_speaker(g, ALSA.upper()) is None
    assert layout.find_speaker(g, "pwgroup.living") is None


def test_resolve_takes_a_sinks_node_name_and_refuses_pwgroups_own_in_one_line() -> None:
    g = graph()
    assert resolve_speaker(g, ALSA) == ALSA
    assert resolve_speaker(g, BT) == ADDR  # a Bluetooth speaker is keyed by its address, however named
    for text, needle in (
        ("pwgroup.living", "pwgroup's own"),
        ("alsa_input.pci-0000_00_1f.3.analog-stereo", "not a sink"),
        ("alsa_output.gone", "unknown speaker"),
    ):
        with pytest.raises(UserError) as err:
            resolve_speaker(g, text)
        assert needle in err.value.message and "\n" not in err.value.message


def test_a_sink_member_is_observed_like_a_bluetooth_one() -> None:
    g = graph()
    for i, (key, side) in enumerate([(k, s) for k in (ADDR, ALSA) for s in ("in", "out")]):
        role = layout.ROLE_IN if side == "in" else layout.ROLE_OUT
        props = {layout.PROP_GROUP: "living", layout.PROP_ROLE: role, layout.PROP_MEMBER: key}
        g.nodes[30 + i] = Node(30 + i, layout.member_node_name("living", key, side), "Stream/Audio", props)
    state = layout.observe_group(g, "living")
    by_key = {m.speaker: m for m in state.members}
    assert by_key[ALSA].speaker_node is not None and by_key[ALSA].speaker_node.id == 11
    assert by_key[ADDR].speaker_node is not None and by_key[ADDR].speaker_node.id == 10


def test_pulseaudio_sinks_are_targets_by_kind() -> None:
    snap = Snapshot(
        sinks=[
            PaSink(1, ALSA, "Built-in", ("front-left", "front-right"), 1, 4, 48000, {"device.api": "alsa"}),
            PaSink(
                2,
                "bluez_sink.AA_BB_CC_00_00_01.a2dp_sink",
                "Flip",
                ("front-left", "front-right"),
                2,
                5,
                48000,
                {"device.api": "bluez", "device.string": ADDR},
            ),
            PaSink(3, "pwgroup-sim.air", "air", ("aux0",), 3, 6, 48000, {layout.PROP_ROLE: "room"}),
        ]
    )
    found = {s.key: s.kind for s in speakers_in(to_graph(snap, 0.0))}
    assert found == {ALSA: KIND_SINK, ADDR: KIND_BLUETOOTH}


def test_speakers_shows_a_sink_with_its_kind_and_no_bluetooth_side() -> None:
    views = join(speakers_in(graph()), None)
    by_node = {v.node: v for v in views}
    sink = by_node[ALSA]
    assert sink.kind == KIND_SINK and sink.address is None and sink.connection == "present"
    assert sink.as_dict()["kind"] == "sink" and by_node[BT].as_dict()["kind"] == "bluetooth"
    # Backwards compatible: every field the JSON had before is still there.
    old = {"name", "address", "connection", "bluez_connected", "node", "node_id", "paired", "trusted", "battery"}
    assert old | {"codec", "profile", "reported_delay_ms"} <= set(sink.as_dict())
    rows = {r[4]: r for r in speaker_rows(views)}
    kind_col = SPEAKER_HEADER.index("KIND")
    assert rows[ALSA][kind_col] == "sink" and rows[BT][kind_col] == "bluetooth"
    assert all(len(r) == len(SPEAKER_HEADER) for r in rows.values())


MIXED = GroupConfig("mixed", "Mixed", (MemberConfig(ADDR, 10.0), MemberConfig(ALSA, 40.0)))
SINKS_ONLY = GroupConfig("wired", "Wired", (MemberConfig(ALSA, 0.0), MemberConfig(HDMI, 25.0)))


def test_export_names_each_members_node_by_kind() -> None:
    assert export.speaker_node_name(ADDR) == BT and export.speaker_node_name(ALSA) == ALSA
    old = export.member_filter_chain(MIXED, 1, 48000)
    assert old["playback.props"]["target.object"] == ALSA  # type: ignore[index]
    assert export.member_filter_chain(MIXED, 0, 48000)["playback.props"]["target.object"] == BT  # type: ignore[index]
    conf = export.render_combine_stream(MIXED)
    # Both kinds by node name: combine-stream matches no api.bluez5.address.
    assert f'"node.name" = "{ALSA}"' in conf and f'"node.name" = "{BT}"' in conf
    assert "api.bluez5.address" not in conf


def test_wireplumber_rules_and_offsets_only_for_bluetooth_members() -> None:
    files = export.render(SINKS_ONLY, (0, 3, 65))
    assert set(files) == {"pipewire/pipewire.conf.d/pwgroup-wired.conf"}  # no Bluetooth member: no bluez rules
    assert "bluez" not in files["pipewire/pipewire.conf.d/pwgroup-wired.conf"]
    assert export.bluetooth_addresses(MIXED) == [ADDR]
    lua = export.render_wireplumber_rules(MIXED)
    assert "AA_BB_CC_00_00_01" in lua and "alsa" not in lua
    # Offsets for every member, a Bluetooth one by its node pattern, a sink by its exact node name.
    script = export.render_offsets_script(MIXED)
    assert '{ "matches", "bluez_output.AA_BB_CC_00_00_01.*", 30000000 },' in script
    assert f'{{ "equals", "{ALSA}", 0 }},' in script
    files = export.render(SINKS_ONLY, (1, 4, 2))  # WirePlumber 0.5: the script, but no bluez rules
    conf = files["wireplumber/wireplumber.conf.d/51-pwgroup-wired.conf"]
    assert "monitor.bluez.rules" not in conf and "pwgroup-wired-offsets.lua" in conf


def test_group_sink_props_and_delay_lines_live_in_one_place() -> None:
    shared = layout.group_sink_props("g", "G")
    daemon = sink_props(GroupSpec("g", "G"))
    dropin = export.group_sink_object(GroupConfig("g", "G", ()))["args"]
    assert shared.items() <= daemon.items() and shared.items() <= dropin.items()  # type: ignore[attr-defined]
    assert daemon[layout.PROP_ROLE] == layout.ROLE_SINK and layout.PROP_ROLE not in dropin  # type: ignore[operator]
    assert config.MAX_DELAY_MS == layout.MAX_MEMBER_DELAY_MS
    assert export.MAX_DELAY_S == layout.EXPORT_MAX_DELAY_S > layout.MAX_MEMBER_DELAY_MS / 1000.0
    assert layout.MAX_DELAY_S >= layout.EXPORT_MAX_DELAY_S
    chain = export.member_filter_chain(MIXED, 0, 48000)["filter.graph"]
    delays = [n for n in chain["nodes"] if n["label"] == "delay"]  # type: ignore[index]
    assert delays and all(n["config"]["max-delay"] == layout.EXPORT_MAX_DELAY_S for n in delays)
