"""Packaging with the tools themselves: man and groff render the pages without a warning; a wheel built from the
tree installs the command, its fixed WirePlumber script and both man pages (what `pipx install .` does)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from test_unit_packaging import PAGES, ROOT

pytestmark = pytest.mark.process


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
