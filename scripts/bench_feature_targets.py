"""Peak memory of loading finetune's sentence-vector KD targets over an augmented set (`finetune --feature-kd`
with `--augment`): the targets as finetune indexes them now (`finetune.JoinedRows`, fit rows and augmented rows
kept apart) against one concatenated tensor (what it built before), each in a fresh process, since peak resident
memory is a per-process figure.

    python scripts/bench_feature_targets.py --task sst2 --data-dir ../shared/data/glue/SST-2 \
        --teacher ../shared/teachers/minilm-l6-sst2 --probes runs/probes/sst2-fall --augment runs/aug/sst2-16-fall

Both need probes made with `--feature-dims` and an augment folder made with them. Each process loads the task,
the probes and the augmented text (with their finiteness checks), builds the targets, gathers one batch, and
prints the targets' shape, the wall time and `ru_maxrss`.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from adabert.data.dataset import load_task_data
from adabert.data.tasks import get_task
from adabert.students.finetune import feature_kd_targets
from adabert.teacher.bundle import TaskBundle


def measure(args: argparse.Namespace) -> str:
    data = load_task_data(get_task(args.task), Path(args.data_dir))
    t0 = time.time()
    bundle = TaskBundle(data, Path(args.teacher), Path(args.probes), Path(args.augment))
    feats = feature_kd_targets(bundle, bundle.fit_rows(0))
    if args.mode == "concatenated":
        feats = torch.cat([feats.first, feats.second])
    batch = feats[np.random.default_rng(0).integers(0, feats.shape[0], 64)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return (f"{args.mode:>12}: targets {list(feats.shape)} {batch.dtype}, "
            f"{time.time() - t0:.1f} s, peak resident memory {peak:.2f} GB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag in ("--task", "--data-dir", "--teacher", "--probes", "--augment"):
        p.add_argument(flag, required=True)
    p.add_argument("--mode", choices=["joined", "concatenated"], help="measure one way in this process")
    args = p.parse_args()
    if args.mode:
        print(measure(args))
        return
    for mode in ("joined", "concatenated"):  # one after the other, each alone in its process
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--mode", mode], check=True)


if __name__ == "__main__":
    main()
