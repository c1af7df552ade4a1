"""CLI start-up benchmark: wall time of `adabert STAGE --help` per stage (median over repeats), optionally side
by side with another checkout of the repository (e.g. an older commit in a `git worktree`).

    python scripts/bench_cli.py --repeats 5 [--other ../old-checkout]

Each call is a fresh `python -m adabert` subprocess run from the checkout's root, so it measures what a user
waits for: interpreter start, imports and parsing. The two checkouts alternate call by call.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

STAGES = ["", "teacher", "probes", "search", "finetune", "distill", "study", "pipeline"]


def help_seconds(checkout: Path, stage: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "adabert", *([stage] if stage else []), "--help"], cwd=checkout,
                   capture_output=True, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--other", type=Path, help="another checkout to time beside this one")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated ('' is the top-level help)")
    args = ap.parse_args()
    checkouts = {"this": Path(__file__).resolve().parent.parent}
    if args.other is not None:
        checkouts["other"] = args.other.resolve()
    print(f"{'adabert ... --help':<22}" + "".join(f"{name + ' (median s)':>20}" for name in checkouts))
    for stage in args.stages.split(","):
        times: dict[str, list[float]] = {name: [] for name in checkouts}
        for _ in range(args.repeats):
            for name, path in checkouts.items():
                times[name].append(help_seconds(path, stage))
        print(f"{stage or '(top level)':<22}" + "".join(f"{statistics.median(t):>20.2f}" for t in times.values()))


if __name__ == "__main__":
    main()
