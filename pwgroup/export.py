"""Drop-in files that build a group with no pwgroup daemon: PipeWire config fragments and WirePlumber rules.

Rendered from a configured group; only addresses and pwgroup's own safe node names go in, never a speaker's name.
"""

from __future__ import annotations

import re
from pathlib import Path

from pwgroup.config import GroupConfig
from pwgroup.graph import layout, spajson
from pwgroup.graph.proc import linked_version
from pwgroup.model import KIND_BLUETOOTH, KIND_SINK, UserError, normalize_address, target_kind

COMBINE_STREAM_SINCE = (0, 3, 71)  # combine.latency-compensate first shipped in 0.3.71
OLDEST = (0, 3, 65)  # filter-chain's builtin delay as measured here (Debian 12)
MAX_DELAY_S = layout.EXPORT_MAX_DELAY_S
WIREPLUMBER_05 = (0, 5, 0)  # reads SPA-JSON wireplumber.conf.d and scripts from the data home; no Lua config
WIREPLUMBER_05_NEEDS = (1, 0, 2)  # the oldest PipeWire WirePlumber 0.5 runs on
# With no --wireplumber-version and none installed: what distributions pair with the PipeWire given (Ubuntu 24.04
# ships 1.0.5 with 0.4.17; Debian 13, Fedora 43 and Ubuntu 26.04 ship 1.4 and later with 0.5).
WIREPLUMBER_05_FROM_PIPEWIRE = (1, 2, 0)
# Keys of files that go under the data home (~/.local/share), where WirePlumber 0.5 looks for scripts; every
# other key is relative to the config home (~/.config).
DATA_HOME = "XDG_DATA_HOME/"

Version = tuple[int, int, int]


def parse_version(text: str, what: str = "PipeWire", example: str = "0.3.65") -> Version:
    m = re.fullmatch(r"\s*(\d+)\.(\d+)(?:\.(\d+))?\s*", text)
    if not m:
        raise UserError(f"invalid {what} version {text[:20]!r}: give it as {example}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def show(version: Version) -> str:
    return ".".join(map(str, version))


def installed_wireplumber_version() -> Version | None:
    return linked_version("wireplumber", "wireplumber")


def pick_wireplumber(pipewire: Version, given: str | None, installed: Version | None) -> Version:
    """The WirePlumber to render for: as given, else the installed one, else what ships with `pipewire`."""
    if given:
        version = parse_version(given, "WirePlumber", "0.5.8")
    elif installed is not None:
        version = installed
    else:
        version = (0, 5, 0) if pipewire >= WIREPLUMBER_05_FROM_PIPEWIRE else (0, 4, 0)
    if version >= WIREPLUMBER_05 and pipewire < WIREPLUMBER_05_NEEDS:
        raise UserError(
            f"WirePlumber {show(version)} needs PipeWire 1.0.2 or later, not {show(pipewire)}: "
            "give --wireplumber-version 0.4 or a newer --pipewire-version"
        )
    return version


def installed_pipewire_version() -> Version | None:
    """The version of the `pipewire` binary on PATH (its library, as linked), or None when there is none."""
    return linked_version("pipewire", "pipewire")


def speaker_node_name(speaker: str) -> str:
    """The node a member plays to, by its kind: BlueZ names a speaker's A2DP sink after its address; a sink
    member's key is its node name."""
    kind = target_kind(speaker)
    if kind == KIND_BLUETOOTH:
        return f"bluez_output.{_bluez_token(speaker)}.1"
    if kind == KIND_SINK:
        return speaker
    raise UserError(f"member {layout.member_slug(speaker)} is on another host: a drop-in plays only to local sinks")


def _bluez_token(speaker: str) -> str:
    """`AA_BB_CC_DD_EE_FF`: how BlueZ's nodes and cards spell a speaker's address."""
    address = normalize_address(speaker)
    if address is None:
        raise ValueError(f"not a Bluetooth address: {speaker!r}")
    return address.replace(":", "_")


def bluetooth_addresses(group: GroupConfig) -> list[str]:
    """The group's Bluetooth members' addresses, in member order: only they get WirePlumber's bluez rules."""
    found = (normalize_address(m.speaker) for m in group.members if target_kind(m.speaker) == KIND_BLUETOOTH)
    return [a for a in found if a]


def _comment(text: str) -> str:
    return "\n".join(f"# {line}".rstrip() for line in text.splitlines())


def _member_gains(volume: float, channels: str) -> tuple[float, float, float, float]:
    """(FL->L, FR->L, FL->R, FR->R) for the member's channel role, as the daemon's links and gain do it."""
    g = volume
    if channels == "left":
        return g, 0.0, g, 0.0
    if channels == "right":
        return 0.0, g, 0.0, g
    if channels == "mono":
        return g / 2, g / 2, g / 2, g / 2
    return g, 0.0, 0.0, g


def member_filter_chain(group: GroupConfig, index: int, rate: int) -> dict[str, object]:
    """Arguments of one member's filter-chain: group monitor in, channel role and volume, delay, speaker out."""
    m = group.members[index]
    delay = layout.delay_control_value(m.total_delay_ms, rate)
    a, b, c, d = _member_gains(m.volume, m.channels)
    delay_cfg = {"max-delay": MAX_DELAY_S}
    graph = {
        "nodes": [
            {"type": "builtin", "name": "inL", "label": "copy"},
            {"type": "builtin", "name": "inR", "label": "copy"},
            {"type": "builtin", "name": "mixL", "label": "mixer", "control": {"Gain 1": a, "Gain 2": b}},
            {"type": "builtin", "name": "mixR", "label": "mixer", "control": {"Gain 1": c, "Gain 2": d}},
            {"type": "builtin", "name": "dL", "label": "delay", "config": delay_cfg, "control": {"Delay (s)": delay}},
            {"type": "builtin", "name": "dR", "label": "delay", "config": delay_cfg, "control": {"Delay (s)": delay}},
        ],
        "links": [
            {"output": "inL:Out", "input": "mixL:In 1"},
            {"output": "inR:Out", "input": "mixL:In 2"},
            {"output": "inL:Out", "input": "mixR:In 1"},
            {"output": "inR:Out", "input": "mixR:In 2"},
            {"output": "mixL:Out", "input": "dL:In"},
            {"output": "mixR:Out", "input": "dR:In"},
        ],
        "inputs": ["inL:In", "inR:In"],
        "outputs": ["dL:Out", "dR:Out"],
    }
    sink = layout.sink_name(group.name)
    return {
        "node.description": f"pwgroup {group.name} member {index + 1}",
        "media.name": f"pwgroup {group.name} member {index + 1}",
        "filter.graph": graph,
        "audio.channels": 2,
        "audio.position": ["FL", "FR"],
        "capture.props": {
            "node.name": layout.member_node_name(group.name, m.speaker, "in"),
            "target.object": sink,
            "stream.capture.sink": True,  # the group sink's monitor
            "node.passive": True,
            "node.autoconnect": True,
            # Not the group's link-group: this side must be allowed to link to the group sink.
            "node.link-group": f"pwgroup.{group.name}.{layout.member_slug(m.speaker)}",
        },
        "playback.props": {
            "node.name": layout.member_node_name(group.name, m.speaker, "out"),
            "target.object": speaker_node_name(m.speaker),
            "node.autoconnect": True,
            # The group sink's link-group: while the speaker is away WirePlumber may park this stream on another
            # sink, but never on the group sink itself (a feedback loop when the group is the default sink).
            # node.dont-reconnect would instead destroy the element, and with it this module, until a restart.
            "node.link-group": sink,
        },
    }


def group_sink_object(group: GroupConfig) -> dict[str, object]:
    # The daemon's sink plus the members' link-group (see member_filter_chain), and without pwgroup's role props:
    # this sink belongs to the server's config, and a daemon must not take it for one it made and may remove.
    args = layout.group_sink_props(group.name, group.description)
    args["node.link-group"] = layout.sink_name(group.name)
    return {"factory": "adapter", "args": args}


def render_filter_chain(group: GroupConfig, rate: int) -> str:
    """PipeWire 0.3.65 and later: the group sink and one filter-chain per member with its delay, in the server."""
    head = _comment(
        f"Written by `pwgroup export-conf {group.name}`: group {group.name!r} with no pwgroup daemon.\n"
        f"PipeWire >= 0.3.65. The sink {layout.sink_name(group.name)!r}; one filter-chain per member delays it\n"
        f"(builtin delay lines, sample-exact at {rate} Hz) and plays to its speaker, linked by WirePlumber.\n"
        "Install into ~/.config/pipewire/pipewire.conf.d/ and restart PipeWire "
        "(systemctl --user restart pipewire).\n"
        "Do not also run `pwgroup daemon` for this group: both would make the same sink.\n"
        "Members, in order: "
        + ", ".join(f"{i + 1} = {layout.member_slug(m.speaker)}" for i, m in enumerate(group.members))
    )
    objects = spajson.dumps([group_sink_object(group)], 0)
    modules = spajson.dumps(
        [
            {"name": "libpipewire-module-filter-chain", "args": member_filter_chain(group, i, rate)}
            for i in range(len(group.members))
        ],
        0,
    )
    return f"{head}\ncontext.objects = {objects}\ncontext.modules = {modules}\n"


def latency_offsets_us(group: GroupConfig) -> dict[str, int]:
    """Per member, the latency to add to what its speaker reports, in microseconds, so that combine-stream's
    compensation (which delays every stream up to the largest total) adds each member's configured delay."""
    totals = {m.speaker: m.total_delay_ms for m in group.members}
    top = max(totals.values(), default=0.0)
    return {k: round((top - v) * 1000) for k, v in totals.items()}


def not_carried(group: GroupConfig, version: Version) -> list[str]:
    """What of the group a rendering for `version` leaves out: combine-stream has no per-stream gain or remix."""
    if version < COMBINE_STREAM_SINCE:
        return []
    return [
        f"member {i + 1} ({layout.member_slug(m.speaker)}): volume {m.volume:g} and channels {m.channels!r} are not "
        "carried by combine-stream (it plays every speaker at full volume, both channels); "
        "--pipewire-version 0.3.65 renders them"
        for i, m in enumerate(group.members)
        if m.volume != 1.0 or m.channels != "both"
    ]


def render_combine_stream(group: GroupConfig) -> str:
    """PipeWire 0.3.71 and later: one combine-stream sink over the group's speakers, latency-compensated.

    Members are matched by node name: the module matches its rules against the node's global properties, and
    `api.bluez5.address` is not among them (a rule by address made no stream on 1.4.2)."""
    sink = layout.sink_name(group.name)
    rules = [
        {
            "matches": [{"media.class": "Audio/Sink", "node.name": speaker_node_name(m.speaker)}],
            "actions": {"create-stream": {"audio.position": ["FL", "FR"]}},
        }
        for m in group.members
    ]
    args = {
        "combine.mode": "sink",
        "node.name": sink,
        "node.description": group.description,
        "combine.latency-compensate": True,
        "combine.props": {"audio.position": ["FL", "FR"], "session.suspend-timeout-seconds": 0},
        "stream.props": {"stream.dont-remix": True},
        "stream.rules": rules,
    }
    head = _comment(
        f"Written by `pwgroup export-conf {group.name}`: group {group.name!r} with no pwgroup daemon.\n"
        "PipeWire >= 0.3.71: combine-stream delays each speaker's stream so that every one ends as late as the\n"
        "latest, by the latencies the speakers report. WirePlumber sets each speaker's latency offset (the\n"
        f"pwgroup-{group.name}-offsets.lua script) to the largest configured delay minus its own, so the\n"
        "compensation adds the configured delays; this holds when the speakers' own reports are alike (same\n"
        "model and codec, or no delay report at all). Install into ~/.config/pipewire/pipewire.conf.d/ and\n"
        "restart PipeWire. Members are matched by node name."
        + "".join(f"\nNot carried: {line}" for line in not_carried(group, COMBINE_STREAM_SINCE))
    )
    module = spajson.dumps([{"name": "libpipewire-module-combine-stream", "args": args}], 0)
    return f"{head}\ncontext.modules = {module}\n"


def _lua_quote(text: str) -> str:
    """A Lua string literal of `text`: anything but a plain token character becomes a decimal byte escape, so a
    node name can never close the string or start code."""
    safe = re.compile(r"[A-Za-z0-9_.:*-]")
    return '"' + "".join(ch if safe.fullmatch(ch) else "".join(f"\\{b:03d}" for b in ch.encode()) for ch in text) + '"'


def offset_matches(group: GroupConfig) -> list[tuple[str, str, int]]:
    """(verb, node name or pattern, offset in ns) for each member: a Bluetooth speaker by its address's node
    pattern (its node name ends in a profile index), any other sink by its exact name."""
    out = []
    for speaker, micros in latency_offsets_us(group).items():
        if target_kind(speaker) == KIND_BLUETOOTH:
            out.append(("matches", f"bluez_output.{_bluez_token(speaker)}.*", micros * 1000))
        else:
            out.append(("equals", speaker_node_name(speaker), micros * 1000))
    return out


def render_offsets_script(group: GroupConfig) -> str:
    """A WirePlumber script (the same Lua runs on 0.4 and 0.5) that sets each member's node latency offset, the
    `latencyOffsetNsec` of its Props, as the node appears: every connection, with no pwgroup process. A
    Bluetooth node adds it to the latency it reports, and combine-stream compensates for it."""
    lines = [
        f"-- Written by `pwgroup export-conf {group.name}`: latency offsets for group {group.name!r}, so that",
        "-- combine-stream's latency compensation adds each member's configured delay (the largest delay minus",
        "-- the member's own, in ns, on top of what the speaker reports). Loaded by WirePlumber (0.4: a",
        "-- load_script line in main.lua.d; 0.5: a component in wireplumber.conf.d).",
        "local offsets = {",
    ]
    lines += [f"  {{ {_lua_quote(verb)}, {_lua_quote(name)}, {ns} }}," for verb, name, ns in offset_matches(group)]
    lines += [
        "}",
        "pwgroup_offset_managers = pwgroup_offset_managers or {}",
        "for _, o in ipairs(offsets) do",
        "  local verb, name, nsec = o[1], o[2], o[3]",
        '  local om = ObjectManager { Interest { type = "node", Constraint { "node.name", verb, name } } }',
        '  om:connect("object-added", function (_, node)',
        '    node:set_param("Props", Pod.Object { "Spa:Pod:Object:Param:Props", "Props", latencyOffsetNsec = nsec })',
        "  end)",
        "  om:activate()",
        "  table.insert(pwgroup_offset_managers, om)  -- kept: a collected manager stops watching",
        "end",
    ]
    return "\n".join(lines) + "\n"


def render_wireplumber_05(group: GroupConfig) -> str:
    """WirePlumber 0.5 (SPA-JSON in wireplumber.conf.d): the Bluetooth speakers' rules, and the offsets script as
    a component of the main profile."""
    stem = f"pwgroup-{group.name}"
    rules = []
    for address in bluetooth_addresses(group):
        token = _bluez_token(address)
        rules.append(
            {
                "matches": [{"device.name": f"bluez_card.{token}"}],
                "actions": {"update-props": {"device.profile": "a2dp-sink", "bluez5.auto-connect": ["a2dp_sink"]}},
            }
        )
        rules.append(
            {
                "matches": [{"node.name": f"~bluez_output.{token}.*"}],
                "actions": {"update-props": {"session.suspend-timeout-seconds": 0, "node.pause-on-idle": False}},
            }
        )
    head = _comment(
        f"Written by `pwgroup export-conf {group.name}`: WirePlumber 0.5 rules for group {group.name!r}:\n"
        "its Bluetooth speakers stay on A2DP (no call profile) and never suspend (a resume costs the first\n"
        f"words); its members' latency offsets come from {stem}-offsets.lua, which WirePlumber 0.5 reads from\n"
        "~/.local/share/wireplumber/scripts/. Install into ~/.config/wireplumber/wireplumber.conf.d/ and restart\n"
        "WirePlumber."
    )
    out = [head]
    if rules:
        out.append(f"monitor.bluez.rules = {spajson.dumps(rules, 0)}")
    component = {"name": f"{stem}-offsets.lua", "type": "script/lua", "provides": f"custom.{stem}-offsets"}
    out.append(f"wireplumber.components = {spajson.dumps([component], 0)}")
    out.append(f"wireplumber.profiles = {spajson.dumps({'main': {f'custom.{stem}-offsets': 'required'}}, 0)}")
    return "\n".join(out) + "\n"


def render_wireplumber_04_loader(group: GroupConfig) -> str:
    """WirePlumber 0.4 (main.lua.d): load the offsets script from ~/.config/wireplumber/scripts/."""
    return (
        f"-- Written by `pwgroup export-conf {group.name}`: WirePlumber 0.4 loads the latency offsets of group\n"
        f"-- {group.name!r} (scripts/pwgroup-{group.name}-offsets.lua).\n"
        "-- Install into ~/.config/wireplumber/main.lua.d/.\n"
        f'load_script("pwgroup-{group.name}-offsets.lua")\n'
    )


def _lua_string(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.:*-]*", text):
        raise ValueError(f"not a safe token for a Lua rule: {text!r}")
    return f'"{text}"'


def render_wireplumber_rules(group: GroupConfig) -> str:
    """WirePlumber 0.4 (bluetooth.lua.d): the group's speakers stay on A2DP and never suspend."""
    addresses = bluetooth_addresses(group)
    out = [
        f"-- Written by `pwgroup export-conf {group.name}`: WirePlumber 0.4 rules for the Bluetooth speakers of",
        f"-- group {group.name!r}: A2DP only (no call profile), never suspended (a resume costs the first words).",
        "-- Install into ~/.config/wireplumber/bluetooth.lua.d/ and restart WirePlumber.",
    ]
    for address in addresses:
        card = _lua_string(f"bluez_card.{_bluez_token(address)}")
        node = _lua_string(f"bluez_output.{_bluez_token(address)}.*")
        out += [
            "table.insert(bluez_monitor.rules, {",
            f'  matches = {{ {{ {{ "device.name", "equals", {card} }} }} }},',
            "  apply_properties = {",
            '    ["device.profile"] = "a2dp-sink",',
            '    ["bluez5.auto-connect"] = "[ a2dp_sink ]",',
            "  },",
            "})",
            "table.insert(bluez_monitor.rules, {",
            f'  matches = {{ {{ {{ "node.name", "matches", {node} }} }} }},',
            "  apply_properties = {",
            '    ["session.suspend-timeout-seconds"] = 0,',
            '    ["node.pause-on-idle"] = false,',
            "  },",
            "})",
        ]
    return "\n".join(out) + "\n"


def render(
    group: GroupConfig, version: Version, rate: int = layout.DEFAULT_RATE, wireplumber: Version | None = None
) -> dict[str, str]:
    """Every file for `group` on PipeWire `version` with WirePlumber `wireplumber` (default: what ships with that
    PipeWire), by path relative to the config home (~/.config); a key under DATA_HOME goes to the data home."""
    if not group.members:
        raise UserError(f"group {group.name!r} has no members: add speakers with 'pwgroup group add'")
    if version < OLDEST:
        raise UserError(f"PipeWire {show(version)} is too old: drop-ins need 0.3.65 or later")
    wp = wireplumber or pick_wireplumber(version, None, None)
    stem = f"pwgroup-{group.name}"
    files: dict[str, str] = {}
    if version < COMBINE_STREAM_SINCE:
        files[f"pipewire/pipewire.conf.d/{stem}.conf"] = render_filter_chain(group, rate)
    else:
        files[f"pipewire/pipewire.conf.d/{stem}.conf"] = render_combine_stream(group)
        if wp >= WIREPLUMBER_05:
            files[f"{DATA_HOME}wireplumber/scripts/{stem}-offsets.lua"] = render_offsets_script(group)
        else:
            files[f"wireplumber/scripts/{stem}-offsets.lua"] = render_offsets_script(group)
            files[f"wireplumber/main.lua.d/51-{stem}.lua"] = render_wireplumber_04_loader(group)
    if wp >= WIREPLUMBER_05:
        files[f"wireplumber/wireplumber.conf.d/51-{stem}.conf"] = render_wireplumber_05(group)
    elif bluetooth_addresses(group):
        files[f"wireplumber/bluetooth.lua.d/51-{stem}.lua"] = render_wireplumber_rules(group)
    return files


def write(files: dict[str, str], root: Path, data_root: Path | None = None) -> list[Path]:
    """Write atomically: config files under `root`, DATA_HOME ones under `data_root`."""
    written = []
    for rel, text in files.items():
        if rel.startswith(DATA_HOME):
            if data_root is None:
                raise UserError(f"{rel[len(DATA_HOME) :]} goes under the data home: give --data-output DIR")
            path = data_root / rel[len(DATA_HOME) :]
        else:
            path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written


def default_data_output(output: Path, environ: dict[str, str]) -> Path | None:
    """Where DATA_HOME files go when only --output is given: the data home, but only when --output is the config
    home itself (files written elsewhere say where their scripts go, with --data-output)."""
    home = Path(environ.get("HOME", "~")).expanduser()
    config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    if output.resolve() != config_home.resolve():
        return None
    return Path(environ.get("XDG_DATA_HOME") or home / ".local" / "share")


def export_group(
    config: Path,
    name: str,
    version_text: str | None,
    rate: int,
    output: Path | None,
    wireplumber_text: str | None = None,
    data_output: Path | None = None,
) -> tuple[Version, Version, dict[str, str], list[Path], list[str]]:
    """`pwgroup export-conf`: the group from `config`, rendered for the given (or installed) PipeWire and
    WirePlumber."""
    from pwgroup.config import load

    if not 8000 <= rate <= 384000:
        raise UserError("--rate takes 8000 to 384000 (Hz): the rate PipeWire runs at, 48000 unless changed")
    group = load(config).groups.get(name)
    if group is None:
        raise UserError(f"no group named {name!r} in {config}: 'pwgroup status' lists the groups")
    version = parse_version(version_text) if version_text else (installed_pipewire_version() or OLDEST)
    # The installed WirePlumber counts only when the PipeWire is the installed one too.
    installed = None if version_text or wireplumber_text else installed_wireplumber_version()
    wireplumber = pick_wireplumber(version, wireplumber_text, installed)
    files = render(group, version, rate, wireplumber)
    if output is not None and data_output is None and any(k.startswith(DATA_HOME) for k in files):
        raise UserError(
            f"WirePlumber {show(wireplumber)} reads its scripts from the data home, not from {output}: "
            "give --data-output DIR (e.g. ~/.local/share)"
        )
    written = write(files, output, data_output) if output is not None else []
    return version, wireplumber, files, written, not_carried(group, version)
