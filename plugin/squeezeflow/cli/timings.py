"""Where a command's time goes, for the overhead benchmark: `SQUEEZEFLOW_TIMINGS=FILE` appends one
JSON line per command with its process wall time, the interpreter start-up before `main`, the time
spent importing libraries while it ran, and the rest (the compute: export, compression, evaluation).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from squeezeflow import envvars


def _process_age() -> float:
    """Seconds since this process started (Linux /proc; 0.0 elsewhere)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


@contextlib.contextmanager
def recorded(command: str) -> Iterator[None]:
    """Time the block when SQUEEZEFLOW_TIMINGS is set; outermost imports are counted apart."""
    path = os.environ.get(envvars.TIMINGS)
    if not path:
        yield
        return
    startup, real, spent, depth = _process_age(), builtins.__import__, [0.0], [0]

    def timed_import(*args, **kwargs):
        if depth[0]:
            return real(*args, **kwargs)
        depth[0], t = 1, time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            depth[0] = 0
            spent[0] += time.perf_counter() - t

    builtins.__import__, t0 = timed_import, time.perf_counter()
    try:
        yield
    finally:
        run = time.perf_counter() - t0
        builtins.__import__ = real
        line = {
            "command": command,
            "cwd": os.getcwd(),
            "startup_s": round(startup, 4),
            "import_s": round(spent[0], 4),
            "compute_s": round(run - spent[0], 4),
            "wall_s": round(startup + run, 4),
        }
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")
