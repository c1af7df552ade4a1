"""How much of a task's held-out slice is text the fit split already holds, for the random and the disjoint split.

    python scripts/holdout_leak.py --task sst2 --data-dir ../shared/data/glue/SST-2

For each `--holdout-split` kind it prints the held-out and fit sizes, the median held-out length in words, the share
of held-out rows lying word for word inside a fit row (the rows a model has trained on, phrase and sentence alike),
and the same share for dev, the yardstick: a held-out slice meant to predict dev should not hold more trained text
than dev does. A row lies inside another when its lower-cased word tokens are a contiguous run of the other's (for
pairs: both sides joined, so only whole pairs match). It also prints the labels of train and of the held-out slice
(class shares, or the mean score of a regression task) and, for pairs that share sentences, the mean size of a
row's group (`sentence_groups`) over train and over the held-out slice: a slice that over-draws large groups
changes the class balance (QQP's popular questions are mostly duplicates of one another).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from adabert.data.dataset import Dataset, load_task_data, sentence_groups, text_key
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


def labels(data: Dataset, regression: bool) -> str:
    """The mean score (regression) or the share of each class, in per cent, joined by '/'."""
    y = np.asarray(data.labels)
    if regression:
        return f"mean {y.mean():.2f}"
    return "/".join(f"{100 * np.mean(y == c):.1f}" for c in range(int(y.max()) + 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, help="GLUE task name")
    ap.add_argument("--data-dir", type=Path, required=True, help="folder with the task's train.tsv and dev.tsv")
    ap.add_argument("--holdout-fraction", type=float, default=0.1)
    ap.add_argument("--holdout-max", type=int, default=2000)
    ap.add_argument("--holdout-seed", type=int, default=0)
    args = ap.parse_args()
    task = get_task(args.task)
    print("| split | held-out rows | fit rows | held-out median words | held-out inside a fit row "
          "| dev inside a fit row | labels: train | labels: held-out | group size: train | group size: held-out |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    splits = {kind: load_task_data(task, args.data_dir, args.holdout_fraction, args.holdout_max, args.holdout_seed,
                                   kind) for kind in ("random", "disjoint")}
    groups = sentence_groups(splits["random"].train.texts)  # one train file: the groups are the same for both
    size = None if groups is None else np.bincount(groups)[groups]
    for kind, data in splits.items():
        fit = data.fit.texts
        words = statistics.median(len(text_key(t).split()) for t in data.holdout.texts)
        sizes = "- | -" if size is None else f"{size.mean():.2f} | {size[data.holdout_idx].mean():.2f}"
        print(f"| {kind} | {len(data.holdout)} | {len(fit)} | {words:g} | "
              f"{100 * share_inside(data.holdout.texts, fit):.1f}% | {100 * share_inside(data.dev.texts, fit):.1f}% | "
              f"{labels(data.train, task.is_regression)} | {labels(data.holdout, task.is_regression)} | {sizes} |")


if __name__ == "__main__":
    main()
