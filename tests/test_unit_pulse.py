"""The PulseAudio backend without a server: module arguments that nothing from the air can bend, and the
server's state read as the shared model, so the one reconciler drives both backends."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from pwgroup.graph import layout
from pwgroup.graph.pulse import (
    PROP_SWAP_UNTIL,
    ROLE_LINK,
    ROLE_RECORD,
    PaSink,
    PaSource,
    PaStream,
    Snapshot,
    hex_value,
    joining_in,
    loopback_args,
    null_sink_args,
    proplist_arg,
    record_args,
    to_graph,
    unhex,
)
from pwgroup.graph.pulsesync import line_settled
from pwgroup.graph.select import choose
from pwgroup.model import GroupSpec, MemberSpec, SetDelay, UserError, speakers_in
from pwgroup.supervisor.reconcile import reconcile

HOSTILE = ['a b=c "x', "quote ' \\ backslash", "new\nline", "\x1b[31m", "\u202eevil", "} ] = {", "Z" * 4096, "\udcff"]
ADDR = "AA:BB:CC:00:00:01"
NOW = 1_800_000_000.0  # the wall-clock time the server's state is read at


@pytest.mark.parametrize("text", HOSTILE)
def test_hex_values_carry_any_text_back(text: str) -> None:
    value = hex_value(text)
    assert value.startswith("hex:") and all(c in "0123456789abcdef" for c in value[4:])
    assert unhex(value[4:-2]) == text  # what PulseAudio hands back, without the final NUL


@pytest.mark.parametrize("text", [t for t in HOSTILE if not t.isalnum()])
def test_unsafe_property_values_are_refused_not_quoted(text: str) -> None:
    with pytest.raises(ValueError):
        proplist_arg({"device.description": text})


@pytest.mark.parametrize("text", HOSTILE)
def test_module_arguments_hold_no_text_from_anyone(text: str) -> None:
    args = [
        null_sink_args(GroupSpec("living-room", text)),
        record_args("living-room", text, 37, 12, 0),
        loopback_args("living-room", 40, 7, 37),
    ]
    for arg in args:
        # One quoted proplist per property argument, and inside it only safe characters.
        assert text not in arg and "\n" not in arg and "'" not in arg
        assert all(ch.isalnum() or ch in ' ._:=-",' for ch in arg), arg
    assert "latency_msec=187" in args[2] and "sink=7" in args[2] and "source=40" in args[2]


def snapshot(speaker_present: bool = True, loopback: bool = True, delay: int = 37) -> Snapshot:
    group = PaSink(
        3,
        "pwgroup.g",
        "g",
        ("front-left", "front-right"),
        10,
        20,
        48000,
        {layout.PROP_GROUP: "g", layout.PROP_ROLE: layout.ROLE_SINK},
    )
    speaker = PaSink(
        5,
        "bluez_sink.AA_BB_CC_00_00_01.a2dp_sink",
        "JBL",
        ("front-left", "front-right"),
        11,
        None,
        48000,
        # PulseAudio's own bluez5 names, which the backend translates to the model's.
        {"device.api": "bluez", "device.string": ADDR, "bluetooth.protocol": "a2dp_sink", "bluetooth.codec": "sbc"},
    )
    record = PaSource(
        14,
        "pwgroup.g.AA_BB_CC_00_00_01.rec0",
        ("front-left", "front-right"),
        21,
        None,
        {
            layout.PROP_GROUP: "g",
            layout.PROP_ROLE: ROLE_RECORD,
            "pwgroup.member.hex": ADDR.encode().hex(),
            layout.PROP_DELAY_MS: str(delay),
        },
    )
    snap = Snapshot(sinks=[group], sources=[record], rate=48000)
    snap.source_outputs.append(PaStream(1, 21, 10, False))  # the record reads the group's monitor
    if speaker_present:
        snap.sinks.append(speaker)
        if loopback:
            link = {layout.PROP_GROUP: "g", layout.PROP_ROLE: ROLE_LINK}
            snap.source_outputs.append(PaStream(2, 22, 14, False, link))
            snap.sink_inputs.append(PaStream(8, 22, 5, False, link))
    return snap


def test_server_state_reads_as_the_model() -> None:
    graph = to_graph(snapshot(), NOW)
    (spk,) = speakers_in(graph)
    assert spk.address == ADDR and spk.codec == "sbc" and spk.profile == "a2dp-sink"
    state = layout.observe_group(graph, "g")
    assert state.sink is not None and state.sink.name == "pwgroup.g"
    (m,) = state.members
    assert m.speaker == ADDR and m.present and m.linked and m.delay_ms == 37.0


def test_reconcile_is_quiet_on_a_whole_group_and_sets_delays_in_whole_milliseconds() -> None:
    graph = to_graph(snapshot(), NOW)
    assert reconcile(GroupSpec("g", "g", (MemberSpec(ADDR, 37.0),)), graph, "g") == []
    # 37.4 ms is 37 ms at PulseAudio's resolution: no change asked for, so no endless resetting.
    assert reconcile(GroupSpec("g", "g", (MemberSpec(ADDR, 37.4),)), graph, "g") == []
    (action,) = reconcile(GroupSpec("g", "g", (MemberSpec(ADDR, 12.0),)), graph, "g")
    assert isinstance(action, SetDelay) and action.delay_ms == 12.0


def test_an_absent_speaker_keeps_its_member_and_a_returning_one_is_linked_again() -> None:
    desired = GroupSpec("g", "g", (MemberSpec(ADDR, 37.0),))
    gone = to_graph(snapshot(speaker_present=False), NOW)
    (m,) = layout.observe_group(gone, "g").members
    assert not m.present and m.delay_ms == 37.0
    assert reconcile(desired, gone, "g") == []  # nothing to do, and nothing torn down
    back = to_graph(snapshot(loopback=False), NOW)
    actions = reconcile(desired, back, "g")
    assert actions and all(type(a).__name__ == "LinkPorts" for a in actions)


def test_backend_override_and_a_bad_one() -> None:
    choice = asyncio.run(choose({"PWGROUP_BACKEND": "pulse"}))
    assert choice.name == "pulse" and "PWGROUP_BACKEND" in choice.reason
    with pytest.raises(UserError):
        asyncio.run(choose({"PWGROUP_BACKEND": "alsa"}))


def test_a_muted_line_is_a_link_only_beside_a_playing_one_while_its_change_runs() -> None:
    """A joining loopback (muted until it settles) is not a link yet, so a reconcile pass takes it up again; the
    new line of a delay change, muted beside the old one that plays, is the member's link while the change runs,
    and a joining line once it is overdue (the pwgroup making it stopped midway)."""
    desired = GroupSpec("g", "g", (MemberSpec(ADDR, 37.0),))
    joining = snapshot()
    joining.sink_inputs[0] = replace(joining.sink_inputs[0], mute=True)
    graph = to_graph(joining, NOW)
    (m,) = layout.observe_group(graph, "g").members
    assert m.present and not m.linked
    actions = reconcile(desired, graph, "g")
    assert actions and all(type(a).__name__ == "LinkPorts" for a in actions)
    # A delay change: an older record at 20 ms still plays to the speaker while the new one waits, muted.
    swapping = snapshot()
    swapping.sink_inputs[0] = replace(swapping.sink_inputs[0], mute=True)
    old = replace(swapping.sources[0], index=13, name="pwgroup.g.AA_BB_CC_00_00_01.rec1", owner_module=31)
    old = replace(old, props={**old.props, layout.PROP_DELAY_MS: "20"})
    link = swapping.sink_inputs[0].props
    swapping.sources.insert(0, old)
    until = int(NOW) + 60
    swapping.sources[1] = replace(swapping.sources[1], props={**swapping.sources[1].props, PROP_SWAP_UNTIL: str(until)})
    swapping.source_outputs += [PaStream(4, 31, 10, False), PaStream(5, 32, 13, False, link)]
    swapping.sink_inputs.append(PaStream(9, 32, 5, False, link))
    (m,) = layout.observe_group(to_graph(swapping, NOW), "g").members
    assert m.linked and m.delay_ms == 37.0
    assert reconcile(desired, to_graph(swapping, NOW), "g") == []
    assert joining_in(swapping, now=until - 1) == set() and joining_in(swapping, now=until + 1) == {8}
    # The graph is what the server said read at a given time: the same state, read once the change is overdue,
    # shows the new line as joining, so a pass takes it up.
    (late,) = layout.observe_group(to_graph(swapping, until + 1), "g").members
    assert late.delay_ms == 37.0 and not late.linked


def test_a_joining_line_is_settled_when_steady_unpulled_and_in_step() -> None:
    base = 48000

    def seen(rates: list[int], others: list[float | None]) -> list[tuple[float, int, float | None]]:
        return [(i * 0.1, r, o) for i, (r, o) in enumerate(zip(rates, others, strict=True))]

    steady = [47991] * 15
    assert line_settled(seen(steady, [47990.0] * 15), base)
    assert line_settled(seen(steady, [None] * 15), base)  # the only line of its group
    assert not line_settled(seen(steady[:5], [47990.0] * 5), base)  # not steady for long enough yet
    # Pulling at the 1 % cap is steady too, but not settled; nor is a line steady while the others are not.
    assert not line_settled(seen([47528] * 15, [None] * 15), base)
    assert not line_settled(seen(steady, [47700.0] * 15), base)
    # Still untouched by its control (an idle group sink may first render after 2 s): not settled before 3 s.
    assert not line_settled(seen([base] * 15, [None] * 15), base)
    assert line_settled(seen([base] * 31, [None] * 31), base)
    # Coming in from the cap: settled only a second after the rate stopped moving.
    ramp = [47528, 47600, 47800, 47950, 47985, 47990, 47991, 47991, 47990, 47991, 47991]
    assert not line_settled(seen(ramp, [47991.0] * len(ramp)), base)
    assert line_settled(seen(ramp + [47991] * 5, [47991.0] * (len(ramp) + 5)), base)
