"""One benchmark on both Debian stacks, side by side: this machine's own (run here) and the other one (Debian 13's
in a trixie root on Debian 12, Debian 12's in a bookworm root on Debian 13, through tests/stack.py). Prints one
JSON object: each stack's versions and what the benchmark printed there, one after the other in the same run.

Usage: python bench/stacks.py bench/heal.py [ARGS...]   (likewise bench/delays.py, bench/mechanisms.py, ...)
The other stack needs root (tests/stack.py makes its root once); run it alone on the machine, as every benchmark:
timing figures from a busy machine are loose.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CHECKOUT / "tests"))
import stack  # noqa: E402


def last_json(text: str) -> Any:
    """The JSON object a benchmark printed: from the last line that opens one to the end of its output."""
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("{"):
            try:
                return json.loads("\n".join(lines[i:]))
            except json.JSONDecodeError:
                continue
    return None


def run(argv: list[str], label: str) -> dict[str, Any]:
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=CHECKOUT, capture_output=True, text=True, check=False)
    figures = last_json(proc.stdout)
    out: dict[str, Any] = {"stack": label, "exit": proc.returncode, "seconds": round(time.monotonic() - started, 1)}
    if figures is None:
        out["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    else:
        out["figures"] = figures
    return out


def main(argv: list[str]) -> int:
    if not argv or not argv[0].endswith(".py"):
        print("usage: python bench/stacks.py bench/NAME.py [ARGS...]", file=sys.stderr)
        return 2
    here = stack.host_codename()
    if here not in stack.OTHER:
        print(f"stacks.py: this is not Debian 12 or 13 ({here or 'unknown'}): no other stack", file=sys.stderr)
        return 2
    other, label = stack.OTHER[here]
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    # The root first (made once, or its venv brought up to date), so its making is not in the figures.
    subprocess.run([*sudo, sys.executable, str(CHECKOUT / "tests/stack.py"), "--build-only"], check=True)
    root = stack.root_dir(other)
    results = {
        "benchmark": " ".join(argv),
        "this_stack": run([sys.executable, *argv], f"this machine ({here})"),
        "other_stack": run(
            [*sudo, sys.executable, str(CHECKOUT / "tests/stack.py"), "--run", "python", *argv],
            f"{label} ({stack.describe(root)})",
        ),
    }
    print(json.dumps(results, indent=1))
    return 0 if all(results[k]["exit"] == 0 for k in ("this_stack", "other_stack")) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
