"""What the running daemon last reported beside the graph (its status.json): each member's reconnect state and
when it last came back. Read by `pwgroup status` and the dashboard, both through pwgroup.status."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

from pwgroup.status import DaemonReport
from pwgroup.supervisor.session import daemon_pid, runtime_dir


def daemon_report(env: Mapping[str, str]) -> DaemonReport:
    """What the running daemon (or the dashboard keeping the groups) last wrote; empty when none runs."""
    pid = daemon_pid(env)
    if pid is None:
        return DaemonReport()
    try:
        saved = json.loads((runtime_dir(env) / "status.json").read_text())
    except (OSError, ValueError):
        return DaemonReport(pid)
    out = {}
    for address, state in (saved.get("reconnect") or {}).items():
        text = str(state.get("text", ""))
        retry_at = state.get("retry_at")
        if text.startswith("waiting") and isinstance(retry_at, int | float):
            text = f"waiting {max(0, round(retry_at - time.time()))} s"
        out[str(address)] = text
    returned = {str(k): float(v) for k, v in (saved.get("returned") or {}).items() if isinstance(v, int | float)}
    return DaemonReport(pid, out, returned)
