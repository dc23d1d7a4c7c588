"""The room's background noise: white noise at a given level, streamed into the virtual microphone.

Run by the room as `python -m pwgroup.sim.noise LEVEL_DB NODE_NAME`; it feeds raw float samples to `pw-cat`
on stdin (test infrastructure: pwgroup's own playback never passes through Python).
"""

from __future__ import annotations

import signal
import subprocess
import sys

import numpy as np

from pwgroup.graph.capture import stdin_playback_argv
from pwgroup.graph.proc import spawn

RATE = 48000
BLOCK = 2400  # 50 ms


def main(argv: list[str]) -> int:
    level_db, name = float(argv[0]), argv[1]
    rms = 10 ** (level_db / 20)
    props = {"node.name": name, "node.autoconnect": False, "media.role": "Test"}
    proc = spawn(
        stdin_playback_argv(["MONO"], BLOCK, props),
        stdin=subprocess.PIPE,
    )

    def stop(*_: object) -> None:
        proc.terminate()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    rng = np.random.default_rng()
    assert proc.stdin is not None
    try:
        while True:  # pw-cat's pipe paces us: writes block while its buffer is full
            proc.stdin.write((rng.standard_normal(BLOCK) * rms).astype(np.float32).tobytes())
    except (BrokenPipeError, KeyboardInterrupt):
        return 0
    finally:
        proc.terminate()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
