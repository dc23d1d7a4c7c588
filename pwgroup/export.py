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

Version = tuple[int, int, int]


def parse_version(text: str) -> Version:
    m = re.fullmatch(r"\s*(\d+)\.(\d+)(?:\.(\d+))?\s*", text)
    if not m:
        raise UserError(f"invalid PipeWire version {text[:20]!r}: give it as 0.3.65")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


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
    """PipeWire 0.3.71 and later: one combine-stream sink over the group's speakers, latency-compensated."""
    sink = layout.sink_name(group.name)
    rules = []
    for m in group.members:
        match: dict[str, object] = {"media.class": "Audio/Sink"}
        if target_kind(m.speaker) == KIND_BLUETOOTH:
            match["api.bluez5.address"] = normalize_address(m.speaker)
        else:
            match["node.name"] = speaker_node_name(m.speaker)
        rules.append({"matches": [match], "actions": {"create-stream": {"audio.position": ["FL", "FR"]}}})
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
        "latest, by the latencies the speakers report. The configured delays go in as latency offsets on top\n"
        f"(pwgroup-{group.name}-offsets.sh, run once per connection); they hold when the speakers report alike\n"
        "(same model and codec). Install into ~/.config/pipewire/pipewire.conf.d/ and restart PipeWire."
        + "".join(f"\nNot carried: {line}" for line in not_carried(group, COMBINE_STREAM_SINCE))
    )
    module = spajson.dumps([{"name": "libpipewire-module-combine-stream", "args": args}], 0)
    return f"{head}\ncontext.modules = {module}\n"


def render_offsets_script(group: GroupConfig) -> str:
    """A shell script that sets each Bluetooth member's port latency offset through pipewire-pulse's pactl; a
    sink member's card and port are not known from its node name, so the script says what to set by hand."""
    lines = [
        "#!/bin/sh",
        f"# Written by `pwgroup export-conf {group.name}`: latency offsets for combine-stream's compensation.",
        "# Run after the speakers connect (offsets belong to the card's output port).",
        "set -u",
        "offset() {  # card, microseconds",
        '    port=$(LC_ALL=C pactl list cards | awk -v card="$1" '
        '\'$1 == "Name:" { on = ($2 == card) } on && $1 ~ /-output:$/ { sub(":", "", $1); print $1; exit }\')',
        '    if [ -n "$port" ]; then pactl set-port-latency-offset "$1" "$port" "$2"; '
        'else echo "$1: not connected" >&2; fi',
        "}",
    ]
    for i, (speaker, micros) in enumerate(latency_offsets_us(group).items()):
        if target_kind(speaker) == KIND_BLUETOOTH:  # addresses are hex and colons: nothing to quote
            lines.append(f"offset bluez_card.{_bluez_token(speaker)} {micros}")
        else:  # the slug, never the node name: it is safe in a shell word
            lines.append(
                f"echo \"member {i + 1} ({layout.member_slug(speaker)}): not Bluetooth; give its card's output port "
                f'{micros} us with pactl set-port-latency-offset" >&2'
            )
    return "\n".join(lines) + "\n"


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


def render(group: GroupConfig, version: Version, rate: int = layout.DEFAULT_RATE) -> dict[str, str]:
    """Every file for `group` on PipeWire `version`, by path relative to the config home (~/.config)."""
    if not group.members:
        raise UserError(f"group {group.name!r} has no members: add speakers with 'pwgroup group add'")
    if version < OLDEST:
        raise UserError(f"PipeWire {'.'.join(map(str, version))} is too old: drop-ins need 0.3.65 or later")
    stem = f"pwgroup-{group.name}"
    files: dict[str, str] = {}
    if version >= COMBINE_STREAM_SINCE:
        files[f"pipewire/pipewire.conf.d/{stem}.conf"] = render_combine_stream(group)
        files[f"pipewire/{stem}-offsets.sh"] = render_offsets_script(group)
    else:
        files[f"pipewire/pipewire.conf.d/{stem}.conf"] = render_filter_chain(group, rate)
    if bluetooth_addresses(group):
        files[f"wireplumber/bluetooth.lua.d/51-{stem}.lua"] = render_wireplumber_rules(group)
    return files


def write(files: dict[str, str], root: Path) -> list[Path]:
    written = []
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        if rel.endswith(".sh"):
            tmp.chmod(0o755)
        tmp.replace(path)
        written.append(path)
    return written


def export_group(
    config: Path, name: str, version_text: str | None, rate: int, output: Path | None
) -> tuple[Version, dict[str, str], list[Path], list[str]]:
    """`pwgroup export-conf`: the group from `config`, rendered for the given (or installed) PipeWire."""
    from pwgroup.config import load

    if not 8000 <= rate <= 384000:
        raise UserError("--rate takes 8000 to 384000 (Hz): the rate PipeWire runs at, 48000 unless changed")
    group = load(config).groups.get(name)
    if group is None:
        raise UserError(f"no group named {name!r} in {config}: 'pwgroup status' lists the groups")
    version = parse_version(version_text) if version_text else (installed_pipewire_version() or OLDEST)
    files = render(group, version, rate)
    return version, files, write(files, output) if output is not None else [], not_carried(group, version)
