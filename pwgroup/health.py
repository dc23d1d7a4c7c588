"""What the running daemon last reported beside the graph (its status.json): each member's reconnect state and
when it last came back. Read by `pwgroup status` and the dashboard."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

from pwgroup.supervisor.session import daemon_pid, runtime_dir


def daemon_state(env: Mapping[str, str]) -> tuple[int | None, dict[str, str], dict[str, float]]:
    """The running daemon's pid, each member's reconnect state and when it last came back."""
    pid = daemon_pid(env)
    if pid is None:
        return None, {}, {}
    try:
        saved = json.loads((runtime_dir(env) / "status.json").read_text())
    except (OSError, ValueError):
        return pid, {}, {}
    out = {}
    for address, state in (saved.get("reconnect") or {}).items():
        text = str(state.get("text", ""))
        retry_at = state.get("retry_at")
        if text.startswith("waiting") and isinstance(retry_at, int | float):
            text = f"waiting {max(0, round(retry_at - time.time()))} s"
        out[str(address)] = text
    returned = {str(k): float(v) for k, v in (saved.get("returned") or {}).items() if isinstance(v, int | float)}
    return pid, out, returned
