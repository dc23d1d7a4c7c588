from __future__ import annotations

import json

import pytest

from pwgroup.cli import safe_text
from pwgroup.graph import layout, pwdump, spajson
from pwgroup.model import UserError, check_group_name, normalize_address


def test_normalize_address() -> None:
    assert normalize_address("aa_bb_cc_00_00_01") == "AA:BB:CC:00:00:01"
    assert normalize_address("AA:BB:CC:00:00:01") == "AA:BB:CC:00:00:01"
    assert normalize_address("bluez_output.AA_BB_CC_00_00_01.1") is None
    assert normalize_address("-d") is None


def test_group_names() -> None:
    assert check_group_name("living-room") == "living-room"
    for bad in ("", "-d", "a b", "a:b", "x" * 49, "ä"):
        with pytest.raises(UserError):
            check_group_name(bad)


@pytest.mark.parametrize("text", ['a"b', "a\\b", "line\nbreak", "-d", "a:b", "\x1b[31mred", "} ] = {", "x" * 10000])
def test_spajson_quote_round_trips_through_json(text: str) -> None:
    # SPA-JSON strings are JSON strings; JSON's parser must get the original back.
    assert json.loads(spajson.quote(text)) == text


def test_spajson_dumps_nested() -> None:
    out = spajson.dumps({"a": [1, 2.5, "x"], "b": {"c": True}})
    assert '"a" = [ 1 2.5 "x" ]' in out
    assert '"c" = true' in out


def test_safe_text_escapes_controls_and_direction_marks() -> None:
    assert safe_text("\x1b[31mred") == "\\x1b[31mred"
    assert safe_text("a\nb") == "a\\nb".replace("\\n", "\\x0a")
    assert safe_text("\u202eevil") == "\\u202eevil"
    assert safe_text("[bold]x[/bold]") == "[bold]x[/bold]"
    assert safe_text("x" * 100, limit=10) == "x" * 9 + "…"


def test_delay_control_value_lands_on_the_sample() -> None:
    for ms in (0.0, 37.5, 120.0, 0.0208333, 1899.99):
        value = layout.delay_control_value(ms, 48000)
        # The builtin delay truncates seconds*rate, in float32.
        import numpy as np

        assert int(np.float32(value) * np.float32(48000)) == layout.delay_samples(ms, 48000)


def _dump(objs: list[dict]) -> str:  # type: ignore[type-arg]
    return json.dumps(objs)


NODE = {
    "id": 50,
    "type": "PipeWire:Interface:Node",
    "info": {
        "props": {
            "node.name": "bluez_output.AA_BB_CC_00_00_01.1",
            "media.class": "Audio/Sink",
            "device.api": "bluez5",
            "api.bluez5.address": "AA:BB:CC:00:00:01",
            "node.description": "JBL",
        },
        "params": {},
    },
}
PORT = {
    "id": 51,
    "type": "PipeWire:Interface:Port",
    "info": {"direction": "input", "props": {"node.id": 50, "port.name": "playback_FL", "audio.channel": "FL"}},
}


def test_pwdump_parse_and_removal() -> None:
    graph = pwdump.parse(_dump([NODE, PORT]))
    assert graph.nodes[50].name.startswith("bluez_output")
    assert graph.ports_of(50, "in")[0].channel == "FL"
    pwdump.apply(graph, [{"id": 50, "info": None}])
    assert 50 not in graph.nodes


def test_stream_decoder_splits_concatenated_arrays() -> None:
    dec = pwdump.StreamDecoder()
    text = json.dumps([NODE]) + "\n" + json.dumps([PORT])
    batches = list(dec.feed(text[:40])) + list(dec.feed(text[40:]))
    assert [b[0]["id"] for b in batches] == [50, 51]


def test_find_speaker_by_address_or_name() -> None:
    graph = pwdump.parse(_dump([NODE]))
    assert layout.find_speaker(graph, "aa_bb_cc_00_00_01").node_id == 50  # type: ignore[union-attr]
    assert layout.find_speaker(graph, "bluez_output.AA_BB_CC_00_00_01.1").node_id == 50  # type: ignore[union-attr]
    assert layout.find_speaker(graph, "AA:BB:CC:00:00:02") is None


def _settings(**entries: object) -> dict:  # type: ignore[type-arg]
    # Shaped as pw-dump 0.3.65 prints Metadata: props at the top level, no "info".
    return {
        "id": 30,
        "type": "PipeWire:Interface:Metadata",
        "version": 3,
        "props": {"metadata.name": "settings", "object.serial": 30},
        "metadata": [{"subject": 0, "key": k, "type": "", "value": v} for k, v in entries.items()],
    }


def test_settings_metadata_gives_rate_and_quantum() -> None:
    graph = pwdump.parse(_dump([NODE, _settings(**{"clock.rate": 44100, "clock.quantum": 1024})]))
    assert 50 in graph.nodes
    assert (layout.graph_rate(graph), layout.graph_quantum(graph)) == (44100, 1024)
    # A monitor update lists every current entry; a forced quantum wins over the default one.
    pwdump.apply(graph, [_settings(**{"clock.rate": 44100, "clock.quantum": 1024, "clock.force-quantum": 256})])
    assert layout.graph_quantum(graph) == 256
    pwdump.apply(graph, [_settings(**{"clock.rate": 44100, "clock.quantum": 1024, "clock.force-quantum": 0})])
    assert layout.graph_quantum(graph) == 1024
    pwdump.apply(graph, [{"id": 30, "props": None}])
    assert graph.settings == {} and layout.graph_rate(graph) == layout.DEFAULT_RATE


def test_stream_decoder_keeps_text_split_inside_a_string() -> None:
    node = json.loads(json.dumps(NODE))
    node["info"]["props"]["node.description"] = "} ] = { \u202e\u00e9 [x"
    text = json.dumps([node], ensure_ascii=False) + "\n" + json.dumps([PORT])
    for cut in range(1, len(text)):
        dec = pwdump.StreamDecoder()
        batches = list(dec.feed(text[:cut])) + list(dec.feed(text[cut:]))
        assert [b[0]["id"] for b in batches] == [50, 51]
        assert batches[0][0]["info"]["props"]["node.description"] == node["info"]["props"]["node.description"]


def test_a_bluetooth_port_reports_its_transport_latency() -> None:
    # Shaped as 0.3.65's bluez5 media-sink reports it: one quantum plus the transport delay in ns.
    port = json.loads(json.dumps(PORT))
    port["info"]["params"] = {
        "Latency": [
            {
                "direction": "Input",
                "minQuantum": 1.0,
                "maxQuantum": 1.0,
                "minRate": 0,
                "maxRate": 0,
                "minNs": 150_000_000,
                "maxNs": 150_000_000,
            },
            {
                "direction": "Output",
                "minQuantum": 0.0,
                "maxQuantum": 0.0,
                "minRate": 0,
                "maxRate": 0,
                "minNs": 0,
                "maxNs": 0,
            },
        ]
    }
    graph = pwdump.parse(_dump([NODE, port]))
    assert graph.ports[51].latency_ms(1024, 48000) == pytest.approx(150.0 + 1024 / 48)
    # An update without params keeps what was known; the plain port reports nothing.
    pwdump.apply(graph, [PORT])
    assert graph.ports[51].latency == (1.0, 0, 150_000_000)
    assert pwdump.parse(_dump([NODE, PORT])).ports[51].latency_ms(1024, 48000) is None
