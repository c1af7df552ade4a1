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
`--select-from` widens the candidates beyond the final distribution (the derived architecture's neighbours, or
uniform draws from the space), and `--select-seeds` averages the score over finetune seeds by successive halving:
one 400-step seed ranks the 50k SST-2 study's twelve cells at Kendall tau 0.33, the mean of two at 0.64
(docs/results.md, eighteenth session). Measured on SST-2 at 50k and 296k parameters, neither picked a better
student on dev than the default draws; this commit records the experiment and the next one removes it.
"""

from __future__ import annotations

from dataclasses import replace
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
    weight, temperature, training rows and seed (finetune defaults otherwise); best of 4 held-out evaluations."""
    return FinetuneConfig(steps=steps, evals_per_epoch=4, max_length=search.max_length, gamma=search.gamma,
                          temperature=search.temperature, train_limit=search.train_limit, inherit=True,
                          seed=search.seed)


def select_by_finetune(candidates: list[Arch], bundle: TaskBundle, cfg: FinetuneConfig, out: Path,
                       device: torch.device, supernet: Path | None = None, seeds: int = 1) -> tuple[int, list[dict]]:
    """Finetune every candidate with `cfg` (from the search checkpoint `supernet` when `cfg.inherit`); return
    (index of the best score, one record per candidate).

    With seeds S > 1, successive halving over finetune seeds: round r = 1 .. S - 1 finetunes the better half
    (rounded up) of the previous round's candidates once more, with seed cfg.seed + r, while more than one is left. A
    candidate's score is its mean held-out over the seeds it got (`holdouts`); the best of the last round wins
    (ties: the earlier candidate). Round 0 runs in OUT/candidate-i, round r in OUT/candidate-i-seed-(cfg.seed + r).
    """
    metric = bundle.task.main_metric
    trained = f"{cfg.steps} steps" if cfg.steps else f"{cfg.epochs} epoch(s)"
    records: list[dict] = []
    for i, arch in enumerate(candidates):
        path = out / f"candidate-{i}.json"
        save_arch(arch, path)
        with quiet_info():  # one line per candidate below, not its finetune's own log
            m = finetune_student(path, bundle, cfg, out / f"candidate-{i}", device, resume=True, supernet=supernet)
        records.append({"genotype": arch.genotype(), "holdout": m["best_holdout"], "holdouts": [m["best_holdout"]],
                        "params": m["params"]})
        log.info("select: candidate %d/%d held-out %s %.2f after %s | %s", i + 1, len(candidates), metric,
                 m["best_holdout"], trained, arch.genotype())

    def rank(pool: list[int]) -> list[int]:
        return sorted(pool, key=lambda i: (-records[i]["holdout"], i))

    alive = list(range(len(records)))
    for r in range(1, seeds):
        alive = rank(alive)[: -(-len(alive) // 2)]
        if len(alive) == 1:
            break
        again = replace(cfg, seed=cfg.seed + r)
        for i in alive:
            with quiet_info():
                m = finetune_student(out / f"candidate-{i}.json", bundle, again, out / f"candidate-{i}-seed-{again.seed}",
                                     device, resume=True, supernet=supernet)
            rec = records[i]
            rec["holdouts"].append(m["best_holdout"])
            rec["holdout"] = sum(rec["holdouts"]) / len(rec["holdouts"])
            log.info("select: round %d, candidate %d held-out %s %.2f with seed %d, mean %.2f over %d seeds", r + 1,
                     i + 1, metric, m["best_holdout"], again.seed, rec["holdout"], len(rec["holdouts"]))
    return rank(alive)[0], records
