"""How much of a task's held-out slice is text the fit split already holds, for the random and the disjoint split.

    python scripts/holdout_leak.py --task sst2 --data-dir ../shared/data/glue/SST-2

For each `--holdout-split` kind it prints the held-out and fit sizes, the median held-out length in words, the share
of held-out rows lying word for word inside a fit row (the rows a model has trained on, phrase and sentence alike),
and the same share for dev, the yardstick: a held-out slice meant to predict dev should not hold more trained text
than dev does. A row lies inside another when its lower-cased word tokens are a contiguous run of the other's (for
pairs: both sides joined, so only whole pairs match).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from adabert.data.dataset import load_task_data, text_key
from adabert.data.tasks import get_task


def share_inside(rows: list[tuple[str, ...]], fit: list[tuple[str, ...]]) -> float:
    """Share of `rows` whose text lies inside some row of `fit`: every contiguous word run of the fit rows is
    indexed once (sum of L^2 / 2 runs: fine for GLUE-sized sets)."""
    runs: set[str] = set()
    for text in fit:
        words = text_key(text).split()
        for i in range(len(words)):
            for j in range(i + 1, len(words) + 1):
                runs.add(" ".join(words[i:j]))
    return sum(text_key(t) in runs for t in rows) / max(len(rows), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, help="GLUE task name")
    ap.add_argument("--data-dir", type=Path, required=True, help="folder with the task's train.tsv and dev.tsv")
    ap.add_argument("--holdout-fraction", type=float, default=0.1)
    ap.add_argument("--holdout-max", type=int, default=2000)
    ap.add_argument("--holdout-seed", type=int, default=0)
    args = ap.parse_args()
    print("| split | held-out rows | fit rows | held-out median words | held-out inside a fit row "
          "| dev inside a fit row |")
    print("|---|---|---|---|---|---|")
    for kind in ("random", "disjoint"):
        data = load_task_data(get_task(args.task), args.data_dir, args.holdout_fraction, args.holdout_max,
                              args.holdout_seed, kind)
        fit = data.fit.texts
        words = statistics.median(len(text_key(t).split()) for t in data.holdout.texts)
        print(f"| {kind} | {len(data.holdout)} | {len(fit)} | {words:g} | "
              f"{100 * share_inside(data.holdout.texts, fit):.1f}% | {100 * share_inside(data.dev.texts, fit):.1f}% |")


if __name__ == "__main__":
    main()
