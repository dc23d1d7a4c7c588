"""Shell completions in the shells themselves: bash and zsh load the script the command prints and complete
commands, actions, options and option values (starts bash and zsh)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from pwgroup.cli import build_parser
from pwgroup.completion import bash, zsh

PWGROUP = f"{sys.executable} -m pwgroup"

pytestmark = pytest.mark.process


def test_bash_loads_the_script_from_the_command() -> None:
    proc = subprocess.run(
        ["bash", "-c", f"source <({PWGROUP} completion bash); complete -p pwgroup"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "complete -F _pwgroup pwgroup"


def _bash_complete(*words: str) -> list[str]:
    harness = (
        bash(build_parser())
        + 'COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _pwgroup; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    proc = subprocess.run(["bash", "-c", harness, "bash", *words], capture_output=True, text=True, check=True)
    return proc.stdout.split()


def test_bash_completes_every_level() -> None:
    assert _bash_complete("pwgroup", "gr") == ["group"]
    assert _bash_complete("pwgroup", "group", "") == ["create", "add", "remove", "delete", "--help"]
    assert _bash_complete("pwgroup", "group", "create", "den", "--d") == ["--description"]
    assert _bash_complete("pwgroup", "calibrate", "den", "--method", "") == ["sweep", "fast", "reported"]
    assert _bash_complete("pwgroup", "completion", "") == ["bash", "zsh", "--help"]
    assert _bash_complete("pwgroup", "export-conf", "den", "--pipewire-version", "") == []  # a value: no guesses
    top = _bash_complete("pwgroup", "")
    assert {"doctor", "export-conf", "completion", "status", "--version"} <= set(top)


def test_zsh_loads_and_completes() -> None:
    if shutil.which("zsh") is None:
        pytest.fail("zsh is not installed: run 'make setup' (see README)")
    script = zsh(build_parser())
    load = subprocess.run(
        [
            "zsh",
            "-f",
            "-c",
            f"autoload -Uz compinit; compinit -u -D; source <({PWGROUP} completion zsh); print -r -- $_comps[pwgroup]",
        ],
        capture_output=True,
        text=True,
    )
    assert load.returncode == 0 and load.stdout.strip() == "_pwgroup", load.stderr
    # zsh's completion functions replaced by ones that print what they were given.
    harness = (
        "compdef() { :; }; _describe() { print -rl -- ${(P)4}; }; compadd() { print -rl -- ${@:2}; }\n"
        + script
        + 'words=("$@"); CURRENT=$#; _pwgroup\n'
    )

    def complete(*words: str) -> list[str]:
        proc = subprocess.run(["zsh", "-f", "-c", harness, "zsh", *words], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.splitlines()

    group = complete("pwgroup", "group", "")
    assert [item.split(":")[0] for item in group] == ["create", "add", "remove", "delete", "--help"]
    assert "create:create a group sink from speakers" in group
    assert complete("pwgroup", "calibrate", "den", "--method", "") == ["sweep", "fast", "reported"]
