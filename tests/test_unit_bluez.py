"""BlueZ without a bus: property parsing, error mapping, the joined speaker view, hostile names, reconnect timing."""

from __future__ import annotations

import asyncio
import io
import json
import random
import unicodedata

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast._private.unmarshaller import Unmarshaller

from pwgroup.bluez import errors
from pwgroup.bluez.client import BluezClient
from pwgroup.bluez.props import (
    A2DP_SINK_UUID,
    BATTERY,
    DEVICE,
    TRANSPORT,
    device_from,
    devices_from_objects,
    text_from_bus,
)
from pwgroup.bluez.reconnect import Backoff, Reconnect, reconnect
from pwgroup.bluez.view import join
from pwgroup.cli import SPEAKER_HEADER, safe_text, speaker_rows
from pwgroup.model import Speaker

DEV = "/org/bluez/hci0/dev_AA_BB_CC_00_00_01"


def _device_props(alias: object = "JBL", connected: bool = True, address: object = "AA:BB:CC:00:00:01") -> dict:
    return {
        "Address": address,
        "Alias": alias,
        "Paired": True,
        "Trusted": True,
        "Connected": connected,
        "UUIDs": [A2DP_SINK_UUID.upper(), "0000110c-0000-1000-8000-00805f9b34fb"],
        "Icon": "audio-card",
        "Adapter": "/org/bluez/hci0",
    }


def _speaker(address: str | None = "AA:BB:CC:00:00:01", description: str = "node name") -> Speaker:
    node = f"bluez_output.{(address or 'x').replace(':', '_')}.1"
    return Speaker(node, 40, description, address, codec="sbc_xq", profile="a2dp-sink")


# ---------------------------------------------------------------- properties


def test_device_with_battery_and_transport_below_it() -> None:
    objects = {
        DEV: {DEVICE: _device_props(), BATTERY: {"Percentage": 64}},
        f"{DEV}/sep1/fd0": {TRANSPORT: {"Codec": 2, "State": "active", "Delay": 1503, "Volume": 90}},
        "/org/bluez/hci0/dev_AA_BB_CC_00_00_02": {DEVICE: _device_props(address="AA:BB:CC:00:00:02")},
    }
    first, second = devices_from_objects(objects)
    assert first.audio_sink and first.paired and first.connected and first.icon == "audio-card"
    assert first.battery is not None and first.battery.percentage == 64
    assert first.transport is not None
    assert (first.transport.codec, first.transport.state, first.transport.volume) == ("aac", "active", 90)
    assert first.transport.delay_ms == pytest.approx(150.3)  # Delay counts 0.1 ms
    assert second.battery is None and second.transport is None


def test_wrongly_typed_properties_are_ignored_not_trusted() -> None:
    props = {**_device_props(), "Paired": "yes", "RSSI": True, "UUIDs": "not a list", "Alias": 7, "Name": "fallback"}
    dev = device_from(DEV, props)
    assert dev is not None
    assert not dev.paired and dev.rssi is None and dev.uuids == () and dev.alias == "fallback"
    assert device_from(DEV, {**props, "Address": "not-a-mac"}) is None
    objects = {DEV: {DEVICE: _device_props(), BATTERY: {"Percentage": 250}}}
    assert devices_from_objects(objects)[0].battery.percentage is None  # type: ignore[union-attr]


def test_invalid_utf8_is_decoded_visibly_and_never_reaches_a_str_from_dbus_fast() -> None:
    # A name arriving as bytes (an `ay`, or a peer not speaking D-Bus strings) keeps its bad bytes visible.
    assert text_from_bus(b"Flip\xff\xfe 6") == "Flip\\xff\\xfe 6"
    assert text_from_bus([0x4A, 0xC3, 0x28]) == "J\\xc3("
    assert safe_text(text_from_bus(b"\x1b[2J\xff")) == "\\x1b[2J\\\\xff"
    # On the wire a D-Bus string must be UTF-8: dbus-daemon drops a sender that breaks this, and dbus-fast
    # refuses to decode such a message rather than hand us a broken str (see the integration test too).
    msg = Message.new_signal(
        DEV,
        "org.freedesktop.DBus.Properties",
        "PropertiesChanged",
        "sa{sv}as",
        [DEVICE, {"Alias": Variant("s", "ABCD")}, []],
    )
    raw = bytes(msg._marshall(False)).replace(b"ABCD", b"A\xff\xfeD")
    with pytest.raises(UnicodeDecodeError):
        Unmarshaller(io.BytesIO(raw)).unmarshall()


@pytest.mark.parametrize(
    "name, cls, exit_code",
    [
        ("org.bluez.Error.AuthenticationFailed", errors.AuthenticationFailed, 1),
        ("org.bluez.Error.AuthenticationRejected", errors.AuthenticationFailed, 1),
        ("org.bluez.Error.Failed", errors.ConnectFailed, 1),
        ("org.bluez.Error.NotReady", errors.NotReady, 1),
        ("org.bluez.Error.InProgress", errors.InProgress, 1),
        ("org.bluez.Error.DoesNotExist", errors.UnknownDevice, 2),
        ("org.freedesktop.DBus.Error.ServiceUnknown", errors.BluetoothUnavailable, 3),
        ("org.bluez.Error.Something", errors.BluetoothError, 1),
    ],
)
def test_bluez_errors_become_typed_one_line_errors(name: str, cls: type, exit_code: int) -> None:
    err = errors.from_dbus(name, "br-connection-page-timeout\n\x1b[31msecond line", "connect AA:BB:CC:00:00:01")
    assert type(err) is cls and err.exit_code == exit_code and err.name == name
    assert "\n" not in err.message and "\x1b" not in err.message


# ---------------------------------------------------------------- the cache's bus order


def _from(sender: str, **kw) -> Message:  # type: ignore[no-untyped-def]
    return Message(sender=sender, **kw)


def _props_changed(path: str, sender: str, **changed: Variant) -> Message:
    return _from(
        sender,
        message_type=MessageType.SIGNAL,
        path=path,
        interface="org.freedesktop.DBus.Properties",
        member="PropertiesChanged",
        signature="sa{sv}as",
        body=[DEVICE, changed, []],
    )


def test_cache_applies_the_tree_in_bus_order_with_the_signals() -> None:
    # No bus needed: the messages are fed as the connection would deliver them, in order.
    client = BluezClient(bus=None)  # type: ignore[arg-type]
    client.owner = ":1.7"
    client._refresh_serial = 41
    device = {
        "Address": Variant("s", "AA:BB:CC:00:00:01"),
        "Alias": Variant("s", "old name"),
        "Connected": Variant("b", True),
    }
    tree = {DEV: {DEVICE: device}}
    # The answer is applied where it stands in the stream (not later, when the awaiting code resumes, which
    # would undo changes that arrived in between); a change sent before it is part of it.
    client._on_message(_props_changed(DEV, ":1.7", Alias=Variant("s", "stale")))
    client._on_message(
        _from(":1.7", message_type=MessageType.METHOD_RETURN, reply_serial=41, signature="a{oa{sa{sv}}}", body=[tree])
    )
    assert client.device("AA:BB:CC:00:00:01").alias == "old name"  # type: ignore[union-attr]
    # Changes sent after the answer apply on top of it; changes from anyone but BlueZ never do.
    client._on_message(_props_changed(DEV, ":1.7", Alias=Variant("s", "new name"), Connected=Variant("b", False)))
    client._on_message(_props_changed(DEV, ":1.99", Alias=Variant("s", "impostor")))
    dev = client.device("AA:BB:CC:00:00:01")
    assert dev is not None and dev.alias == "new name" and not dev.connected
    # BlueZ going away empties the cache: nothing of its old tree is true any more.
    client._on_message(
        _from(
            "org.freedesktop.DBus",
            message_type=MessageType.SIGNAL,
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="NameOwnerChanged",
            signature="sss",
            body=["org.bluez", ":1.7", ""],
        )
    )
    assert not client.available and client.devices() == []


# ---------------------------------------------------------------- the joined view


def test_view_cross_checks_bluez_against_pipewire() -> None:
    def dev(address: str, connected: bool, paired: bool = True) -> dict:
        return {**_device_props(f"BlueZ {address[-2:]}", connected, address), "Paired": paired}

    objects = {
        "/d1": {DEVICE: dev("AA:BB:CC:00:00:01", True)},  # connected, node: connected
        "/d2": {DEVICE: dev("AA:BB:CC:00:00:02", False)},  # disconnected per BlueZ, but its node plays
        "/d3": {DEVICE: dev("AA:BB:CC:00:00:03", True)},  # connected, no node yet
        "/d4": {DEVICE: dev("AA:BB:CC:00:00:04", False)},  # paired, away
        "/d5": {DEVICE: dev("AA:BB:CC:00:00:05", False, paired=False)},  # a stranger: not listed
        "/d1/sep1/fd0": {TRANSPORT: {"Codec": 0, "Delay": 1200}},
    }
    speakers = [_speaker("AA:BB:CC:00:00:01"), _speaker("AA:BB:CC:00:00:02"), _speaker("AA:BB:CC:00:00:06", "new")]
    views = {v.address: v for v in join(speakers, devices_from_objects(objects))}
    assert set(views) == {f"AA:BB:CC:00:00:0{i}" for i in (1, 2, 3, 4, 6)}
    assert views["AA:BB:CC:00:00:01"].connection == "connected"
    assert views["AA:BB:CC:00:00:01"].name == "BlueZ 01"  # BlueZ's alias over the node's description
    assert views["AA:BB:CC:00:00:01"].codec == "sbc_xq"  # the node knows the codec better than A2DP's id
    assert views["AA:BB:CC:00:00:01"].delay_ms == 120.0
    assert views["AA:BB:CC:00:00:02"].connection == "audio present (BlueZ says disconnected)"
    assert views["AA:BB:CC:00:00:03"].connection == "connected, no audio node yet"
    assert views["AA:BB:CC:00:00:04"].connection == "disconnected" and views["AA:BB:CC:00:00:04"].node is None
    assert views["AA:BB:CC:00:00:06"].connection == "audio present"  # BlueZ does not know it
    assert views["AA:BB:CC:00:00:06"].bluez_connected is None


def test_view_without_bluez_is_pipewires() -> None:
    views = join([_speaker("AA:BB:CC:00:00:01", "Flip"), _speaker(None, "no address")], None)
    assert [(v.name, v.connection, v.battery) for v in views] == [
        ("no address", "audio present", None),
        ("Flip", "audio present", None),
    ]


_NASTY = [
    "\x1b[31mred\x1b[0m",
    "\x1b]0;title\x07",
    "[bold]markup[/bold]",
    "[link=file:///etc/passwd]x[/link]",
    "\u202eevil\u202c",
    "\u200fRTL\u2066mark",
    "-d",
    "--help",
    "a:b",
    "new\nline\r",
    "tab\there",
    "\x00nul",
    "\x7f\x9b",
    "back\\slash",
    "'; rm -rf / #",
    "$(reboot)",
    "\ud800",
    "\U0001f50a speaker",
    "Z" * 10240,
    "",
]


def _hostile(rng: random.Random, i: int) -> str:
    """A generated hostile name: fixed nasties, random code points (all planes, surrogates included), and
    decoded invalid UTF-8, in random mixes and lengths up to 10 KB."""
    kind = i % 4
    if kind == 0:
        return _NASTY[(i // 4) % len(_NASTY)]
    if kind == 1:
        return "".join(chr(rng.randrange(0, 0x110000)) for _ in range(rng.randrange(1, 40)))
    if kind == 2:
        return text_from_bus(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))))
    parts = [rng.choice(_NASTY)[:200] for _ in range(rng.randrange(1, 6))]
    return "".join(parts) * (1 if rng.random() < 0.9 else 40)


def _visible_only(cell: str) -> bool:
    return not any(
        unicodedata.category(c) in ("Cc", "Cs")
        or c in "\u200e\u200f\u061c"
        or 0x202A <= ord(c) <= 0x202E
        or 0x2066 <= ord(c) <= 0x2069
        for c in cell
    )


def test_ten_thousand_hostile_aliases_through_view_table_and_json() -> None:
    rng = random.Random(4)
    aliases = [_hostile(rng, i) for i in range(10_000)]
    objects = {}
    speakers = []
    for i, alias in enumerate(aliases):
        address = f"AA:BB:{i // 256:02X}:{i % 256:02X}:00:01"
        objects[f"/org/bluez/hci0/dev_{i}"] = {DEVICE: _device_props(alias, i % 2 == 0, address)}
        if i % 3:
            speakers.append(_speaker(address, aliases[-i]))
    views = join(speakers, devices_from_objects(objects))
    assert len(views) == len(aliases)
    by_address = {v.address: v for v in views}
    for i, alias in enumerate(aliases):
        view = by_address[f"AA:BB:{i // 256:02X}:{i % 256:02X}:00:01"]
        assert view.name == (alias or (aliases[-i] if i % 3 else ""))
    rows = speaker_rows(views)
    for row in rows:
        assert len(row) == len(SPEAKER_HEADER)
        assert all(_visible_only(cell) for cell in row), row
        assert len(row[0]) <= 40
    # Escaped literally, not interpreted: the escape is still there for the reader to see.
    shown = {r[1]: r[0] for r in rows}
    assert shown["AA:BB:00:00:00:01"] == "\\x1b[31mred\\x1b[0m"
    assert shown["AA:BB:00:08:00:01"] == "[bold]markup[/bold]"
    text = json.dumps({"speakers": [v.as_dict() for v in views]}, ensure_ascii=True)
    assert text.isascii()
    assert [s["name"] for s in json.loads(text)["speakers"]] == [v.name for v in views]


# ---------------------------------------------------------------- reconnect policy


class _Rng(random.Random):
    """random() always returns `value`: jitter pinned to a known point."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def _fail(auth: bool = False) -> errors.BluetoothError:
    name = "org.bluez.Error.AuthenticationFailed" if auth else "org.bluez.Error.Failed"
    return errors.from_dbus(name, "br-connection-page-timeout", "connect")


def test_backoff_doubles_to_its_cap_with_bounded_jitter() -> None:
    b = Backoff(first=1.0, factor=2.0, cap=8.0, jitter=0.25)
    assert [b.delay(n, _Rng(0.5)) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert [b.delay(n, _Rng(0.0)) for n in range(5)] == [0.75, 1.5, 3.0, 6.0, 6.0]
    assert [b.delay(n, _Rng(1.0)) for n in range(5)] == [1.25, 2.5, 5.0, 8.0, 8.0]  # never above the cap
    rng = random.Random(1)
    assert all(0.75 * 2**n <= b.delay(n, rng) <= 1.25 * 2**n for n in range(3) for _ in range(100))
    assert b.delay(10_000, rng) <= 8.0


def test_policy_schedule_status_and_reset_on_success() -> None:
    p = Reconnect(Backoff(first=1.0, cap=16.0, jitter=0.0), _Rng(0.5))
    assert p.status(0.0) == "idle"
    p.lost(100.0)
    assert p.due(100.0) and p.status(100.0) == "waiting 0 s"
    times = []
    now = 100.0
    for _ in range(6):
        assert p.due(now)
        p.attempting()
        assert p.status(now) == "connecting"
        p.failed(now, _fail())
        times.append(p.next_at - now)  # type: ignore[operator]
        now = p.next_at  # type: ignore[assignment]
    assert times == [1.0, 2.0, 4.0, 8.0, 16.0, 16.0]
    assert p.status(now - 8.0) == "waiting 8 s" and not p.due(now - 0.001)
    p.attempting()
    p.succeeded()
    assert p.status(now) == "connected" and p.failures == 0
    p.lost(now)
    p.attempting()
    p.failed(now, _fail())
    assert p.next_at == now + 1.0  # the schedule starts over after a success


def test_policy_gives_up_after_consecutive_auth_failures_only() -> None:
    p = Reconnect(Backoff(max_auth_failures=3), _Rng(0.5))
    p.lost(0.0)
    for err in (_fail(auth=True), _fail(auth=True), _fail(), _fail(auth=True), _fail(auth=True)):
        p.attempting()
        p.failed(0.0, err)
        assert p.state == "waiting"  # a page timeout between them breaks the run
    p.attempting()
    p.failed(0.0, _fail(auth=True))
    assert p.state == "gave-up" and p.status(0.0) == "giving up: auth failed" and not p.due(1e9)


def test_driver_follows_the_schedule_on_a_controlled_clock() -> None:
    now = [0.0]
    attempts: list[float] = []
    statuses: list[str] = []

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    async def connect(address: str) -> None:
        attempts.append(now[0])
        if len(attempts) < 5:
            raise _fail()

    policy = Reconnect(Backoff(first=1.0, cap=4.0, jitter=0.0), _Rng(0.5))
    ok = asyncio.run(
        reconnect(
            "AA:BB:CC:00:00:01",
            connect,
            policy,
            clock=lambda: now[0],
            sleep=sleep,
            on_status=lambda a, s: statuses.append(s),
        )
    )
    assert ok and attempts == [0.0, 1.0, 3.0, 7.0, 11.0]
    assert statuses[:4] == ["connecting", "waiting 1 s", "connecting", "waiting 2 s"]
    assert statuses[-1] == "connected"


def test_driver_stops_on_auth_failures() -> None:
    now = [0.0]
    calls = []

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    async def connect(address: str) -> None:
        calls.append(now[0])
        raise _fail(auth=True)

    policy = Reconnect(Backoff(first=2.0, jitter=0.0, max_auth_failures=3), _Rng(0.5))
    assert not asyncio.run(reconnect("AA:BB:CC:00:00:01", connect, policy, clock=lambda: now[0], sleep=sleep))
    assert calls == [0.0, 2.0, 6.0] and policy.status(now[0]) == "giving up: auth failed"
