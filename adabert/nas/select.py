"""Honest selection: the search's candidate architectures, each finetuned briefly from the supernet's weights,
compared on held-out.

The supernet's own held-out score ranks finetuned students poorly (SST-2, ten architectures, full data: Kendall
tau 0.20-0.37 against 3-epoch dev means): its parameter-free paths are near their best at once, its convolutions
are under-trained (each is on the path a ninth of the steps). A few hundred steps of finetuning the path alone,
starting from the supernet's weights of its ops, close that gap: 400 steps rank the same ten at tau 0.67-0.78
(two supernets, two seeds), where 400 steps from scratch reach 0.51 and a whole epoch from scratch 0.75
(docs/results.md, eleventh and thirteenth sessions). So `adabert search --select-top N` ends by finetuning N
candidates (the derived architecture and N - 1 draws from the final distribution, within the budget when one is
given: `Searcher.candidates`) for `--select-steps` steps on the fit split from the final supernet, and writes the one
with the best held-out score (ties: the earlier candidate). Dev is never looked at.
Each candidate is an ordinary `adabert finetune` run in OUT/select/candidate-i, so an interrupted selection
resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path

import torch

from adabert.core.runtime import log, quiet_info
from adabert.nas.arch import Arch, save_arch
from adabert.nas.config import SearchConfig
from adabert.students.config import FinetuneConfig
from adabert.students.finetune import finetune_student
from adabert.teacher.bundle import TaskBundle


def selection_finetune(search: SearchConfig, steps: int) -> FinetuneConfig:
    """The selection's recipe: `steps` finetune steps from the supernet's weights with the search's length, KD
    weight, temperature, training rows, bf16 and seed (finetune defaults otherwise); best of 4 held-out evaluations."""
    return FinetuneConfig(steps=steps, evals_per_epoch=4, max_length=search.max_length, gamma=search.gamma,
                          temperature=search.temperature, train_limit=search.train_limit, inherit=True,
                          bf16=search.bf16, seed=search.seed)


def select_by_finetune(candidates: list[Arch], bundle: TaskBundle, cfg: FinetuneConfig, out: Path,
                       device: torch.device, supernet: Path | None = None) -> tuple[int, list[dict]]:
    """Finetune every candidate with `cfg` (from the search checkpoint `supernet` when `cfg.inherit`); return
    (index of the best held-out score, one record per candidate)."""
    metric = bundle.task.main_metric
    records = []
    for i, arch in enumerate(candidates):
        path = out / f"candidate-{i}.json"
        save_arch(arch, path)
        with quiet_info():  # one line per candidate below, not its finetune's own log
            m = finetune_student(path, bundle, cfg, out / f"candidate-{i}", device, resume="auto", supernet=supernet)
        records.append({"genotype": arch.genotype(), "holdout": m["best_holdout"], "params": m["params"]})
        trained = f"{cfg.steps} steps" if cfg.steps else f"{cfg.epochs} epoch(s)"
        log.info("select: candidate %d/%d held-out %s %.2f after %s | %s", i + 1, len(candidates), metric,
                 m["best_holdout"], trained, arch.genotype())
    best = max(range(len(records)), key=lambda i: (records[i]["holdout"], -i))
    return best, records
