"""Shared by the benchmark scripts: run an `adabert` subcommand in a subprocess and time it."""

from __future__ import annotations

import subprocess
import sys
import time


def run_adabert(args: list[str]) -> float:
    """Run `python -m adabert ARGS` (echoing the command); return the wall time in seconds."""
    cmd = [sys.executable, "-m", "adabert", *map(str, args)]
    print("$", " ".join(cmd), flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True)
    return time.time() - t0
