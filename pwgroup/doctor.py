"""`pwgroup doctor`: what pwgroup needs from this machine and session, checked one by one.

Every problem comes with the one line that fixes it; nothing here changes anything.
"""

from __future__ import annotations

import asyncio
import glob
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pwgroup.graph.proc import linked_version
from pwgroup.model import EXIT_FAILED, EXIT_OK, Graph, PwgroupError

SUSPEND_FIX = Path(__file__).resolve().parent / "data" / "suspend-node.lua"
BROKEN_WIREPLUMBER = (0, 4, 13)
SPA_JSON_WIREPLUMBER = (0, 5, 0)  # reads no Lua configuration: rules are SPA-JSON in wireplumber.conf.d
LUA_CONFIG_DIRS = ("/etc/wireplumber",)  # beside the user's ~/.config/wireplumber
UPGRADE_PIPEWIRE = (
    "Debian 12: apt-get install -t bookworm-backports pipewire wireplumber pipewire-pulse (1.4.2), "
    "then systemctl --user restart pipewire wireplumber pipewire-pulse"
)
SPA_DIRS = ("/usr/lib/*/spa-0.2", "/usr/lib/spa-0.2", "/usr/lib64/spa-0.2", "/usr/local/lib/*/spa-0.2")
MIN_QUANTUM = 256  # below this Bluetooth sinks underrun (A2DP packets are bigger than one small quantum)
START_SESSION = "systemctl --user enable --now pipewire pipewire-pulse wireplumber"


@dataclass
class Check:
    name: str
    status: str  # "ok", "problem", "info" (nothing to fix) or "skipped" (an earlier problem hides it)
    detail: str
    fix: str | None = None


def _shown(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def spa_dirs(env: Mapping[str, str], patterns: Sequence[str] = SPA_DIRS) -> list[Path]:
    if env.get("SPA_PLUGIN_DIR"):
        return [Path(p) for p in env["SPA_PLUGIN_DIR"].split(":") if p]
    return [Path(p) for pattern in patterns for p in sorted(glob.glob(pattern))]


def check_pipewire_install() -> tuple[list[Check], tuple[int, int, int] | None]:
    from pwgroup.export import COMBINE_STREAM_SINCE

    version = linked_version("pipewire", "pipewire")
    if version is None:
        fix = "sudo apt-get install pipewire pipewire-bin wireplumber pipewire-pulse"
        return [Check("pipewire", "problem", "PipeWire is not installed (no pipewire on PATH)", fix)], None
    combine = version >= COMBINE_STREAM_SINCE
    mechanisms = "filter-chain delay lines (what pwgroup's daemon and export-conf use): yes; " + (
        "combine-stream with latency compensation: yes"
        if combine
        else f"combine-stream with latency compensation: no (needs {_shown(COMBINE_STREAM_SINCE)})"
    )
    return [
        Check("pipewire", "ok", f"PipeWire {_shown(version)} installed"),
        Check("mechanisms", "info", mechanisms),
    ], version


def check_combine_drop_ins(env: Mapping[str, str], version: tuple[int, int, int] | None) -> list[Check]:
    """A combine-stream drop-in (export-conf's form for 0.3.71 and later) on a PipeWire too old to compensate
    latency: its sink plays every member at once, undelayed."""
    from pwgroup.export import COMBINE_STREAM_SINCE

    if version is None or version >= COMBINE_STREAM_SINCE:
        return []
    conf_d = config_home(env) / "pipewire" / "pipewire.conf.d"
    found = []
    for path in sorted(conf_d.glob("pwgroup-*.conf")):
        try:
            if "combine.latency-compensate" in path.read_text(errors="replace"):
                found.append(path)
        except OSError:
            continue
    if not found:
        return []
    names = ", ".join(p.name for p in found)
    return [
        Check(
            "combine-stream",
            "problem",
            f"{names}: combine-stream on PipeWire {_shown(version)} has no latency compensation "
            f"(needs {_shown(COMBINE_STREAM_SINCE)}): every member plays undelayed",
            f"pwgroup export-conf NAME --pipewire-version {_shown(version)} --output ~/.config (delay lines), "
            f"remove {found[0]}, and restart PipeWire; or upgrade ({UPGRADE_PIPEWIRE})",
        )
    ]


def config_home(env: Mapping[str, str]) -> Path:
    return Path(env.get("XDG_CONFIG_HOME") or Path(env.get("HOME") or Path.home()) / ".config")


def running_versions(graph: Graph | None, installed_wireplumber: tuple[int, int, int] | None) -> list[Check]:
    """The versions that run: the server's own (its Core object) and its session manager's."""
    if graph is None:
        return []
    server = graph.core_version
    clients = list(graph.clients.values())
    manager = next((c for c in clients if c.get("application.name") in ("WirePlumber", "pipewire-media-session")), None)
    if manager is None:
        who = "no session manager"
    else:
        name = str(manager.get("application.name"))
        # WirePlumber announces no version of its own: the one installed says it.
        said = manager.get("application.version")
        version = said if isinstance(said, str) else _shown(installed_wireplumber) if installed_wireplumber else "?"
        who = f"{name} {version}"
    return [Check("versions", "info", f"PipeWire {server or '?'} (the server running), {who}")]


async def read_graph(env: Mapping[str, str]) -> Graph:
    from pwgroup.graph import pwdump
    from pwgroup.graph.proc import run

    return pwdump.parse(await run(["pw-dump", "-N"], env=env, timeout=5.0))


def runtime_of(env: Mapping[str, str]) -> str:
    return env.get("PIPEWIRE_RUNTIME_DIR") or env.get("XDG_RUNTIME_DIR") or "(XDG_RUNTIME_DIR is not set)"


def check_session(graph: Graph | None, why: str, env: Mapping[str, str]) -> list[Check]:
    if graph is None:
        where = runtime_of(env)
        fix = f"{START_SESSION} (or set PIPEWIRE_RUNTIME_DIR to the folder of a running PipeWire's socket)"
        if not env.get("XDG_RUNTIME_DIR") and not env.get("PIPEWIRE_RUNTIME_DIR"):
            fix = "log in through a desktop or `loginctl enable-linger $USER` so XDG_RUNTIME_DIR exists, then " + (
                START_SESSION
            )
        if where.startswith("/") and not (Path(where) / "pipewire-0").exists():
            why = "no pipewire-0 socket there"
        detail = f"no PipeWire answers in {where}: {why}"
        if not where.startswith("/"):
            detail = "XDG_RUNTIME_DIR is not set: this is no login session, so no PipeWire socket can be found"
        return [Check("pipewire running", "problem", detail, fix)]
    clients = list(graph.clients.values())
    wp = any(c.get("application.name") == "WirePlumber" for c in clients)
    pulse = any(str(c.get("config.name", "")).endswith("pipewire-pulse.conf") for c in clients)
    return [
        Check("pipewire running", "ok", f"PipeWire answers in {runtime_of(env)}"),
        Check("wireplumber running", "ok", "WirePlumber is connected")
        if wp
        else Check(
            "wireplumber running",
            "problem",
            "no session manager: nothing links streams and filter-chain ports never appear",
            "systemctl --user enable --now wireplumber",
        ),
        Check("pipewire-pulse running", "ok", "pipewire-pulse is connected (PulseAudio apps can play to groups)")
        if pulse
        else Check(
            "pipewire-pulse running",
            "problem",
            "no pipewire-pulse: apps that speak PulseAudio cannot see the group sinks",
            "sudo apt-get install pipewire-pulse && systemctl --user enable --now pipewire-pulse",
        ),
    ]


def lua_config_left(env: Mapping[str, str], system_dirs: Sequence[str] = LUA_CONFIG_DIRS) -> list[Path]:
    """WirePlumber 0.4's Lua configuration folders (main.lua.d, bluetooth.lua.d, policy.lua.d...) that hold a
    file: WirePlumber 0.5 ignores every one of them."""
    bases = [config_home(env) / "wireplumber", *(Path(d) for d in system_dirs)]
    found = []
    for base in bases:
        for folder in sorted(base.glob("*.lua.d")):
            if folder.is_dir() and any(f.is_file() for f in folder.iterdir()):
                found.append(folder)
    return found


def check_wireplumber(
    env: Mapping[str, str],
    version: tuple[int, int, int] | None = None,
    system_dirs: Sequence[str] = LUA_CONFIG_DIRS,
) -> list[Check]:
    version = version or linked_version("wireplumber", "wireplumber")
    if version is None:
        return [Check("wireplumber", "problem", "WirePlumber is not installed", "sudo apt-get install wireplumber")]
    if version >= SPA_JSON_WIREPLUMBER:
        left = lua_config_left(env, system_dirs)
        if not left:
            return [Check("wireplumber", "ok", f"WirePlumber {_shown(version)} (SPA-JSON configuration)")]
        return [
            Check(
                "wireplumber",
                "problem",
                f"WirePlumber {_shown(version)} ignores Lua configuration, and rules are left in "
                + ", ".join(str(p) for p in left),
                "rewrite them as SPA-JSON in ~/.config/wireplumber/wireplumber.conf.d/*.conf (a pwgroup group: "
                f"pwgroup export-conf NAME --pipewire-version V --output ~/.config), then remove {left[0]} "
                "and systemctl --user restart wireplumber",
            )
        ]
    if version != BROKEN_WIREPLUMBER:
        return [Check("wireplumber", "ok", f"WirePlumber {_shown(version)}")]
    installed = config_home(env) / "wireplumber" / "scripts" / "suspend-node.lua"
    try:
        fixed = installed.read_bytes() == SUSPEND_FIX.read_bytes()
    except OSError:
        fixed = False
    if fixed:
        return [Check("wireplumber", "ok", f"WirePlumber 0.4.13 with pwgroup's fixed suspend-node.lua ({installed})")]
    return [
        Check(
            "wireplumber",
            "problem",
            "WirePlumber 0.4.13 crashes in suspend-node.lua when an idle node is removed",
            f"install -Dm644 {SUSPEND_FIX} {installed} && systemctl --user restart wireplumber",
        )
    ]


async def check_bluez() -> list[Check]:
    from pwgroup.bluez.client import BluezClient
    from pwgroup.bluez.errors import BluetoothError

    try:
        async with await asyncio.wait_for(BluezClient.open(), 10.0) as bt:
            adapters = bt.adapters()
    except (BluetoothError, TimeoutError) as err:
        detail = err.message if isinstance(err, BluetoothError) else "BlueZ did not answer within 10 s"
        fix = "sudo apt-get install bluez && sudo systemctl enable --now bluetooth"
        if "system bus" in detail:
            fix = "sudo apt-get install dbus bluez && sudo systemctl enable --now dbus bluetooth"
        return [
            Check("bluez", "problem", detail, fix),
            Check("adapters", "skipped", "BlueZ is not reachable"),
        ]
    checks = [Check("bluez", "ok", "BlueZ answers on the system bus")]
    if not adapters:
        checks.append(
            Check(
                "adapters",
                "problem",
                "no Bluetooth adapter",
                "plug one in, or unblock it: rfkill unblock bluetooth",
            )
        )
    elif not any(a.powered for a in adapters):
        checks.append(
            Check("adapters", "problem", f"{len(adapters)} adapter(s), none powered", "bluetoothctl power on")
        )
    else:
        shown = ", ".join(f"{a.address or a.path} ({'on' if a.powered else 'off'})" for a in adapters)
        checks.append(Check("adapters", "ok", shown))
    return checks


def check_plugin(env: Mapping[str, str], patterns: Sequence[str] = SPA_DIRS) -> list[Check]:
    dirs = spa_dirs(env, patterns)
    plugins = [d / "bluez5" / "libspa-bluez5.so" for d in dirs]
    found = [p for p in plugins if p.exists()]
    if not found:
        return [
            Check(
                "bluetooth plugin",
                "problem",
                "PipeWire's Bluetooth plugin is missing: paired speakers get no audio node",
                "sudo apt-get install libspa-0.2-bluetooth && systemctl --user restart pipewire wireplumber",
            ),
            Check("codecs", "skipped", "no Bluetooth plugin"),
        ]
    codecs = sorted(
        {
            m.group(1)
            for p in found
            for f in p.parent.glob("libspa-codec-bluez5-*.so")
            if (m := re.match(r"libspa-codec-bluez5-(.+)\.so$", f.name))
        }
    )
    return [
        Check("bluetooth plugin", "ok", str(found[0])),
        Check("codecs", "info", "A2DP codecs installed: " + (", ".join(codecs) if codecs else "none found")),
    ]


def check_graph_settings(graph: Graph | None) -> list[Check]:
    from pwgroup.graph import layout

    if graph is None:
        return [Check("quantum", "skipped", "PipeWire is not running")]
    rate, quantum = layout.graph_rate(graph), layout.graph_quantum(graph)
    detail = f"rate {rate} Hz, quantum {quantum} samples ({quantum * 1000 / rate:.1f} ms)"
    forced = graph.settings.get("clock.force-quantum")
    if quantum < MIN_QUANTUM:
        fix = (
            "pw-metadata -n settings 0 clock.force-quantum 0"
            if forced
            else f"set default.clock.quantum = {MIN_QUANTUM * 4} in ~/.config/pipewire/pipewire.conf.d/"
        )
        return [Check("quantum", "problem", detail + f": Bluetooth sinks underrun below {MIN_QUANTUM}", fix)]
    codecs = sorted(
        {
            str(n.props.get("api.bluez5.codec"))
            for n in graph.nodes.values()
            if n.props.get("device.api") == "bluez5" and n.props.get("api.bluez5.codec")
        }
    )
    checks = [Check("quantum", "ok", detail)]
    if codecs:
        checks.append(Check("speaker codecs", "info", "in use: " + ", ".join(codecs)))
    return checks


def check_config_and_daemon(env: Mapping[str, str]) -> list[Check]:
    from pwgroup.config import ConfigError, config_path, load
    from pwgroup.supervisor.session import daemon_pid

    path = config_path(env)
    checks: list[Check] = []
    groups = 0
    try:
        cfg = load(path)
    except ConfigError as err:
        checks.append(Check("config", "problem", err.message, f"edit {path} (pwgroup config check names each problem)"))
    else:
        groups = len(cfg.groups)
        if not path.exists():
            checks.append(Check("config", "info", f"no configuration yet at {path} (pwgroup group create writes it)"))
        else:
            checks.append(Check("config", "ok", f"{path}: valid, {groups} group(s)"))
        checks += [Check("config", "info", w) for w in cfg.warnings]
    pid = daemon_pid(env)
    drop_ins = sorted((config_home(env) / "pipewire" / "pipewire.conf.d").glob("pwgroup-*.conf"))
    if pid is not None:
        checks.append(Check("daemon", "ok", f"pwgroup daemon running (pid {pid}) and holding the lock"))
    elif drop_ins:
        checks.append(
            Check("daemon", "info", f"no daemon; groups from drop-ins: {', '.join(p.name for p in drop_ins)}")
        )
    elif groups:
        checks.append(
            Check(
                "daemon",
                "problem",
                f"{groups} group(s) configured, but no daemon builds or heals them",
                "pwgroup service install && systemctl --user daemon-reload && systemctl --user enable --now pwgroup",
            )
        )
    else:
        checks.append(Check("daemon", "info", "not running (nothing configured for it yet)"))
    return checks


async def examine(env: Mapping[str, str]) -> list[Check]:
    checks, version = check_pipewire_install()
    graph: Graph | None = None
    why = "PipeWire is not installed"
    if version is not None:
        try:
            graph = await read_graph(env)
        except PwgroupError as err:
            why = err.message.split(":")[0]
    checks += check_combine_drop_ins(env, version)
    checks += check_session(graph, why, env)
    wireplumber = linked_version("wireplumber", "wireplumber")
    checks += running_versions(graph, wireplumber)
    checks += check_wireplumber(env, wireplumber)
    checks += await check_bluez()
    checks += check_plugin(env)
    checks += check_graph_settings(graph)
    checks += check_config_and_daemon(env)
    return checks


MARK = {"ok": "ok", "problem": "PROBLEM", "info": "info", "skipped": "skipped"}


def report(checks: list[Check], as_json: bool = False) -> int:
    problems = [c for c in checks if c.status == "problem"]
    if as_json:
        data: dict[str, Any] = {"healthy": not problems, "checks": [asdict(c) for c in checks]}
        print(json.dumps(data, indent=2, ensure_ascii=True))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            print(f"{MARK[c.status]:<8} {c.name:<{width}}  {c.detail}")
            if c.fix:
                print(f"{'':<8} {'':<{width}}  fix: {c.fix}")
        print()
        if problems:
            print(f"{len(problems)} problem(s); fix them in the order shown, then run 'pwgroup doctor' again")
        else:
            print("healthy: pwgroup has everything it needs")
    return EXIT_FAILED if problems else EXIT_OK
