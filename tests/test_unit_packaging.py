"""Packaging: the man pages render without a warning and document every command and key; a wheel built from the
tree installs the command, its fixed WirePlumber script and both man pages (what `pipx install .` does)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_man_pages_render_without_warnings(page: Path) -> None:
    if shutil.which("man") is None or shutil.which("groff") is None:
        pytest.fail("man-db and groff-base are not installed: run 'make setup' (see README)")
    env = {**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8"}
    proc = subprocess.run(["man", "--warnings", "-l", str(page)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert len(proc.stdout.splitlines()) > 100
    strict = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)], env=env, capture_output=True)
    assert strict.returncode == 0 and strict.stderr == b"", strict.stderr


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


def test_a_wheel_installs_command_script_and_man_pages(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src)
    shutil.copytree(ROOT / "man", src / "man")
    shutil.copytree(ROOT / "pwgroup", src / "pwgroup", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path), str(src)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    wheel = next(tmp_path.glob("pwgroup-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "pwgroup/data/suspend-node.lua" in names
    assert any(n.endswith(".data/data/share/man/man1/pwgroup.1") for n in names)
    assert any(n.endswith(".data/data/share/man/man5/pwgroup.toml.5") for n in names)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    subprocess.run(
        [*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    version = subprocess.run([venv / "bin" / "pwgroup", "--version"], capture_output=True, text=True, timeout=30)
    assert version.stdout.strip() == "pwgroup 0.1.0", version.stderr
    assert (venv / "share" / "man" / "man1" / "pwgroup.1").read_bytes() == PAGES[0].read_bytes()
    assert (venv / "share" / "man" / "man5" / "pwgroup.toml.5").exists()
    lua = next(venv.glob("lib/python*/site-packages/pwgroup/data/suspend-node.lua"))
    assert lua.read_bytes() == (ROOT / "pwgroup" / "data" / "suspend-node.lua").read_bytes()
