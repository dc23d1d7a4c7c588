"""BlueZ control against the room's fake org.bluez on its private system bus: a real dbus-daemon, no mocks.

Every test leaves the room's speakers as it found them: connected, trusted, named as built.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from pwgroup import cli as cli_module
from pwgroup.bluez.client import AGENT_PATH, BluezClient
from pwgroup.bluez.props import DEVICE
from pwgroup.bluez.reconnect import Backoff, Reconnect, reconnect
from pwgroup.sim.fakebluez import STRANGERS, battery_of, reported_delay_tenths
from pwgroup.sim.room import Room

NEW_SPEAKER, PHONE = STRANGERS[0][0], STRANGERS[1][0]


@pytest.fixture
def bus(room: Room, monkeypatch: pytest.MonkeyPatch) -> Iterator[Room]:
    """The test process talks to the room's system bus, and its fake BlueZ runs."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", room.env["DBUS_SYSTEM_BUS_ADDRESS"])
    room.start_bluez()
    yield room
    room.start_bluez()


def _node_present(room: Room, key: str) -> bool:
    return room.dump().node_by_name(room.speaker(key).node_name) is not None


def _speakers_json(cli) -> dict:  # type: ignore[no-untyped-def]
    code, out, err = cli("speakers", "--json")
    assert code == 0, err
    return {s["address"]: s for s in json.loads(out)["speakers"]}


def _one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cache_mirrors_the_room_and_follows_signals(bus: Room) -> None:
    async def check() -> None:
        async with await BluezClient.open() as bt:
            adapter = bt.adapters()[0]
            assert adapter.powered and not adapter.discovering
            for spk in bus.speakers[:4]:
                dev = bt.device(spk.address)
                assert dev is not None and dev.paired and dev.trusted and dev.connected and dev.audio_sink
                assert dev.alias == spk.description
                assert dev.battery is not None and dev.battery.percentage == battery_of(spk)
                assert dev.transport is not None and dev.transport.state == "idle"
                assert dev.transport.delay_ms == reported_delay_tenths(spk) / 10.0
            spk = bus.speakers[0]
            await asyncio.to_thread(bus.bluez_control, "SetBattery", spk.address, 12)
            assert await bt.wait_until(lambda: bt.device(spk.address).battery.percentage == 12, 5)  # type: ignore[union-attr]
            await asyncio.to_thread(bus.bluez_control, "SetBattery", spk.address, battery_of(spk))

    asyncio.run(check())


def test_disconnect_and_connect_take_the_node_away_and_back(bus: Room, cli) -> None:  # type: ignore[no-untyped-def]
    spk = bus.speakers[3]
    path = f"/org/bluez/hci0/dev_{spk.address.replace(':', '_')}"
    transport = f"{path}/sep1/fd0"

    async def watch(command: str, done) -> tuple[list[tuple[str, str]], tuple[int, str, str]]:  # type: ignore[no-untyped-def]
        """Run `pwgroup COMMAND ADDRESS` and record the signals BlueZ emits about the speaker meanwhile."""
        seen: list[tuple[str, str]] = []

        def record(msg: Message) -> None:
            if msg.message_type != MessageType.SIGNAL:
                return
            if msg.member == "PropertiesChanged" and msg.path == path:
                seen.append((msg.member, ",".join(sorted(msg.body[1]))))
            elif (msg.member == "Disconnected" and msg.path == path) or (
                msg.member in ("InterfacesAdded", "InterfacesRemoved") and msg.body[0].startswith(path)
            ):
                seen.append((msg.member, msg.body[0]))  # the reason, or the object's path

        async with await BluezClient.open() as bt:
            rule = "type='signal',sender='org.bluez',interface='org.bluez.Device1',member='Disconnected'"
            await bt.bus.call(
                Message(
                    destination="org.freedesktop.DBus",
                    path="/org/freedesktop/DBus",
                    interface="org.freedesktop.DBus",
                    member="AddMatch",
                    signature="s",
                    body=[rule],
                )
            )
            bt.bus.add_message_handler(record)
            result = await asyncio.to_thread(cli, command, spk.address.lower())
            assert await bt.wait_until(lambda: done(bt.device(spk.address)), 5)
        return seen, result

    try:
        seen, (code, out, err) = asyncio.run(watch("disconnect", lambda d: not d.connected))
        assert code == 0 and out.strip() == f"{spk.address} disconnected", err
        assert not _node_present(bus, spk.address)
        # Profiles go first, then the link, in the order src/device.c emits them.
        assert seen == [
            ("InterfacesRemoved", transport),
            ("InterfacesRemoved", path),  # Battery1
            ("PropertiesChanged", "ServicesResolved"),
            ("Disconnected", "org.bluez.Reason.Local"),
            ("PropertiesChanged", "Connected"),
        ]
        view = _speakers_json(cli)[spk.address]
        assert (view["connection"], view["node"], view["battery"], view["bluez_connected"]) == (
            "disconnected",
            None,
            None,
            False,
        )
        seen, (code, out, err) = asyncio.run(watch("connect", lambda d: d.battery is not None))
        assert code == 0 and out.strip() == f"{spk.address} connected", err
        assert seen == [
            ("PropertiesChanged", "Connected"),
            ("PropertiesChanged", "ServicesResolved"),
            ("InterfacesAdded", transport),
            ("InterfacesAdded", path),  # Battery1
        ]
        assert _node_present(bus, spk.address)
        view = _speakers_json(cli)[spk.address]
        assert view["connection"] == "connected" and view["node"] == spk.node_name
        assert view["battery"] == battery_of(spk) and view["reported_delay_ms"] == reported_delay_tenths(spk) / 10
        code, out, _ = cli("speakers")
        line = next(ln for ln in out.splitlines() if spk.address in ln)
        assert "connected" in line and f"{battery_of(spk)}%" in line
        assert f"{reported_delay_tenths(spk) / 10:.1f} ms" in line
    finally:
        if not _node_present(bus, spk.address):
            bus.connect(spk.address)


def test_trust_and_untrust(bus: Room, cli) -> None:  # type: ignore[no-untyped-def]
    addr = bus.speakers[2].address
    try:
        code, out, err = cli("untrust", addr)
        assert code == 0 and "no longer trusted" in out, err
        assert _speakers_json(cli)[addr]["trusted"] is False
    finally:
        code, out, err = cli("trust", addr)
    assert code == 0 and out.strip() == f"{addr} trusted", err
    assert _speakers_json(cli)[addr]["trusted"] is True


def test_scan_and_pair_a_new_speaker(bus: Room, cli) -> None:  # type: ignore[no-untyped-def]
    code, out, err = cli("scan", "--seconds", "1", "--json")
    assert code == 0, err
    found = {d["address"]: d for d in json.loads(out)["devices"]}
    assert {NEW_SPEAKER, PHONE, *(s.address for s in bus.speakers[:4])} <= set(found)
    assert found[NEW_SPEAKER]["audio_sink"] and not found[NEW_SPEAKER]["paired"] and found[NEW_SPEAKER]["rssi"] < 0
    assert not found[PHONE]["audio_sink"]
    assert NEW_SPEAKER not in _speakers_json(cli)  # unpaired strangers are not speakers yet

    bus.bluez_control("SetFault", PHONE, "auth")
    try:
        code, _, err = cli("pair", PHONE)
        assert code == 1 and "authentication failed" in err and _one_line(err)
    finally:
        bus.bluez_control("SetFault", PHONE, "")

    try:
        code, out, err = cli("pair", NEW_SPEAKER.lower().replace(":", "-"))
        assert code == 0 and out.strip().startswith(f"{NEW_SPEAKER} paired and trusted"), err
        view = _speakers_json(cli)[NEW_SPEAKER]
        assert view["paired"] and view["trusted"] and view["connection"] == "disconnected"
        code, _, err = cli("pair", NEW_SPEAKER)  # pairing what is paired only trusts it again
        assert code == 0, err
        code, _, err = cli("connect", NEW_SPEAKER)
        assert code == 0, err
        # BlueZ is connected but no PipeWire node came up: the view says so instead of guessing.
        assert _speakers_json(cli)[NEW_SPEAKER]["connection"] == "connected, no audio node yet"
    finally:

        async def forget() -> None:
            async with await BluezClient.open() as bt:
                await bt.remove(NEW_SPEAKER)
                assert await bt.wait_until(lambda: bt.device(NEW_SPEAKER) is None, 5)

        asyncio.run(forget())


def test_connect_faults_and_the_reconnect_driver(bus: Room, cli) -> None:  # type: ignore[no-untyped-def]
    spk = bus.speakers[3]
    addr = spk.address
    try:
        bus.bluez_control("OutOfRange", addr)
        assert not _node_present(bus, addr)
        code, _, err = cli("connect", addr)
        assert code == 1 and "br-connection-page-timeout" in err and _one_line(err)

        attempts: list[float] = []

        async def come_back() -> tuple[bool, str]:
            async with await BluezClient.open() as bt:

                async def connect(address: str) -> None:
                    attempts.append(time.monotonic())
                    if len(attempts) == 3:  # the speaker walks back into range before the third try
                        await asyncio.to_thread(bus.bluez_control, "InRange", address)
                    await bt.connect(address)

                policy = Reconnect(Backoff(first=0.05, cap=0.1, jitter=0.2))
                ok = await reconnect(addr, connect, policy)
                return ok, policy.status(0.0)

        assert asyncio.run(come_back()) == (True, "connected")
        assert len(attempts) == 3 and _node_present(bus, addr)

        bus.bluez_control("SetFault", addr, "auth")
        assert cli("disconnect", addr)[0] == 0
        tries: list[str] = []

        async def rejected() -> tuple[bool, str]:
            async with await BluezClient.open() as bt:

                async def connect(address: str) -> None:
                    tries.append(address)
                    await bt.connect(address)

                policy = Reconnect(Backoff(first=0.01, cap=0.02, max_auth_failures=3))
                ok = await reconnect(addr, connect, policy)
                return ok, policy.status(0.0)

        assert asyncio.run(rejected()) == (False, "giving up: auth failed")
        assert tries == [addr] * 3 and not _node_present(bus, addr)
        code, _, err = cli("connect", addr)
        assert code == 1 and "authentication failed" in err and _one_line(err)
    finally:
        bus.bluez_control("SetFault", addr, "")
        bus.bluez_control("InRange", addr)
        if not _node_present(bus, addr):
            assert cli("connect", addr)[0] == 0


def test_bluez_restart_rebuilds_the_cache(bus: Room, cli) -> None:  # type: ignore[no-untyped-def]
    addresses = {s.address for s in bus.speakers[:4]}

    async def restart() -> tuple[int, str, str]:
        async with await BluezClient.open() as bt:
            assert bt.available
            await asyncio.to_thread(bus.stop_bluez)
            assert await bt.wait_until(lambda: not bt.available and not bt.devices(), 5)
            while_down = await asyncio.to_thread(cli, "speakers")
            await asyncio.to_thread(bus.start_bluez)

            def rebuilt() -> bool:
                return addresses <= {d.address for d in bt.devices() if d.connected and d.transport}

            assert await bt.wait_until(rebuilt, 5)
            # Signals from the new BlueZ reach the cache too.
            spk = bus.speakers[1]
            await asyncio.to_thread(bus.bluez_control, "SetBattery", spk.address, 5)
            assert await bt.wait_until(lambda: bt.device(spk.address).battery.percentage == 5, 5)  # type: ignore[union-attr]
            await asyncio.to_thread(bus.bluez_control, "SetBattery", spk.address, battery_of(spk))
            return while_down

    code, out, err = asyncio.run(restart())
    assert code == 0 and err.strip() == "pwgroup: Bluetooth control unavailable: BlueZ (org.bluez) is not running"
    assert all(a in out for a in addresses) and "audio present" in out


def test_without_a_system_bus_speakers_still_lists_pipewire(room: Room, tmp_path: Path) -> None:
    env = dict(room.env, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={tmp_path / 'no-bus-here'}")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pwgroup", *args], env=env, capture_output=True, text=True, timeout=60
        )

    table = run("speakers")
    assert table.returncode == 0 and _one_line(table.stderr)
    assert table.stderr.startswith("pwgroup: Bluetooth control unavailable: cannot reach the system bus")
    assert all(s.address in table.stdout for s in room.speakers[:4])
    data = json.loads(run("speakers", "--json").stdout)
    assert data["bluetooth_unavailable"].startswith("Bluetooth control unavailable")
    listed = {s["address"]: s for s in data["speakers"]}
    assert all(listed[s.address]["connection"] == "audio present" for s in room.speakers[:4])
    connect = run("connect", room.speakers[0].address)
    assert connect.returncode == 3 and _one_line(connect.stderr)
    bad = run("connect", "AA:BB:CC")
    assert bad.returncode == 2 and "invalid Bluetooth address" in bad.stderr and _one_line(bad.stderr)


# Hostile aliases a D-Bus string can carry (NUL and lone surrogates cannot be sent: see the unit tests).
HOSTILE = [
    "\x1b[31mred\x1b[0m",
    "\x1b]0;owned\x07",
    "[bold]markup[/bold]",
    "\u202eevil\u202c",
    "-d",
    "a:b",
    "new\nline",
    "$(touch /tmp/pwgroup-pwned)",
    "Z" * 10240,
    "\\x41 backslash",
    "\U0001f50a Kitchen",
    "--json",
]


def test_hostile_aliases_over_the_bus_are_printed_literally_and_never_run(
    bus: Room, cli, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    speakers = bus.speakers[:4]
    try:
        for start in range(0, len(HOSTILE), len(speakers)):
            batch = dict(zip((s.address for s in speakers), HOSTILE[start : start + len(speakers)], strict=False))
            for address, alias in batch.items():
                bus.bluez_control("SetAlias", address, alias)
            listed = _speakers_json(cli)
            code, out, err = cli("speakers")
            assert code == 0 and err == "", err
            assert "\x1b" not in out and "\u202e" not in out and "\x07" not in out
            for address, alias in batch.items():
                assert listed[address]["name"] == alias
                line = next(ln for ln in out.splitlines() if address in ln)
                assert line.startswith(cli_module.safe_text(alias, 40))
        code, out, err = cli("scan", "--seconds", "1")
        assert code == 0 and "\x1b" not in out and "\u202e" not in out, err
        assert all(cli_module.safe_text(alias, 40) in out for alias in batch.values())
        # In-process, every program started while listing is recorded: no alias ever reaches an argv.
        for key in ("XDG_RUNTIME_DIR", "PIPEWIRE_RUNTIME_DIR", "PULSE_SERVER", "DBUS_SESSION_BUS_ADDRESS"):
            monkeypatch.setenv(key, bus.env[key])
        argvs: list[tuple[str, ...]] = []
        real_exec, real_popen = asyncio.create_subprocess_exec, subprocess.Popen

        async def exec_spy(*argv, **kw):  # type: ignore[no-untyped-def]
            argvs.append(tuple(str(a) for a in argv))
            return await real_exec(*argv, **kw)

        def popen_spy(argv, *a, **kw):  # type: ignore[no-untyped-def]
            argvs.append(tuple(str(x) for x in argv))
            return real_popen(argv, *a, **kw)

        monkeypatch.setattr(asyncio, "create_subprocess_exec", exec_spy)
        monkeypatch.setattr(subprocess, "Popen", popen_spy)
        assert cli_module.main(["speakers", "--json"]) == 0
        out = capsys.readouterr().out
        assert out.isascii() and argvs  # pw-dump ran, and the output is all escapes
        names = {s["name"] for s in json.loads(out)["speakers"]}
        assert set(HOSTILE[-len(speakers) :]) <= names
        # Short ones ("-d", "a:b") occur inside innocent paths (pw-dump): those must not be whole arguments.
        assert not any(
            alias == arg or (len(alias) > 4 and alias in arg) for argv in argvs for arg in argv for alias in HOSTILE
        ), argvs
    finally:
        for spk in speakers:
            bus.bluez_control("SetAlias", spk.address, spk.description)


def _raw_bus(path: str) -> socket.socket:
    """A D-Bus connection by hand (EXTERNAL auth, Hello), to send what dbus-fast refuses to marshal."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(path)
    sock.sendall(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
    assert sock.recv(4096).startswith(b"OK")
    sock.sendall(b"BEGIN\r\n")
    hello = Message(
        destination="org.freedesktop.DBus",
        path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus",
        member="Hello",
        serial=1,
    )
    sock.sendall(bytes(hello._marshall(False)))
    assert sock.recv(4096)  # the reply with our unique name: the daemon took us as a client
    return sock


def test_invalid_utf8_on_the_bus_drops_its_sender_not_us(bus: Room) -> None:
    async def check() -> None:
        async with await BluezClient.open() as bt:
            spk = bus.speakers[0]
            path = bt.device(spk.address).path  # type: ignore[union-attr]
            sock = _raw_bus(bus.env["DBUS_SYSTEM_BUS_ADDRESS"].removeprefix("unix:path="))
            forged = Message.new_signal(
                path,
                "org.freedesktop.DBus.Properties",
                "PropertiesChanged",
                "sa{sv}as",
                [DEVICE, {"Alias": Variant("s", "ABCD")}, []],
            )
            forged.serial = 2
            sock.sendall(bytes(forged._marshall(False)).replace(b"ABCD", b"A\xff\xfeD"))
            # The daemon hangs up on the forger (a timeout here would mean it passed the message on).
            while await asyncio.to_thread(sock.recv, 4096):
                pass
            sock.close()
            # Our connection lives on and still follows BlueZ.
            await asyncio.to_thread(bus.bluez_control, "SetBattery", spk.address, 33)
            assert await bt.wait_until(lambda: bt.device(spk.address).battery.percentage == 33, 5)  # type: ignore[union-attr]
            assert bt.device(spk.address).alias == spk.description  # type: ignore[union-attr]
            await asyncio.to_thread(bus.bluez_control, "SetBattery", spk.address, battery_of(spk))

    asyncio.run(check())


def test_pairing_agent_answers_only_for_the_device_being_paired(bus: Room) -> None:
    async def check() -> None:
        async with await BluezClient.open() as bt:
            other = await MessageBus(bus_type=BusType.SYSTEM).connect()
            try:

                async def ask(member: str, signature: str, body: list) -> Message:  # type: ignore[type-arg]
                    return await other.call(
                        Message(
                            destination=bt.bus.unique_name,
                            path=AGENT_PATH,
                            interface="org.bluez.Agent1",
                            member=member,
                            signature=signature,
                            body=body,
                        )
                    )

                # Nobody is being paired: a request from the air (or any bus client) is refused.
                device = "/org/bluez/hci0/dev_AA_BB_CC_00_00_01"
                for member, signature, body in (
                    ("RequestAuthorization", "o", [device]),
                    ("RequestConfirmation", "ou", [device, 123456]),
                    ("RequestPinCode", "o", [device]),
                    ("AuthorizeService", "os", [device, "0000110d-0000-1000-8000-00805f9b34fb"]),
                ):
                    reply = await ask(member, signature, body)
                    assert reply.error_name == "org.bluez.Error.Rejected", member
                assert (await ask("Release", "", [])).message_type == MessageType.METHOD_RETURN
                assert (await ask("Nonsense", "", [])).message_type == MessageType.ERROR
            finally:
                other.disconnect()

    asyncio.run(check())
