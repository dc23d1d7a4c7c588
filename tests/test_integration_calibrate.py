"""Acoustic calibration in the virtual room: hidden latencies are recovered and the group ends aligned."""

from __future__ import annotations

import json

import pytest
from test_integration_delays import arrivals

from pwgroup.sim.room import MIC_NAME, RATE, Room


@pytest.mark.parametrize(("method", "misleading"), [("sweep", 0), ("fast", 1)])
def test_calibration_aligns_the_group_on_the_truth_channels(
    cli, room: Room, group: str, method: str, misleading: int
) -> None:
    # Start far from aligned: the room hides 100, 150 and 200 ms; add a misleading delay too.
    cli("delay", "set", group, room.speakers[misleading].address, "40", check=True)
    code, out, err = cli("calibrate", group, "--method", method, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["method"] == method and [m["status"] for m in report["members"]] == ["ok", "ok", "ok"]
    hidden = [room.speakers[i].latency_samples * 1000 / RATE for i in range(3)]
    measured = [m["latency_ms"] for m in report["members"]]
    # The microphone path adds the same constant to every speaker; differences are the hidden ones.
    for i in (1, 2):
        assert abs((measured[i] - measured[0]) - (hidden[i] - hidden[0])) < 0.05
    # The verification pass heard them together (within 0.05 ms), and so do the truth channels.
    assert report["verified"] is True and report["worst_residual_ms"] <= 0.05, report
    lags = arrivals(room, group, 3)
    assert max(lags) - min(lags) <= 2, lags
    # Fast mode's probes came and went: nothing of them is left in the graph.
    assert not any(n.name.startswith("pwgroup-feed.") for n in room.dump().nodes.values())


def test_calibration_skips_an_absent_member_and_says_so(cli, room: Room, group: str) -> None:
    gone = room.speakers[2].address
    before = json.loads(cli("status", group, "--json", check=True)[1])["groups"][0]["members"][2]["delay_ms"]
    room.disconnect(gone)
    try:
        code, out, err = cli("calibrate", group, "--json")
        assert code == 0, err
        members = {m["speaker"]: m for m in json.loads(out)["members"]}
        assert members[gone]["status"] == "absent" and members[gone]["delay_ms"] == before
        assert gone in err and "not calibrated" in err
        assert all(m["status"] == "ok" for k, m in members.items() if k != gone)
    finally:
        room.connect(gone)
    cli("delay", "set", group, room.speakers[0].address, "0", check=True)  # one pass relinks the speaker


def test_calibration_rejects_bad_microphones(cli, room: Room, group: str) -> None:
    for mic, needle in (
        (room.speakers[0].node_name, "is a sink"),
        ("no-such-mic", "no microphone named"),
        (f"pwgroup.{group}.monitor", "monitor"),
    ):
        code, _out, err = cli("calibrate", group, "--mic", mic)
        assert code == 2 and needle in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1
    code, _out, err = cli("calibrate", "nope")
    assert code == 2 and "no group named" in err


def test_calibration_under_room_noise_still_aligns(cli, room: Room, group: str) -> None:
    # About 0 dB SNR: the speakers reach the microphone at roughly -12 dBFS, and so does the noise.
    room.set_noise(-12.0)
    try:
        code, out, err = cli("calibrate", group, "--json")
    finally:
        room.set_noise(None)
    assert code == 0, err
    members = json.loads(out)["members"]
    assert all(m["status"] == "ok" and m["confidence_db"] > 18 for m in members), members
    lags = arrivals(room, group, 3)
    assert max(lags) - min(lags) <= 2, lags


def test_reported_method_sets_delays_from_bluez_and_says_it_is_a_guess(cli, room: Room, group: str) -> None:
    from pwgroup.sim.fakebluez import reported_delay_tenths

    code, out, err = cli("calibrate", group, "--method", "reported")
    assert code == 0, err
    assert "a guess, not measured" in out
    code, out, err = cli("calibrate", group, "--method", "reported", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["method"] == "reported" and report["verified"] is None and report["microphone"] is None
    told = [reported_delay_tenths(room.speakers[i]) / 10 for i in range(3)]
    assert [m["status"] for m in report["members"]] == ["reported"] * 3
    assert [m["source"] for m in report["members"]] == ["bluez"] * 3
    assert [m["latency_ms"] for m in report["members"]] == told
    applied = json.loads(cli("status", group, "--json", check=True)[1])["groups"][0]["members"]
    for m, t in zip(applied, told, strict=True):
        assert abs(m["delay_ms"] - (max(told) - t)) <= 1000 / RATE  # within a sample of the guess
    code, _out, err = cli("calibrate", group, "--method", "reported", "--mic", "x")
    assert code == 2 and "uses no microphone" in err


@pytest.mark.parametrize("method", ["sweep", "fast"])
def test_a_speaker_whose_output_is_cut_is_not_heard_and_keeps_its_delay(
    cli, room: Room, group: str, method: str
) -> None:
    quiet = room.speakers[1]
    cli("delay", "set", group, quiet.address, "33", check=True)
    graph = room.dump()
    emit, mic = graph.node_by_name(quiet.emit_name), graph.node_by_name(MIC_NAME)
    assert emit is not None and mic is not None
    cut = graph.links_between(emit.id, mic.id)
    assert cut
    for lk in cut:  # the speaker's node stays and plays; the microphone just never hears it
        room.pw_cli("destroy", str(lk.id))
    try:
        code, out, err = cli("calibrate", group, "--json", "--method", method)
    finally:
        room.link_nodes(quiet.emit_name, MIC_NAME)
    assert code == 0, err
    report = json.loads(out)
    members = {m["speaker"]: m for m in report["members"]}
    assert members[quiet.address]["status"] == "not-heard", json.dumps(report)
    assert members[quiet.address]["delay_ms"] == 33.0 and members[quiet.address]["latency_ms"] is None
    assert report["signal_s"] == 2.0  # it tried a four times longer signal before giving up on it
    assert all(m["status"] == "ok" for k, m in members.items() if k != quiet.address)
    assert quiet.address in err and "not calibrated" in err
    status = json.loads(cli("status", group, "--json", check=True)[1])["groups"][0]["members"]
    assert {m["speaker"]: m["delay_ms"] for m in status}[quiet.address] == 33.0


@pytest.mark.parametrize("method", ["sweep", "fast"])
def test_a_microphone_that_records_silence_is_a_clear_error(cli, room: Room, group: str, method: str) -> None:
    from pwgroup.graph import spajson

    props = {
        "factory.name": "support.null-audio-sink",
        "node.name": "pwgroup-test.deaf-mic",
        "media.class": "Audio/Source/Virtual",
        "audio.position": ["MONO"],
        "object.linger": True,
    }
    room.pw_cli("create-node", "adapter", spajson.dumps(props))
    deaf = room.wait_graph(lambda g: g.node_by_name("pwgroup-test.deaf-mic") is not None).node_by_name(
        "pwgroup-test.deaf-mic"
    )
    assert deaf is not None
    try:
        before = json.loads(cli("status", group, "--json", check=True)[1])["groups"][0]["members"]
        code, _out, err = cli("calibrate", group, "--mic", "pwgroup-test.deaf-mic", "--method", method)
        assert code == 2 and "recorded silence" in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1
        after = json.loads(cli("status", group, "--json", check=True)[1])["groups"][0]["members"]
        assert [m["delay_ms"] for m in after] == [m["delay_ms"] for m in before]  # the group is as it was
    finally:
        room.pw_cli("destroy", str(deaf.id))
