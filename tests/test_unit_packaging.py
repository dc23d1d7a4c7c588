"""Packaging: the man pages document every command, option and config key (rendering them and installing a wheel
start tools: tests/test_process_packaging.py)."""

from __future__ import annotations

import re
from pathlib import Path

from pwgroup import config
from pwgroup.cli import build_parser
from pwgroup.completion import walk

ROOT = Path(__file__).resolve().parent.parent
PAGES = (ROOT / "man" / "pwgroup.1", ROOT / "man" / "pwgroup.toml.5")


def _plain(page: Path) -> str:
    """The page's source with font changes and escapes taken out: what a reader sees, word for word."""
    text = page.read_text()
    text = re.sub(r"\\f[BIRP]", "", text).replace("\\-", "-").replace('"', "")
    return text


def test_every_command_and_option_is_in_pwgroup_1() -> None:
    text = _plain(PAGES[0])
    lines = text.splitlines()
    # The line after each .TP is an entry's tag: its macro (.B, .BR, .BI) taken off, the words as shown.
    tags = [re.sub(r"^\.[BIR]{1,2} ", "", lines[i + 1]).strip() for i, line in enumerate(lines[:-1]) if line == ".TP"]
    for level in walk(build_parser()):
        if not level.path:
            continue
        command = " ".join(level.path)
        entry = [t for t in tags if t.startswith(command + " ") or t == command]
        assert entry or level.commands, f"pwgroup {command} is not documented in man/pwgroup.1"
        for option in level.options:
            if option != "--help":
                assert any(option in t for t in entry), f"pwgroup {command} {option} is not in man/pwgroup.1"
    for section in ("EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES"):
        assert f".SH {section}" in text
    for code in "0123":
        assert f".TP\n.B {code}\n" in text.split(".SH EXIT STATUS")[1].split(".SH ")[0]
    env_section = text.split(".SH ENVIRONMENT")[1].split(".SH ")[0]
    environment = [t for t in tags if t in env_section]
    for variable in (
        "XDG_CONFIG_HOME",
        "XDG_RUNTIME_DIR",
        "PIPEWIRE_RUNTIME_DIR",
        "DBUS_SYSTEM_BUS_ADDRESS",
        "PWGROUP_BACKEND",
        "PWGROUP_SIM_DIR",
        "JOURNAL_STREAM",
        "NOTIFY_SOCKET",
    ):
        assert any(re.search(rf"\b{variable}\b", t) for t in environment), f"{variable} is not in ENVIRONMENT"


def test_every_config_key_is_in_pwgroup_toml_5() -> None:
    text = _plain(PAGES[1])
    sections = {
        "TOP LEVEL": config.TOP_KEYS,
        "[groups.NAME]": config.GROUP_KEYS,
        "[[groups.NAME.members]]": config.MEMBER_KEYS,
        "[reconnect]": config.RECONNECT_KEYS,
        "[calibration]": config.CALIBRATION_KEYS,
    }
    parts = re.split(r"^\.SH ", text, flags=re.M)
    for title, keys in sections.items():
        body = next(p for p in parts if p.startswith(title + "\n"))
        for key in keys:
            entry = re.search(rf"^\.TP\n\.B {re.escape(key)}\n(.*?)(?=^\.TP|\Z)", body, re.M | re.S)
            assert entry, f"{key} has no entry under {title} in man/pwgroup.toml.5"
            if title != "TOP LEVEL" and key != "members":
                assert "Example:" in entry.group(1), f"{key} has no example"
            assert "default" in entry.group(1), f"{key}: no default stated"
