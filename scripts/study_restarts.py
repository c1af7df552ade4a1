"""Is `adabert search --restarts N` worth it on a task? The restarts' rule replayed over finished searches.

Give it finished single searches of one task that differ only in `--seed`, each with the finetuned dev scores
of the architecture it wrote (the study's yardstick: several finetune seeds, e.g. `adabert finetune --arch
SEARCH/arch.json --epochs 3 --seed F`). For each search it prints the selection score (held-out after the
selection's brief finetune, what `--restarts` compares) and the dev mean; then, for N = 1 .. K searches, the pick
that `--restarts N` would write (best selection score, ties to the lower seed) over every N-subset of them:
mean, spread and worst dev of the pick, and the Kendall tau between selection score and dev mean.

    python scripts/study_restarts.py runs/s/sst2-seed0=runs/sst2-full/seed0-e3-s* \
        runs/s/sst2-seed1=runs/sst2-full/seed1-e3-s* runs/s/sst2-seed2=runs/sst2-full/seed2-e3-s*

`--select-top N` scores a search reselected with more candidates as the default selection would have (the best
of its first N candidates), provided its pick is among them.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from adabert.data.metrics import kendall_tau


def search_row(spec: str, select_top: int | None) -> dict:
    """SEARCH_DIR=FINETUNE_GLOB -> {seed, score, dev [finetune seeds], cost}."""
    if "=" not in spec:
        sys.exit(f"{spec}: expected SEARCH_DIR=FINETUNE_GLOB")
    folder, pattern = spec.split("=", 1)
    arch = json.loads((Path(folder) / "arch.json").read_text())
    seed = json.loads((Path(folder) / "config.json").read_text())["seed"]
    selection = arch["selection"]
    if "finetuned_holdout" not in selection:
        sys.exit(f"{folder}: no selection score (a search with --select-top 1 has nothing to compare)")
    score = selection["finetuned_holdout"]
    if select_top is not None and "candidates" in selection:
        if selection["candidate"] >= select_top:
            sys.exit(f"{folder}: its pick is candidate {selection['candidate']}, not among the first {select_top}")
        score = max(c["holdout"] for c in selection["candidates"][:select_top])
    devs = [json.loads(Path(m).read_text())["dev"][arch["selection"]["metric"]]
            for m in sorted(glob.glob(str(Path(pattern) / "metrics.json")))]
    if not devs:
        sys.exit(f"{pattern}: no finetune folder with metrics.json")
    return {"seed": seed, "score": score, "dev": devs, "cost": arch["efficiency"]["budget"]["cost"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("searches", nargs="+", help="SEARCH_DIR=FINETUNE_GLOB, one per search seed")
    parser.add_argument("--select-top", type=int, default=None, help="score each search by its first N candidates")
    args = parser.parse_args()
    rows = sorted((search_row(s, args.select_top) for s in args.searches), key=lambda r: r["seed"])
    for r in rows:
        print(f"seed {r['seed']}: selection {r['score']:.2f}  dev {statistics.mean(r['dev']):.2f} "
              f"({' / '.join(f'{d:.2f}' for d in r['dev'])})  cost {r['cost']:,.0f}")
    means = [statistics.mean(r["dev"]) for r in rows]
    scores = [r["score"] for r in rows]
    print(f"Kendall tau, selection score vs dev mean over the {len(rows)} searches: "
          f"{kendall_tau(np.array(scores), np.array(means)):.2f}")
    print("| restarts N | subsets | dev of the pick: mean | spread (sd over subsets) | worst |")
    print("|---|---|---|---|---|")
    for n in range(1, len(rows) + 1):
        picks = [means[max(c, key=lambda i: (scores[i], -rows[i]["seed"]))]
                 for c in itertools.combinations(range(len(rows)), n)]
        spread = statistics.stdev(picks) if n == 1 and len(picks) > 1 else statistics.pstdev(picks)
        print(f"| {n} | {len(picks)} | {statistics.mean(picks):.2f} | {spread:.2f} | {min(picks):.2f} |")


if __name__ == "__main__":
    main()
