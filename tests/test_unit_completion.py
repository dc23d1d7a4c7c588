"""Shell completions generated from the argparse tree: every command is in the script (bash and zsh running it:
tests/test_process_completion.py)."""

from __future__ import annotations

import sys

from pwgroup.cli import build_parser
from pwgroup.completion import bash, walk

PWGROUP = f"{sys.executable} -m pwgroup"


def test_every_command_of_the_tree_is_offered() -> None:
    levels = walk(build_parser())
    script = bash(build_parser())
    for level in levels:
        if level.path:
            assert f'"{" ".join(level.path)}")' in script
