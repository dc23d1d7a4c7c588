"""The rooms of pwgroup/ import only what DESIGN.md's table lets them: read from the source (an AST scan of every
import, lazy ones too), so a new arrow pointing up the table fails here before it sets."""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pwgroup"

# DESIGN.md's table: a room and the rooms it may import (its own modules always).
BELOW: dict[str, set[str]] = {
    "model": set(),
    "text": set(),  # safe_text for hostile names: a leaf, like model
    "config": {"model"},
    "graph": {"model"},
    "bluez": {"model"},
    "calibrate": {"model", "graph"},
    "track": {"model", "graph", "calibrate"},
    "hosts": {"model", "config", "graph"},
    "sim": {"model", "graph", "bluez"},
    # The one status view model (DESIGN: "the UI and the CLI render one status view model from the core").
    "status": {"model", "text", "config", "graph"},
}
BELOW["supervisor"] = {"model", "config", "graph", "bluez", "calibrate", "track", "hosts", "status", "text"}
CORE = BELOW["supervisor"] | {"supervisor", "text", "pwgroup"}  # `pwgroup`: the package's own __version__
# What the CLI and the dashboard share above the core (DESIGN: "one status view model from the core"), and the
# CLI's own commands: supervisor and below, and each other.
SHARED = {"edits", "health", "doctor", "export", "completion"}
for room in SHARED:
    BELOW[room] = CORE | SHARED
BELOW["tui"] = CORE | {"edits", "health"}
for room in ("cli", "daemon", "__main__"):
    BELOW[room] = CORE | SHARED | {"cli", "daemon"}

# Arrows the code has that the table does not allow: (from room, to room) -> why, for the lead to keep or fix.
KNOWN = {
    ("cli", "sim"): "`pwgroup sim up|down|env` runs the virtual room for `make demo`; imported lazily, there only",
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. pwgroup.graph.pulse
    target: str  # the module (or package) imported
    lazy: bool  # inside a function: loaded only when that runs
    line: int


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.with_suffix("").relative_to(PACKAGE.parent).parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


@functools.cache
def imports() -> list[Import]:
    known = modules()
    out = []
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        lazy_nodes = {
            id(n)
            for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
            for n in ast.walk(f)
            if isinstance(n, ast.Import | ast.ImportFrom)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    package = package[: len(package) - node.level + 1]
                    base = ".".join([*package, base] if base else package)
                # `from pwgroup.graph import layout` imports the module pwgroup.graph.layout.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            else:
                continue
            out += [Import(name, t, id(node) in lazy_nodes, node.lineno) for t in targets]
    return out


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_every_room_imports_only_what_the_table_allows() -> None:
    broken = []
    used = set()
    for imp in imports():
        if not imp.target.startswith("pwgroup"):
            continue
        src, dst = room(imp.module), room(imp.target)
        if src == dst or dst == "tui":  # tui has its own rule below
            continue
        assert src in BELOW, f"{imp.module}: a room the table does not know; add it to DESIGN.md and here"
        if dst in BELOW[src]:
            continue
        if (src, dst) in KNOWN:
            used.add((src, dst))
            continue
        broken.append(f"{imp.module}:{imp.line} imports {imp.target} ({src} may import {sorted(BELOW[src])})")
    assert broken == []
    assert used == set(KNOWN), f"known exceptions no longer needed: {set(KNOWN) - used}"


def test_nothing_imports_the_dashboard_but_the_cli_lazily_and_textual_stays_in_it() -> None:
    into_tui = [i for i in imports() if room(i.target) == "tui" and room(i.module) != "tui"]
    assert into_tui and all(i.module == "pwgroup.cli" and i.lazy and i.target == "pwgroup.tui.app" for i in into_tui)
    textual = [i for i in imports() if i.target.split(".")[0] == "textual" and room(i.module) != "tui"]
    assert textual == []


def test_the_scan_sees_lazy_and_relative_imports() -> None:
    """The scan itself: a function-level import counts, and `from pwgroup.graph import layout` is the module."""
    found = {(i.module, i.target): i for i in imports()}
    assert not found[("pwgroup.graph.pulse", "pwgroup.graph.pulsesync")].lazy
    assert found[("pwgroup.cli", "pwgroup.tui.app")].lazy
    assert ("pwgroup.supervisor.reconcile", "pwgroup.graph.layout") in found
