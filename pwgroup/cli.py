"""The `pwgroup` command: parse, call the supervisor or the room, print (tables, or JSON with --json).

Every user error is one line and exit code 2; an unreachable sound server is exit code 3; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pwgroup import __version__
from pwgroup.model import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USER,
    PwgroupError,
    UserError,
    check_group_name,
)
from pwgroup.text import safe_text

if TYPE_CHECKING:  # Bluetooth stays a lazy import: commands that do not need it never load dbus-fast
    from pwgroup.bluez.props import Device
    from pwgroup.edits import Edit
    from pwgroup.graph import Backend
    from pwgroup.graph.select import Choice

MAX_DELAY_MS = 1900.0
# pw-cli 0.3.65 copies its arguments into a 4 KiB stack buffer; the sink's properties must stay well inside.
MAX_DESCRIPTION = 256


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=True))


# ---------------------------------------------------------------- commands on the sound server


_chosen: Choice | None = None  # which backend _backend() opened and why, for status


async def _backend() -> Backend:
    from pwgroup.graph.select import open_backend

    global _chosen
    be, _chosen = await open_backend()
    return be


def _resolve_speaker(graph: Any, text: str) -> str:
    from pwgroup.edits import resolve_speaker

    return resolve_speaker(graph, text)


def _parse_delay(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"invalid delay {safe_text(text, 20)!r}: give milliseconds, e.g. 37.5") from None
    if not 0.0 <= value <= MAX_DELAY_MS or value != value:
        raise UserError(f"delay {value:g} ms is out of range: use 0 to {MAX_DELAY_MS:g} ms")
    return value


async def cmd_speakers(args: argparse.Namespace) -> int:
    from pwgroup.bluez.view import join
    from pwgroup.model import speakers_in

    be = await _backend()
    try:
        speakers = speakers_in(be.graph)
    finally:
        await be.close()
    devices, unavailable = await _bluez_devices()
    if unavailable:
        # PipeWire's view still stands; say once why BlueZ's half is missing.
        print(f"pwgroup: {unavailable}", file=sys.stderr)
    views = join(speakers, devices)
    if args.json:
        _emit_json({"bluetooth_unavailable": unavailable, "speakers": [v.as_dict() for v in views]})
        return EXIT_OK
    if not views:
        print("no speakers or sinks found: pair a speaker with 'pwgroup scan' and 'pwgroup pair ADDRESS'")
        return EXIT_OK
    _print_table(speaker_rows(views), SPEAKER_HEADER)
    return EXIT_OK


SPEAKER_HEADER = ["NAME", "ADDRESS", "KIND", "CONNECTION", "NODE", "BATTERY", "CODEC", "REPORTED DELAY"]


def speaker_rows(views: Sequence[Any]) -> list[list[str]]:
    """The `speakers` table: every text that came from the air goes through safe_text. A sink that is not
    Bluetooth is a member by its node name (NODE)."""
    return [
        [
            safe_text(v.name, 40),
            v.address or "-",
            v.kind,
            v.connection,
            safe_text(v.node or "-", 48),
            "-" if v.battery is None else f"{v.battery}%",
            safe_text(v.codec or "-", 10),
            "-" if v.delay_ms is None else f"{v.delay_ms:.1f} ms",
        ]
        for v in views
    ]


# ---------------------------------------------------------------- Bluetooth (BlueZ on the system bus)


async def _bluez_devices() -> tuple[list[Device] | None, str | None]:
    """BlueZ's devices, or None and the one-line reason it cannot be asked."""
    from pwgroup.bluez.client import BluezClient
    from pwgroup.bluez.errors import BluetoothError

    try:
        async with await BluezClient.open() as bt:
            return bt.devices(), None
    except BluetoothError as err:
        return None, err.message


def _bt_address(text: str) -> str:
    from pwgroup.model import normalize_address

    address = normalize_address(text)
    if address is None:
        raise UserError(f"invalid Bluetooth address {safe_text(text, 40)!r}: give it as AA:BB:CC:DD:EE:FF")
    return address


async def cmd_bt_action(args: argparse.Namespace) -> int:
    from pwgroup.bluez.client import BluezClient

    address = _bt_address(args.address)
    async with await BluezClient.open() as bt:
        if args.command == "connect":
            await bt.connect(address)
        elif args.command == "disconnect":
            await bt.disconnect(address)
        else:
            await bt.set_trusted(address, args.command == "trust")
    done = {"connect": "connected", "disconnect": "disconnected", "trust": "trusted", "untrust": "no longer trusted"}
    print(f"{address} {done[args.command]}")
    return EXIT_OK


def _scan_seconds(value: float) -> float:
    if not 1.0 <= value <= 300.0 or value != value:
        raise UserError("--seconds takes 1 to 300")
    return value


async def cmd_scan(args: argparse.Namespace) -> int:
    from pwgroup.bluez.client import BluezClient
    from pwgroup.bluez.errors import BluetoothError

    seconds = _scan_seconds(args.seconds)
    async with await BluezClient.open() as bt:
        await bt.set_discovery(True)
        try:
            await asyncio.sleep(seconds)
            # Read before stopping: BlueZ drops RSSI, the mark of "seen in this scan", when discovery ends.
            found = [d for d in bt.devices() if d.rssi is not None]
        finally:
            with contextlib.suppress(BluetoothError):
                await bt.set_discovery(False)
    if args.json:
        _emit_json(
            {
                "devices": [
                    {
                        "name": d.alias,
                        "address": d.address,
                        "rssi": d.rssi,
                        "audio_sink": d.audio_sink,
                        "paired": d.paired,
                        "trusted": d.trusted,
                        "connected": d.connected,
                    }
                    for d in found
                ]
            }
        )
        return EXIT_OK
    if not found:
        print(f"nothing found in {seconds:g} s: put the speaker in pairing mode and scan again")
        return EXIT_OK
    rows = [
        [
            safe_text(d.alias, 40),
            d.address,
            f"{d.rssi} dBm",
            "speaker" if d.audio_sink else "-",
            "paired" if d.paired else "new",
        ]
        for d in found
    ]
    _print_table(rows, ["NAME", "ADDRESS", "SIGNAL", "AUDIO", "STATE"])
    return EXIT_OK


async def cmd_pair(args: argparse.Namespace) -> int:
    from pwgroup.bluez.client import BluezClient

    address = _bt_address(args.address)
    seconds = _scan_seconds(args.seconds)
    async with await BluezClient.open() as bt:
        await bt.pair_and_trust(address, seconds)
    print(f"{address} paired and trusted: connect it with 'pwgroup connect {address}'")
    return EXIT_OK


async def _edit_group(name: str, edit: Edit) -> None:
    """Edit one group in the configuration (the desired state), save it, and make the graph match: through the
    daemon when one runs, else here. A group only the graph knows (made before the config) is adopted."""
    from pwgroup.config import ConfigFile
    from pwgroup.edits import edit_group

    cfg = ConfigFile.open()
    be = await _backend()
    try:
        await edit_group(be, cfg, name, edit)
    finally:
        await be.close()


def _adopt(graph: Any, name: str) -> Any:
    from pwgroup.edits import adopt

    return adopt(graph, name)


async def cmd_group_create(args: argparse.Namespace) -> int:
    from pwgroup.config import GroupConfig, MemberConfig

    name = check_group_name(args.name)

    def edit(graph: Any, current: Any) -> Any:
        if current is not None:
            raise UserError(f"group {name!r} already exists: pick another name or 'pwgroup group delete {name}'")
        keys: list[str] = []
        for text in args.speakers:
            key = _resolve_speaker(graph, text)
            if key in keys:
                raise UserError(f"speaker {safe_text(text, 60)!r} is named twice")
            keys.append(key)
        description = args.description if args.description else f"{name} (pwgroup)"
        if len(description) > MAX_DESCRIPTION:
            raise UserError(f"--description is {len(description)} characters long: use at most {MAX_DESCRIPTION}")
        return GroupConfig(name, description, tuple(MemberConfig(k) for k in keys))

    await _edit_group(name, edit)
    print(f"group {name} created: play to the sink 'pwgroup.{name}'")
    return EXIT_OK


def _need(current: Any, name: str) -> Any:
    from pwgroup.edits import need_group

    return need_group(current, name)


async def cmd_group_add(args: argparse.Namespace) -> int:
    from pwgroup.edits import add_member

    name = check_group_name(args.name)
    delay = _parse_delay(args.delay) if args.delay is not None else 0.0
    await _edit_group(name, add_member(name, args.speaker, delay))
    return EXIT_OK


async def cmd_group_remove(args: argparse.Namespace) -> int:
    from pwgroup.edits import remove_member

    name = check_group_name(args.name)
    await _edit_group(name, remove_member(name, args.speaker))
    return EXIT_OK


def _member_key(graph: Any, group: Any, text: str) -> str:
    from pwgroup.edits import member_key

    return member_key(graph, group, text)


async def cmd_group_delete(args: argparse.Namespace) -> int:
    name = check_group_name(args.name)

    def edit(graph: Any, current: Any) -> None:
        _need(current, name)
        return None

    await _edit_group(name, edit)
    return EXIT_OK


async def cmd_delay_set(args: argparse.Namespace) -> int:
    from pwgroup.config import with_member_values

    name = check_group_name(args.name)
    if len(args.pairs) % 2:
        raise UserError("delay set takes a speaker and its delay in ms, as many pairs as you like: SPEAKER MS ...")
    pairs = [(args.pairs[i], _parse_delay(args.pairs[i + 1])) for i in range(0, len(args.pairs), 2)]

    def edit(graph: Any, current: Any) -> Any:
        group = _need(current, name)
        done: set[str] = set()
        for speaker, delay in pairs:
            key = _member_key(graph, group, speaker)
            if key in done:
                raise UserError(f"speaker {safe_text(speaker, 60)!r} is named twice")
            done.add(key)
            group = with_member_values(group, key, delay_ms=delay)
        return group

    # One edit: every member named changes in the same pass, side by side.
    await _edit_group(name, edit)
    return EXIT_OK


async def cmd_delay_trim(args: argparse.Namespace) -> int:
    from pwgroup.config import with_member_values

    name = check_group_name(args.name)
    try:
        trim = float(args.ms)
    except ValueError:
        raise UserError(f"invalid trim {safe_text(args.ms, 20)!r}: give milliseconds, e.g. -2.5") from None
    if not -MAX_DELAY_MS <= trim <= MAX_DELAY_MS:
        raise UserError(f"trim {trim:g} ms is out of range: use -{MAX_DELAY_MS:g} to {MAX_DELAY_MS:g} ms")

    def edit(graph: Any, current: Any) -> Any:
        group = _need(current, name)
        return with_member_values(group, _member_key(graph, group, args.speaker), trim_ms=trim)

    await _edit_group(name, edit)
    return EXIT_OK


async def cmd_calibrate(args: argparse.Namespace) -> int:
    from pwgroup.config import ConfigFile, config_path
    from pwgroup.edits import Calibration

    name = check_group_name(args.name)
    cfg = ConfigFile.open()
    method = args.method or cfg.config.calibration.method
    if method == "reported" and args.mic is not None:
        raise UserError("--method reported uses no microphone: drop --mic, or measure with --method sweep")
    be = await _backend()
    if not be.capabilities.calibrate:
        server = be.capabilities.server
        await be.close()
        raise UserError(f"calibrate needs PipeWire for now: on {server} set delays with 'pwgroup delay set'")
    try:
        told: dict[str, float] = {}
        if method == "reported":
            devices, unavailable = await _bluez_devices()
            if unavailable:
                print(f"pwgroup: {unavailable}; using what PipeWire reports", file=sys.stderr)
            told = {d.address: d.transport.delay_ms for d in devices or () if d.transport and d.transport.delay_ms}
        # A running daemon leaves the group to us while we measure, then takes the saved result; trims from
        # the config go on top of the aligned delays (or, after a failed check, stay as they were).
        session = Calibration(be, config_path(), name, method, args.mic, told)
        try:
            report = await session.measure()
            await session.keep()
        finally:
            session.release()
    finally:
        await be.close()
    if method == "reported":
        return _print_reported(report, args.json)
    if args.json:
        print(json.dumps(report.as_dict(), indent=1))
    else:
        print(f"calibrated {name} with {safe_text(report.microphone or '-', 60)} in {report.seconds:.1f} s")
        for m in report.members:
            lat = "-" if m.latency_ms is None else f"{m.latency_ms:.2f} ms"
            conf = "-" if m.snr_db is None or m.snr_db != m.snr_db else f"{m.snr_db:.0f} dB"
            res = "-" if m.residual_ms is None else f"{m.residual_ms:+.3f} ms"
            print(
                f"  {safe_text(m.speaker, 40):<40} {m.status:<9} latency {lat:>10}  "
                f"delay {m.delay_ms:7.2f} ms  confidence {conf:>6}  residual {res}"
            )
        if report.worst_residual_ms is not None:
            print(f"measured after alignment: speakers within {report.worst_residual_ms:.3f} ms of each other")
    skipped = [m.speaker for m in report.members if m.status != "ok"]
    if skipped:
        print(
            f"pwgroup: not calibrated (kept their delay): {', '.join(safe_text(s, 40) for s in skipped)}",
            file=sys.stderr,
        )
    if not report.verified:
        worst = report.worst_residual_ms
        spread = "could not be measured" if worst is None else f"are still {worst:.1f} ms apart"
        print(
            f"pwgroup: verification failed: the speakers {spread}, so the previous delays were kept; check the "
            "microphone's placement and run calibrate again",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def _print_reported(report: Any, as_json: bool) -> int:
    if as_json:
        print(json.dumps(report.as_dict(), indent=1))
    else:
        print(f"set {report.group}'s delays from reported latencies: a guess, not measured (often 100 ms off)")
        for m in report.members:
            lat = "-" if m.latency_ms is None else f"{m.latency_ms:.1f} ms"
            print(
                f"  {safe_text(m.speaker, 40):<40} {m.status:<12} reported {lat:>9} ({m.source or '-'})  "
                f"delay {m.delay_ms:7.2f} ms"
            )
    skipped = [m.speaker for m in report.members if m.status != "reported"]
    if skipped:
        print(
            f"pwgroup: no reported latency (kept their delay): {', '.join(safe_text(s, 40) for s in skipped)}",
            file=sys.stderr,
        )
    return EXIT_OK


async def cmd_status(args: argparse.Namespace) -> int:
    from pwgroup.config import Config, ConfigError, config_path, load
    from pwgroup.health import daemon_report
    from pwgroup.status import derive, group_names, status_json, status_lines

    try:
        config = load(config_path())
    except ConfigError as err:
        print(f"pwgroup: warning: {err.message}", file=sys.stderr)
        config = Config()
    be = await _backend()
    try:
        graph = be.graph
        report = daemon_report(be.env)
        names = group_names(graph, config)
        if args.name is not None:
            check_group_name(args.name)
            if args.name not in names:
                raise UserError(f"no group named {args.name!r}: 'pwgroup status' lists the groups")
            names = [args.name]
        groups = derive(graph, config, report, names=names, member_gain=be.capabilities.member_gain)
        capabilities = be.capabilities.as_dict()
    finally:
        await be.close()
    backend = _chosen.name if _chosen else be.name
    reason = _chosen.reason if _chosen else None
    if args.json:
        _emit_json(status_json(groups, report.pid, backend, reason, capabilities))
        return EXIT_OK
    for line in status_lines(groups, report.pid, backend, reason):
        print(line)
    return EXIT_OK


# ---------------------------------------------------------------- the virtual room


def _room():  # type: ignore[no-untyped-def]
    from pwgroup.sim.room import Room

    return Room()


def cmd_sim_up(args: argparse.Namespace) -> int:
    if not 1 <= args.speakers <= 16:
        raise UserError("--speakers takes 1 to 16")
    latencies = None
    if args.latencies:
        latencies = [_parse_delay(x) for x in args.latencies.split(",")]
        if len(latencies) != args.speakers:
            raise UserError(f"--latencies gives {len(latencies)} values for {args.speakers} speakers")
    if args.noise is not None and not -120.0 <= args.noise <= 0.0:
        raise UserError("--noise is a level in dBFS: use -120 to 0 (e.g. -30)")
    room = _room()
    room.up(
        speakers=args.speakers,
        seed=args.seed,
        latencies_ms=latencies,
        quantum=args.quantum,
        noise_db=args.noise,
        reflections=args.reflections,
    )
    print(f"room up in {room.root} with {len(room.speakers)} speakers; point clients at it with:")
    print('  eval "$(pwgroup sim env)"')
    return EXIT_OK


def cmd_sim_down(args: argparse.Namespace) -> int:
    room = _room()
    room.down()
    print(f"room in {room.root} is down")
    return EXIT_OK


def cmd_sim_env(args: argparse.Namespace) -> int:
    from pwgroup.sim.server import server_env

    room = _room()
    env = server_env(room.root, {})
    for key in sorted(env):
        print(f"export {key}={shlex.quote(env[key])}")
    return EXIT_OK


# ---------------------------------------------------------------- the daemon, its unit, the config


async def cmd_daemon(args: argparse.Namespace) -> int:
    from pwgroup import daemon

    path = Path(args.config) if args.config else None
    if path is not None and not path.is_file():
        raise UserError(f"no configuration file at {safe_text(str(path), 200)}: give an existing file")
    return await daemon.run(path, keep=args.keep, verbose=args.verbose)


def cmd_service_install(args: argparse.Namespace) -> int:
    from pwgroup.daemon import unit_path, unit_text

    text = unit_text(sys.executable)
    if args.print:
        print(text, end="")
        return EXIT_OK
    path = unit_path(os.environ)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    print(f"installed {path}")
    print(
        "start it now and on every login with: systemctl --user daemon-reload && systemctl --user enable --now pwgroup"
    )
    return EXIT_OK


def cmd_config_path(args: argparse.Namespace) -> int:
    from pwgroup.config import config_path

    print(config_path())
    return EXIT_OK


def cmd_config_check(args: argparse.Namespace) -> int:
    from pwgroup.config import ConfigFile, config_path

    path = Path(args.config) if args.config else config_path()
    if not path.exists():
        print(f"{path}: no configuration yet (pwgroup writes it when you create a group)")
        return EXIT_OK
    cfg = ConfigFile.open(path).config
    for warning in cfg.warnings:
        print(f"pwgroup: warning: {warning}", file=sys.stderr)
    members = sum(len(g.members) for g in cfg.groups.values())
    print(f"{path}: valid: {len(cfg.groups)} group(s), {members} member(s)")
    return EXIT_OK


# ---------------------------------------------------------------- drop-ins, doctor, completion


def cmd_export_conf(args: argparse.Namespace) -> int:
    from pwgroup.config import config_path
    from pwgroup.export import default_data_output, export_group, show

    name = check_group_name(args.name)
    config = Path(args.config) if args.config else config_path()
    output = Path(args.output).expanduser() if args.output else None
    data_output = Path(args.data_output).expanduser() if args.data_output else None
    if output is not None and data_output is None:
        data_output = default_data_output(output, dict(os.environ))
    version, wireplumber, files, written, left_out = export_group(
        config, name, args.pipewire_version, args.rate, output, args.wireplumber_version, data_output
    )
    shown = f"PipeWire {show(version)}, WirePlumber {show(wireplumber)}"
    for line in left_out:
        print(f"pwgroup: warning: {line}", file=sys.stderr)
    if output is None:
        for rel, text in files.items():
            print(f"#### {rel} ({shown})")
            print(text)
        return EXIT_OK
    for path in written:
        print(f"wrote {path}")
    print("restart to load them: systemctl --user restart wireplumber pipewire pipewire-pulse")
    return EXIT_OK


async def cmd_doctor(args: argparse.Namespace) -> int:
    from pwgroup.doctor import examine, report

    return report(await examine(os.environ), as_json=args.json)


def cmd_completion(args: argparse.Namespace) -> int:
    from pwgroup.completion import script

    print(script(build_parser(), args.shell), end="")
    return EXIT_OK


# ---------------------------------------------------------------- parsing


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pwgroup",
        description="Play several Bluetooth speakers as one, in sync. With no command, in a terminal: the dashboard.",
    )
    p.add_argument("--version", action="version", version=f"pwgroup {__version__}")
    p.add_argument(
        "--ascii",
        action="store_true",
        help="the dashboard in plain ASCII (also PWGROUP_ASCII=1; the default where the locale is not UTF-8)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    sp = sub.add_parser("speakers", help="list speakers as PipeWire and BlueZ see them")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(run=cmd_speakers)

    for name, text in (
        ("connect", "connect a paired speaker"),
        ("disconnect", "disconnect a speaker"),
        ("trust", "trust a speaker (it may connect by itself)"),
        ("untrust", "stop trusting a speaker"),
    ):
        bt = sub.add_parser(name, help=text)
        bt.add_argument("address", metavar="ADDRESS")
        bt.set_defaults(run=cmd_bt_action)
    sc = sub.add_parser("scan", help="discover Bluetooth devices nearby")
    sc.add_argument("--seconds", type=float, default=10.0)
    sc.add_argument("--json", action="store_true")
    sc.set_defaults(run=cmd_scan)
    pa = sub.add_parser("pair", help="pair and trust a speaker (discovers it first if needed)")
    pa.add_argument("address", metavar="ADDRESS")
    pa.add_argument("--seconds", type=float, default=20.0, help="how long to look for it")
    pa.set_defaults(run=cmd_pair)

    grp = sub.add_parser("group", help="create, change and delete groups").add_subparsers(dest="sub", metavar="ACTION")
    gc = grp.add_parser("create", help="create a group sink from speakers")
    gc.add_argument("name")
    gc.add_argument("speakers", nargs="+", metavar="SPEAKER")
    gc.add_argument("--description", help="the name apps show for the group sink")
    gc.set_defaults(run=cmd_group_create)
    ga = grp.add_parser("add", help="add a speaker to a group")
    ga.add_argument("name")
    ga.add_argument("speaker")
    ga.add_argument("--delay", metavar="MS")
    ga.set_defaults(run=cmd_group_add)
    gr = grp.add_parser("remove", help="remove a speaker from a group")
    gr.add_argument("name")
    gr.add_argument("speaker")
    gr.set_defaults(run=cmd_group_remove)
    gd = grp.add_parser("delete", help="delete a group and everything it made")
    gd.add_argument("name")
    gd.set_defaults(run=cmd_group_delete)

    dl = sub.add_parser("delay", help="set a member's delay").add_subparsers(dest="sub", metavar="ACTION")
    ds = dl.add_parser(
        "set", help="set members' delays in milliseconds, while audio plays (several SPEAKER MS pairs change together)"
    )
    ds.add_argument("name")
    ds.add_argument("pairs", nargs="+", metavar="SPEAKER MS")
    ds.set_defaults(run=cmd_delay_set)
    dt = dl.add_parser("trim", help="add a manual trim (ms, may be negative) on top of a member's delay")
    dt.add_argument("name")
    dt.add_argument("speaker")
    dt.add_argument("ms")
    dt.set_defaults(run=cmd_delay_trim)

    ca = sub.add_parser("calibrate", help="measure each speaker with a microphone and align the group")
    ca.add_argument("name")
    ca.add_argument("--mic", metavar="SOURCE", help="microphone node name or id (default: the only one)")
    ca.add_argument(
        "--method",
        choices=("sweep", "fast", "reported"),
        default=None,
        help="sweep: one sweep staggered through the group sink (the default, or [calibration] method); "
        "fast: all speakers at once, each with its own probe; reported: no microphone, BlueZ's or PipeWire's "
        "reported latency (a guess)",
    )
    ca.add_argument("--json", action="store_true")
    ca.set_defaults(run=cmd_calibrate)

    dm = sub.add_parser("daemon", help="keep the configured groups built and healed (for systemd, or a terminal)")
    dm.add_argument("--config", metavar="FILE", help="the configuration file (default: pwgroup config path)")
    dm.add_argument("--keep", action="store_true", help="on SIGTERM, leave the groups standing")
    dm.add_argument("--verbose", action="store_true", help="also log every action taken")
    dm.set_defaults(run=cmd_daemon)
    sv = sub.add_parser("service", help="the systemd user unit").add_subparsers(dest="sub", metavar="ACTION")
    si = sv.add_parser("install", help="write ~/.config/systemd/user/pwgroup.service for this pwgroup")
    si.add_argument("--print", action="store_true", help="print the unit instead of writing it")
    si.set_defaults(run=cmd_service_install)
    cf = sub.add_parser("config", help="the configuration file").add_subparsers(dest="sub", metavar="ACTION")
    cf.add_parser("path", help="print where the configuration lives").set_defaults(run=cmd_config_path)
    cc = cf.add_parser("check", help="validate the configuration: file, line and key of every problem")
    cc.add_argument("--config", metavar="FILE")
    cc.set_defaults(run=cmd_config_check)

    st = sub.add_parser("status", help="show groups, members, presence and delays")
    st.add_argument("name", nargs="?")
    st.add_argument("--json", action="store_true")
    st.set_defaults(run=cmd_status)

    sim = sub.add_parser("sim", help="the virtual room: a private PipeWire with fake speakers").add_subparsers(
        dest="sub", metavar="ACTION"
    )
    su = sim.add_parser("up", help="start the room")
    su.add_argument("--speakers", type=int, default=3)
    su.add_argument("--seed", type=int, default=1)
    su.add_argument("--latencies", metavar="MS,MS,...", help="hidden latencies instead of seeded random ones")
    su.add_argument("--quantum", type=int, default=None)
    su.add_argument("--noise", type=float, default=None, metavar="DB", help="white noise at the mic, dBFS RMS")
    su.add_argument("--reflections", action="store_true", help="2-4 delayed, attenuated copies per speaker")
    su.set_defaults(run=cmd_sim_up)
    sim.add_parser("down", help="stop the room and remove all it made").set_defaults(run=cmd_sim_down)
    sim.add_parser("env", help="print the environment that points clients at the room").set_defaults(run=cmd_sim_env)

    ex = sub.add_parser("export-conf", help="render drop-ins that build a group with no daemon (PipeWire, WirePlumber)")
    ex.add_argument("name")
    ex.add_argument("--pipewire-version", metavar="V", help="render for this PipeWire (default: the installed one)")
    ex.add_argument(
        "--wireplumber-version",
        metavar="V",
        help="render for this WirePlumber (default: the installed one, else 0.5 from PipeWire 1.2, 0.4 before)",
    )
    ex.add_argument("--output", metavar="DIR", help="write under DIR (e.g. ~/.config) instead of printing")
    ex.add_argument(
        "--data-output",
        metavar="DIR",
        help="where WirePlumber 0.5's script goes (default: ~/.local/share when --output is ~/.config)",
    )
    ex.add_argument("--rate", type=int, default=48000, metavar="HZ", help="the graph's rate (default 48000)")
    ex.add_argument("--config", metavar="FILE", help="the configuration file (default: pwgroup config path)")
    ex.set_defaults(run=cmd_export_conf)
    dr = sub.add_parser("doctor", help="check PipeWire, WirePlumber, BlueZ and the config: each problem with its fix")
    dr.add_argument("--json", action="store_true")
    dr.set_defaults(run=cmd_doctor)
    co = sub.add_parser("completion", help="print a shell completion script (bash or zsh)")
    co.add_argument("shell", choices=("bash", "zsh"))
    co.set_defaults(run=cmd_completion)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # asyncio's child watcher may log a line about a tool that exited early; the user gets our line instead.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "run", None)
    if run is None and args.command is None and sys.stdin.isatty() and sys.stdout.isatty():
        from pwgroup.tui.app import run as dashboard

        run = lambda args: dashboard(ascii_only=True if args.ascii else None)  # noqa: E731
    if run is None:
        parser.print_help()
        return EXIT_USER
    try:
        result = run(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result)
    except PwgroupError as err:
        print(f"pwgroup: {err.message}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
