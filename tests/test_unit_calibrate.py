"""The calibration session's pure parts: microphone choice, stagger, delays, verification verdict."""

from __future__ import annotations

import pytest

from pwgroup.calibrate.session import MemberResult, Report, find_microphone, guess_latencies, solve, stagger_for
from pwgroup.graph import layout
from pwgroup.model import Graph, Node, UserError


def _graph(*nodes: Node) -> Graph:
    g = Graph()
    for n in nodes:
        g.nodes[n.id] = n
    return g


MIC = Node(1, "alsa_input.usb-mic", "Audio/Source")
SINK = Node(2, "bluez_output.AA_BB_CC_00_00_01.1", "Audio/Sink")


def test_microphone_is_found_or_refused_with_the_reason() -> None:
    assert find_microphone(_graph(MIC, SINK), None) is MIC
    assert find_microphone(_graph(MIC, SINK), "1") is MIC
    for key, needle in ((SINK.name, "is a sink"), ("x.monitor", "monitor"), ("nope", "no microphone named")):
        with pytest.raises(UserError, match=needle):
            find_microphone(_graph(MIC, SINK), key)
    with pytest.raises(UserError, match="no microphone found"):
        find_microphone(_graph(SINK), None)
    with pytest.raises(UserError, match="several microphones"):
        find_microphone(_graph(MIC, Node(3, "other", "Audio/Source/Virtual")), None)


def test_stagger_fits_the_delay_lines_and_delays_align_on_the_slowest() -> None:
    for count in range(1, 9):
        assert stagger_for(count) > 0 and stagger_for(count) * (count - 1) < layout.MAX_DELAY_S
    assert stagger_for(8) == 0.5
    assert solve({"a": 142.5, "b": 290.0, "c": 200.0}) == {"a": 147.5, "b": 0.0, "c": 90.0}


def _report(*residuals: float | None) -> Report:
    members = tuple(MemberResult(f"s{i}", "ok", 100.0, 0.0, 40.0, r) for i, r in enumerate(residuals))
    return Report("g", "mic", members, 1.0)


def test_verification_verdict_is_the_measured_spread() -> None:
    assert _report(0.0, 0.001, -0.0005).verified
    assert _report(0.0, 0.001, -0.0005).worst_residual_ms == pytest.approx(0.0015)
    assert not _report(0.0, 45.0).verified
    assert not _report(None, None).verified  # nothing heard after alignment: nothing proven
    assert _report(0.2, -0.3).as_dict()["worst_residual_ms"] == 0.5


def test_reported_latency_prefers_bluez_then_pipewire_and_skips_silence() -> None:
    present = ["A", "B", "C", "D"]
    bluez = {"A": 180.0, "B": 0.0}
    pipewire = {"A": 400.0, "B": 61.3, "C": 0.0}
    guesses = guess_latencies(present, bluez, pipewire)
    assert guesses == {"A": (180.0, "bluez"), "B": (61.3, "pipewire")}
    assert solve({k: v for k, (v, _) in guesses.items()}) == pytest.approx({"A": 0.0, "B": 118.7})


def test_bluez5s_codec_guess_is_named_as_one_at_each_version() -> None:
    from pwgroup.calibrate.session import reports_fallback
    from pwgroup.graph import bluez_fallback_ms
    from pwgroup.graph.pipewire import pipewire_capabilities

    old, new = pipewire_capabilities("0.3.65", None, None), pipewire_capabilities("1.4.2", None, None)
    assert old.bluez_fallback_ms["sbc"] == 200.0 and new.bluez_fallback_ms["sbc"] == 125.0
    assert bluez_fallback_ms((1, 0, 5))["aac"] == 200.0 and bluez_fallback_ms((1, 2, 0))["aac"] == 125.0
    sbc, was, now = {"api.bluez5.codec": "sbc"}, old.bluez_fallback_ms, new.bluez_fallback_ms
    assert reports_fallback(sbc, 200.0, was) and not reports_fallback(sbc, 200.0, now)
    assert reports_fallback(sbc, 125.0, now) and not reports_fallback(sbc, 142.3, now)
    assert not reports_fallback({}, 125.0, now)  # no codec: nothing to compare with
    guesses = guess_latencies(["A", "B"], {}, {"A": 146.3, "B": 180.0}, fallback={"A"})
    assert guesses == {"A": (146.3, "pipewire-fallback"), "B": (180.0, "pipewire")}


def test_a_reported_report_claims_no_verification() -> None:
    members = (MemberResult("A", "reported", 180.0, 0.0, None, None, source="bluez"),)
    data = Report("g", None, members, 0.1, method="reported").as_dict()
    assert data["method"] == "reported" and data["verified"] is None and data["members"][0]["source"] == "bluez"
