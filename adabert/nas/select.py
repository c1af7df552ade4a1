"""Honest selection: the search's candidate architectures, each finetuned briefly, compared on held-out.

The supernet's held-out score ranks finetuned students poorly (SST-2, ten architectures, full data: Kendall tau
0.20-0.37 against 3-epoch dev means), while a one-epoch finetune's best held-out score ranks them at 0.75
(docs/results.md, eleventh session). So `adabert search --select-top N` ends by finetuning N candidates (the
derived architecture and N - 1 draws from the final distribution, within the budget when one is given:
`Searcher.candidates`) for `--select-epochs` on the fit split, and writes the one with the best held-out score
(ties: the earlier candidate). Dev is never looked at.
Each candidate is an ordinary `adabert finetune` run in OUT/select/candidate-i, so an interrupted selection
resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path

import torch

from adabert.core.runtime import log
from adabert.nas.arch import Arch, save_arch
from adabert.students.config import FinetuneConfig
from adabert.students.finetune import finetune_student
from adabert.teacher.bundle import TaskBundle


def select_by_finetune(candidates: list[Arch], bundle: TaskBundle, cfg: FinetuneConfig, out: Path,
                       device: torch.device) -> tuple[int, list[dict]]:
    """Finetune every candidate with `cfg`; return (index of the best held-out score, one record per candidate)."""
    metric = bundle.task.main_metric
    records = []
    for i, arch in enumerate(candidates):
        path = out / f"candidate-{i}.json"
        save_arch(arch, path)
        m = finetune_student(path, bundle, cfg, out / f"candidate-{i}", device, resume=True)
        records.append({"genotype": arch.genotype(), "holdout": m["best_holdout"], "params": m["params"]})
        log.info("select: candidate %d/%d held-out %s %.2f after %d epoch(s) | %s", i + 1, len(candidates), metric,
                 m["best_holdout"], cfg.epochs, arch.genotype())
    best = max(range(len(records)), key=lambda i: (records[i]["holdout"], -i))
    return best, records
