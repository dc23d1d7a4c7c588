"""The pure reconcile step, on hand-built graphs: no sound server involved."""

from __future__ import annotations

from pwgroup.graph import layout
from pwgroup.model import (
    CreateSink,
    DestroySink,
    Graph,
    GroupSpec,
    Link,
    LinkPorts,
    MemberSpec,
    Node,
    Port,
    SetDelay,
    SetGain,
    StartMember,
    StopMember,
    Unlink,
)
from pwgroup.supervisor.reconcile import reconcile

ADDR = "AA:BB:CC:00:00:01"


class Builder:
    def __init__(self) -> None:
        self.g = Graph()
        self.next = 100

    def _id(self) -> int:
        self.next += 1
        return self.next

    def node(
        self,
        name: str,
        media_class: str,
        props: dict,
        ins: bool,
        outs: bool,
        monitor: bool = False,
        controls: dict | None = None,
    ) -> Node:  # type: ignore[type-arg]
        nid = self._id()
        node = Node(nid, name, media_class, {"node.name": name, **props}, controls or {})
        self.g.nodes[nid] = node
        for ch in ("FL", "FR"):
            if ins:
                pid = self._id()
                self.g.ports[pid] = Port(pid, nid, f"in_{ch}", "in", ch)
            if outs:
                pid = self._id()
                self.g.ports[pid] = Port(pid, nid, f"out_{ch}", "out", ch, monitor=monitor)
        return node

    def sink(self, group: str = "g") -> Node:
        return self.node(
            layout.sink_name(group),
            "Audio/Sink",
            {layout.PROP_GROUP: group, layout.PROP_ROLE: layout.ROLE_SINK},
            True,
            True,
            monitor=True,
        )

    def speaker(self, addr: str = ADDR) -> Node:
        return self.node(
            f"bluez_output.{addr.replace(':', '_')}.1",
            "Audio/Sink",
            {"device.api": "bluez5", "api.bluez5.address": addr},
            True,
            True,
            monitor=True,
        )

    def member(self, group: str, addr: str, delay_s: float = 0.5 / 48000) -> tuple[Node, Node]:
        base = {layout.PROP_GROUP: group, layout.PROP_MEMBER: addr}
        controls = {layout.LINE_A: delay_s, layout.LINE_B: delay_s, layout.GAIN_A: 1.0, layout.GAIN_B: 0.0}
        n_in = self.node(
            "in", "Stream/Input/Audio", {**base, layout.PROP_ROLE: layout.ROLE_IN}, True, False, controls=controls
        )
        n_out = self.node("out", "Stream/Output/Audio", {**base, layout.PROP_ROLE: layout.ROLE_OUT}, False, True)
        return n_in, n_out

    def link_all(self, out_node: Node, in_node: Node) -> None:
        for p in self.g.ports_of(out_node.id, "out"):
            for q in self.g.ports_of(in_node.id, "in"):
                if p.channel == q.channel:
                    lid = self._id()
                    self.g.links[lid] = Link(lid, out_node.id, p.id, in_node.id, q.id)


def spec(*members: MemberSpec) -> GroupSpec:
    return GroupSpec("g", "G", members)


def full(delay_s: float = 0.5 / 48000) -> tuple[Builder, Node, Node, Node, Node]:
    b = Builder()
    sink, spk = b.sink(), b.speaker()
    m_in, m_out = b.member("g", ADDR, delay_s)
    b.link_all(sink, m_in)
    b.link_all(m_out, spk)
    return b, sink, spk, m_in, m_out


def test_empty_graph_creates_the_sink_first() -> None:
    assert reconcile(spec(MemberSpec(ADDR)), Graph(), "g") == [CreateSink(spec(MemberSpec(ADDR)))]


def test_missing_member_is_started() -> None:
    b = Builder()
    b.sink()
    b.speaker()
    assert reconcile(spec(MemberSpec(ADDR, 10.0)), b.g, "g") == [StartMember("g", MemberSpec(ADDR, 10.0))]


def test_unlinked_member_gets_links_by_channel() -> None:
    b = Builder()
    sink, spk = b.sink(), b.speaker()
    m_in, m_out = b.member("g", ADDR)
    actions = reconcile(spec(MemberSpec(ADDR)), b.g, "g")
    assert all(isinstance(a, LinkPorts) for a in actions) and len(actions) == 4
    pairs = {
        (
            b.g.ports[a.out_port].node_id,
            b.g.ports[a.in_port].node_id,  # type: ignore[union-attr]
            b.g.ports[a.out_port].channel,
            b.g.ports[a.in_port].channel,
        )
        for a in actions
    }  # type: ignore[union-attr]
    assert pairs == {
        (sink.id, m_in.id, "FL", "FL"),
        (sink.id, m_in.id, "FR", "FR"),
        (m_out.id, spk.id, "FL", "FL"),
        (m_out.id, spk.id, "FR", "FR"),
    }


def test_converged_group_needs_nothing_twice() -> None:
    b, *_ = full()
    assert reconcile(spec(MemberSpec(ADDR, 0.0)), b.g, "g") == []
    assert reconcile(spec(MemberSpec(ADDR, 0.0)), b.g, "g") == []


def test_changed_delay_is_one_set_delay() -> None:
    b, _, _, m_in, _ = full()
    assert reconcile(spec(MemberSpec(ADDR, 37.5)), b.g, "g") == [SetDelay("g", ADDR, m_in.id, 37.5)]


def test_absent_speaker_keeps_sink_and_element_and_asks_for_nothing() -> None:
    b, _, spk, *_ = full()
    del b.g.nodes[spk.id]
    for pid in [p.id for p in b.g.ports.values() if p.node_id == spk.id]:
        del b.g.ports[pid]
    for lid in [lk.id for lk in b.g.links.values() if spk.id in (lk.in_node, lk.out_node)]:
        del b.g.links[lid]
    assert reconcile(spec(MemberSpec(ADDR)), b.g, "g") == []


def test_stray_link_from_member_is_removed() -> None:
    b, _, _, _, m_out = full()
    other = b.speaker("AA:BB:CC:00:00:09")
    b.link_all(m_out, other)
    stray = {lk.id for lk in b.g.links.values() if lk.in_node == other.id}
    actions = reconcile(spec(MemberSpec(ADDR)), b.g, "g")
    assert {a.link_id for a in actions if isinstance(a, Unlink)} == stray and len(actions) == len(stray)


def test_delete_stops_members_then_destroys_sink() -> None:
    b, sink, _, m_in, m_out = full()
    actions = reconcile(None, b.g, "g")
    assert actions == [StopMember("g", ADDR, None, (m_in.id, m_out.id)), DestroySink("g", sink.id)]


def test_removed_member_is_stopped_others_untouched() -> None:
    b, *_ = full()
    m2_in, m2_out = b.member("g", "AA:BB:CC:00:00:02")
    actions = reconcile(spec(MemberSpec(ADDR)), b.g, "g")
    assert actions == [StopMember("g", "AA:BB:CC:00:00:02", None, (m2_in.id, m2_out.id))]


def test_half_an_element_is_stopped_to_be_started_whole() -> None:
    b = Builder()
    b.sink()
    b.speaker()
    m_in, m_out = b.member("g", ADDR)
    del b.g.nodes[m_out.id]
    assert reconcile(spec(MemberSpec(ADDR)), b.g, "g") == [StopMember("g", ADDR, None, (m_in.id,))]


def _feeds(b: Builder, actions: list, sink: Node) -> set[tuple[str, str]]:  # type: ignore[type-arg]
    return {
        (b.g.ports[a.out_port].channel, b.g.ports[a.in_port].channel)
        for a in actions
        if isinstance(a, LinkPorts) and b.g.ports[a.out_port].node_id == sink.id
    }


def test_channel_roles_decide_the_feed_links() -> None:
    for channels, want in (
        ("both", {("FL", "FL"), ("FR", "FR")}),
        ("left", {("FL", "FL"), ("FL", "FR")}),
        ("right", {("FR", "FL"), ("FR", "FR")}),
        ("mono", {("FL", "FL"), ("FL", "FR"), ("FR", "FL"), ("FR", "FR")}),
    ):
        b = Builder()
        sink, _spk = b.sink(), b.speaker()
        b.member("g", ADDR)
        actions = reconcile(spec(MemberSpec(ADDR, channels=channels)), b.g, "g")
        assert _feeds(b, actions, sink) == want, channels


def test_changing_the_role_moves_the_links_and_halves_a_mono_gain() -> None:
    b, sink, _, m_in, _ = full()
    actions = reconcile(spec(MemberSpec(ADDR, channels="left")), b.g, "g")
    right_feed = [
        lk.id
        for lk in b.g.links.values()
        if lk.out_node == sink.id and b.g.ports[lk.out_port].channel == "FR" and lk.in_node == m_in.id
    ]
    assert [a.link_id for a in actions if isinstance(a, Unlink)] == right_feed
    assert _feeds(b, actions, sink) == {("FL", "FR")}
    mono = reconcile(spec(MemberSpec(ADDR, channels="mono", volume=0.8)), b.g, "g")
    assert SetGain("g", ADDR, m_in.id, 0.4) in mono


def test_volume_is_one_set_gain_and_then_nothing() -> None:
    b, _, _, m_in, _ = full()
    assert reconcile(spec(MemberSpec(ADDR, volume=0.5)), b.g, "g") == [SetGain("g", ADDR, m_in.id, 0.5)]
    b.g.nodes[m_in.id] = Node(m_in.id, m_in.name, m_in.media_class, m_in.props, {**m_in.controls, layout.GAIN_A: 0.5})
    assert reconcile(spec(MemberSpec(ADDR, volume=0.5)), b.g, "g") == []


def test_a_calibration_probe_feeding_an_element_is_left_alone() -> None:
    b, _, _, m_in, _ = full()
    probe = b.node("pwgroup-feed.1", "Stream/Output/Audio", {layout.PROP_ROLE: layout.ROLE_PROBE}, False, True)
    b.link_all(probe, m_in)
    assert reconcile(spec(MemberSpec(ADDR)), b.g, "g") == []
    stranger = b.node("app", "Stream/Output/Audio", {}, False, True)
    b.link_all(stranger, m_in)
    assert len([a for a in reconcile(spec(MemberSpec(ADDR)), b.g, "g") if isinstance(a, Unlink)]) == 2
