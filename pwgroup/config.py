"""The user's configuration file: groups, members, reconnect and calibration settings, in TOML.

Read with tomllib and validated with file:line:key errors; written back through tomlkit so the user's
comments and order survive, atomically (temporary file, fsync, rename) with the previous file kept as `.bak`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import re
import tempfile
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pwgroup.model import GroupSpec, MemberSpec, UserError, check_group_name, normalize_address

VERSION = 1
CHANNELS = ("both", "left", "right", "mono")
METHODS = ("sweep", "fast")
MAX_DELAY_MS = 1900.0
STALE_AFTER_DAYS = 30.0

GROUP_KEYS = {"description": "text shown by apps", "members": "an array of [[groups.NAME.members]] tables"}
MEMBER_KEYS = {
    "address": "the speaker's Bluetooth address, AA:BB:CC:DD:EE:FF",
    "node": "a PipeWire node name, for a speaker that is not Bluetooth",
    "delay_ms": f"0 to {MAX_DELAY_MS:g}",
    "trim_ms": f"-{MAX_DELAY_MS:g} to {MAX_DELAY_MS:g}, added to delay_ms",
    "latency_ms": "0 to 5000, written by calibrate",
    "calibrated": "a date-time, written by calibrate",
    "volume": "0.0 to 1.5",
    "channels": " | ".join(CHANNELS),
}
RECONNECT_KEYS = {
    "enabled": "true | false",
    "initial_s": "0.1 to 600",
    "max_s": "1 to 3600",
    "auth_failures": "1 to 100",
}
CALIBRATION_KEYS = {
    "microphone": "a microphone node name",
    "method": " | ".join(METHODS),
    "stale_after_days": "0.1 to 3650",
}
TOP_KEYS = {
    "version": f"{VERSION}",
    "groups": "tables [groups.NAME]",
    "reconnect": "a table",
    "calibration": "a table",
}


class ConfigError(UserError):
    """A configuration the program cannot use: the message names file, line and key."""


def load(path: Path) -> Config:
    """Read and validate without tomlkit (fast: `pwgroup status` takes this path); no file is an empty config."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the configuration: {err}") from None
    return parse(text, path)


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "pwgroup" / "config.toml"


# ---------------------------------------------------------------- the validated model


@dataclass(frozen=True)
class MemberConfig:
    speaker: str  # a Bluetooth address (normalised) or a node name
    delay_ms: float = 0.0
    trim_ms: float = 0.0
    latency_ms: float | None = None
    calibrated: dt.datetime | None = None
    volume: float = 1.0
    channels: str = "both"

    @property
    def total_delay_ms(self) -> float:
        return min(MAX_DELAY_MS, max(0.0, self.delay_ms + self.trim_ms))

    def stale(self, now: dt.datetime, days: float) -> bool:
        """Never calibrated, or longer ago than `days`: worth measuring again."""
        return self.calibrated is None or (now - self.calibrated).total_seconds() > days * 86400


@dataclass(frozen=True)
class GroupConfig:
    name: str
    description: str
    members: tuple[MemberConfig, ...] = ()

    def member(self, speaker: str) -> MemberConfig | None:
        return next((m for m in self.members if m.speaker == speaker), None)

    def spec(self) -> GroupSpec:
        """What the reconciler is to build: total delays (calibrated plus trim) per member."""
        members = tuple(MemberSpec(m.speaker, m.total_delay_ms, m.volume, m.channels) for m in self.members)
        return GroupSpec(self.name, self.description, members)


@dataclass(frozen=True)
class ReconnectConfig:
    enabled: bool = True
    initial_s: float = 2.0
    max_s: float = 60.0
    auth_failures: int = 3


@dataclass(frozen=True)
class CalibrationConfig:
    microphone: str | None = None
    method: str = "sweep"
    stale_after_days: float = STALE_AFTER_DAYS


@dataclass(frozen=True)
class Config:
    groups: dict[str, GroupConfig] = field(default_factory=dict)
    reconnect: ReconnectConfig = ReconnectConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    warnings: tuple[str, ...] = ()


# ---------------------------------------------------------------- reading


class _Checker:
    """Validation with positions: finds the line of a key by walking the file's table headers."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.warnings: list[str] = []

    def line_of(self, table: tuple[str | int, ...], key: str | None = None) -> int:
        """1-based line of `key` in `table` (an index in the path picks the n-th `[[...]]`), else its header."""
        want = ".".join(str(p) for p in table if not isinstance(p, int))
        index = next((p for p in table if isinstance(p, int)), None)
        current, seen, header_line = "", -1, 0
        for number, raw in enumerate(self.lines, 1):
            line = raw.strip()
            m = re.match(r"^(\[\[?)\s*([^\]]+?)\s*\]\]?", line)
            if m:
                current = ".".join(part.strip().strip("\"'") for part in m.group(2).split("."))
                if current == want:
                    seen += 1 if m.group(1) == "[[" else 0
                    if index is None or seen == index:
                        header_line = number
                continue
            in_table = current == want and (index is None or seen == index)
            if key and in_table and re.match(rf"^[\"']?{re.escape(key)}[\"']?\s*=", line):
                return number
        return header_line or 1

    def where(self, table: tuple[str | int, ...], key: str | None = None) -> str:
        path = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(table))
        name = f"{path}.{key}" if key and path else (key or path or "top level")
        return f"{self.path}:{self.line_of(table, key)}: {name}"

    def fail(self, table: tuple[str | int, ...], key: str | None, problem: str) -> ConfigError:
        return ConfigError(f"{self.where(table, key)}: {problem}")

    def unknown(self, table: tuple[str | int, ...], data: Mapping[str, Any], allowed: Mapping[str, str]) -> None:
        for key in data:
            if key not in allowed:
                shown = key if key.isprintable() and len(key) <= 40 else repr(key[:40])
                self.warnings.append(
                    f"{self.where(table, None)}: unknown key {shown!r} ignored; allowed: {', '.join(allowed)}"
                )

    def number(
        self, table: tuple[str | int, ...], data: Mapping[str, Any], key: str, lo: float, hi: float, default: float
    ) -> float:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.fail(table, key, f"must be a number from {lo:g} to {hi:g}")
        if not lo <= value <= hi:
            raise self.fail(table, key, f"{value:g} is out of range: use {lo:g} to {hi:g}")
        return float(value)

    def choice(self, table: tuple[str | int, ...], data: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str:
        value = data.get(key, allowed[0])
        if value not in allowed:
            raise self.fail(table, key, f"must be one of {', '.join(allowed)}")
        return str(value)

    def table(self, parent: tuple[str | int, ...], data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(parent, key, "must be a table")
        return value


def parse(text: str, path: Path) -> Config:
    """Validate a configuration's text; every error names the file, line and key, and what is allowed."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        m = re.search(r"at line (\d+)", str(err))
        line = m.group(1) if m else "1"
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(err))
        raise ConfigError(f"{path}:{line}: not valid TOML: {reason}") from None
    check = _Checker(path, text)
    check.unknown((), data, TOP_KEYS)
    version = data.get("version", VERSION)
    if version != VERSION:
        raise check.fail((), "version", f"{version!r} is not a version this pwgroup reads (it reads {VERSION})")
    groups: dict[str, GroupConfig] = {}
    for name, body in check.table((), data, "groups").items():
        where: tuple[str | int, ...] = ("groups", name)
        try:
            check_group_name(name)
        except UserError as err:
            raise check.fail(where, None, err.message) from None
        if not isinstance(body, dict):
            raise check.fail(("groups",), name, "must be a table")
        check.unknown(where, body, GROUP_KEYS)
        description = body.get("description", name)
        if not isinstance(description, str) or not description.strip() or len(description) > 256:
            raise check.fail(where, "description", "must be text of 1 to 256 characters")
        raw_members = body.get("members", [])
        if not isinstance(raw_members, list) or not all(isinstance(m, dict) for m in raw_members):
            raise check.fail(where, "members", "must be an array of tables, each written [[groups.NAME.members]]")
        members = [_member(check, (*where, "members", i), m) for i, m in enumerate(raw_members)]
        seen: set[str] = set()
        for i, member in enumerate(members):
            if member.speaker in seen:
                raise check.fail((*where, "members", i), None, f"{member.speaker} is listed twice")
            seen.add(member.speaker)
        groups[name] = GroupConfig(name, description, tuple(members))
    rc = check.table((), data, "reconnect")
    check.unknown(("reconnect",), rc, RECONNECT_KEYS)
    enabled = rc.get("enabled", True)
    if not isinstance(enabled, bool):
        raise check.fail(("reconnect",), "enabled", "must be true or false")
    initial = check.number(("reconnect",), rc, "initial_s", 0.1, 600, 2.0)
    cap = check.number(("reconnect",), rc, "max_s", 1, 3600, 60.0)
    if cap < initial:
        raise check.fail(("reconnect",), "max_s", f"must be at least initial_s ({initial:g})")
    failures = check.number(("reconnect",), rc, "auth_failures", 1, 100, 3)
    if failures != int(failures):
        raise check.fail(("reconnect",), "auth_failures", "must be a whole number")
    reconnect = ReconnectConfig(enabled, initial, cap, int(failures))
    cal = check.table((), data, "calibration")
    check.unknown(("calibration",), cal, CALIBRATION_KEYS)
    mic = cal.get("microphone")
    if mic is not None and (not isinstance(mic, str) or not mic):
        raise check.fail(("calibration",), "microphone", "must be a node name (pactl list short sources)")
    calibration = CalibrationConfig(
        mic,
        check.choice(("calibration",), cal, "method", METHODS),
        check.number(("calibration",), cal, "stale_after_days", 0.1, 3650, STALE_AFTER_DAYS),
    )
    return Config(groups, reconnect, calibration, tuple(check.warnings))


def _member(check: _Checker, where: tuple[str | int, ...], data: Mapping[str, Any]) -> MemberConfig:
    check.unknown(where, data, MEMBER_KEYS)
    if ("address" in data) == ("node" in data):
        raise check.fail(where, None, "give exactly one of address (Bluetooth) or node (a PipeWire node name)")
    if "address" in data:
        raw = data["address"]
        speaker = normalize_address(raw) if isinstance(raw, str) else None
        if speaker is None:
            raise check.fail(where, "address", "must be a Bluetooth address like AA:BB:CC:DD:EE:FF")
    else:
        speaker = data["node"]
        if not isinstance(speaker, str) or not speaker or len(speaker) > 256:
            raise check.fail(where, "node", "must be a node name of 1 to 256 characters")
    latency = data.get("latency_ms")
    if latency is not None:
        latency = check.number(where, data, "latency_ms", 0, 5000, 0)
    calibrated = data.get("calibrated")
    if calibrated is not None:
        if not isinstance(calibrated, dt.datetime):
            raise check.fail(where, "calibrated", "must be a date-time like 2026-11-23T17:00:00Z")
        if calibrated.tzinfo is None:
            calibrated = calibrated.replace(tzinfo=dt.UTC)
    return MemberConfig(
        speaker=speaker,
        delay_ms=check.number(where, data, "delay_ms", 0, MAX_DELAY_MS, 0.0),
        trim_ms=check.number(where, data, "trim_ms", -MAX_DELAY_MS, MAX_DELAY_MS, 0.0),
        latency_ms=latency,
        calibrated=calibrated,
        volume=check.number(where, data, "volume", 0.0, 1.5, 1.0),
        channels=check.choice(where, data, "channels", CHANNELS),
    )


# ---------------------------------------------------------------- the file, edited in place

HEADER = """\
# pwgroup configuration: groups of speakers that play as one.
# pwgroup writes here when you create groups, set delays or calibrate, and keeps your comments.
# Every key is described in pwgroup.toml(5).
"""


class ConfigFile:
    """The configuration file as a tomlkit document: edits touch only what they change."""

    def __init__(self, path: Path, text: str) -> None:
        import tomlkit  # only writers pay for it

        self.path = path
        self.config = parse(text, path)
        self.doc = tomlkit.parse(text) if text.strip() else tomlkit.parse(HEADER)

    @classmethod
    def open(cls, path: Path | None = None) -> ConfigFile:
        path = path or config_path()
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: cannot read the configuration: {err}") from None
        return cls(path, text)

    @classmethod
    @contextlib.contextmanager
    def locked(cls, path: Path | None = None, timeout: float = 10.0) -> Iterator[ConfigFile]:
        """The file read afresh under an exclusive lock held until the block ends: two edits made at the same
        moment (two CLIs, a CLI and the dashboard) each see the other's result instead of one undoing the other."""
        import fcntl
        import time

        path = path or config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.parent / ".config.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise UserError(
                            f"{path}: another pwgroup has been editing it for {timeout:g} s: try again"
                        ) from None
                    time.sleep(0.005)
            yield cls.open(path)
        finally:
            os.close(fd)  # and the lock with it

    def group(self, name: str) -> GroupConfig | None:
        return self.config.groups.get(name)

    def set_group(self, group: GroupConfig) -> None:
        """Write `group` into the document; members that stay keep their tables (and comments)."""
        import tomlkit
        from tomlkit.items import AoT, Table

        groups = self.doc.get("groups")
        if groups is None:
            groups = tomlkit.table(is_super_table=True)
            self.doc["groups"] = groups
        table = groups.get(group.name)
        if table is None:
            table = tomlkit.table()
            groups[group.name] = table
        table["description"] = group.description
        old = table.get("members")
        old_by_key: dict[str, Table] = {}
        if isinstance(old, AoT | list):
            for item in old:
                key = _member_key(item)
                if key is not None:
                    old_by_key[key] = item
        aot = tomlkit.aot()
        for m in group.members:
            item = old_by_key.get(m.speaker)
            if item is None:
                item = tomlkit.table()
                _write_member(item, m)
                item.add(tomlkit.nl())  # a blank line before whatever table follows
            else:
                _write_member(item, m)
            aot.append(item)
        if "members" in table:
            del table["members"]
        if group.members:
            table["members"] = aot
        self._revalidate()

    def remove_group(self, name: str) -> None:
        groups = self.doc.get("groups")
        if groups is not None and name in groups:
            del groups[name]
        self._revalidate()

    def _revalidate(self) -> None:
        import tomlkit

        self.config = parse(tomlkit.dumps(self.doc), self.path)

    def save(self) -> None:
        """Atomic replace; the previous file is kept as config.toml.bak."""
        import tomlkit

        text = tomlkit.dumps(self.doc)
        parse(text, self.path)  # never write what could not be read back
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mode = 0o600
        with contextlib.suppress(FileNotFoundError):
            mode = self.path.stat().st_mode & 0o777
            backup = self.path.with_name(self.path.name + ".bak")
            backup.write_bytes(self.path.read_bytes())
        fd, tmp = tempfile.mkstemp(prefix=".config.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):
            dirfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)


def _member_key(item: Any) -> str | None:
    if not hasattr(item, "keys"):
        return None
    if "address" in item:
        return normalize_address(str(item["address"]))
    return str(item["node"]) if "node" in item else None


def _write_member(item: Any, m: MemberConfig) -> None:
    address = normalize_address(m.speaker)
    if address:
        item["address"] = address
        if "node" in item:
            del item["node"]
    else:
        item["node"] = m.speaker
        if "address" in item:
            del item["address"]
    defaults = MemberConfig(m.speaker)
    for key in ("delay_ms", "trim_ms", "latency_ms", "calibrated", "volume", "channels"):
        value = getattr(m, key)
        if isinstance(value, float):
            value = round(value, 4)
        if value is None or (value == getattr(defaults, key) and key not in item and key != "delay_ms"):
            if value is None and key in item:
                del item[key]
            continue
        item[key] = value


def with_member_values(group: GroupConfig, speaker: str, **changes: Any) -> GroupConfig:
    """`group` with one member's fields changed."""
    members = tuple(replace(m, **changes) if m.speaker == speaker else m for m in group.members)
    return replace(group, members=members)
