"""Honest selection: the search's candidate architectures, each finetuned briefly from the supernet's weights,
compared on held-out.

The supernet's own held-out score ranks finetuned students poorly (SST-2, ten architectures, full data: Kendall
tau 0.20-0.37 against 3-epoch dev means): its parameter-free paths are near their best at once, its convolutions
are under-trained (each is on the path a ninth of the steps). A few hundred steps of finetuning the path alone,
starting from the supernet's weights of its ops, close that gap: 400 steps rank the same ten at tau 0.67-0.78
(two supernets, two seeds), where 400 steps from scratch reach 0.51 and a whole epoch from scratch 0.75
(docs/results.md, eleventh and thirteenth sessions). So `adabert search --select-top N` ends by finetuning N
candidates (the derived architecture and N - 1 draws from the final distribution, within the budget when one is
given: `Searcher.candidates`) for `--select-steps` steps on the fit split from the final supernet. The one with the
best held-out score (ties: the earlier candidate) is the held-out best. Each other candidate's record says how far
the best leads it and with what paired bootstrap standard error (`separate_best`): a lead under 2 s.e. means the
held-out slice did not tell the two apart, and the log says so. When the search prices cost (`--beta` without a
target), the search writes the cheapest of the best and the candidates not told apart from it
(`cheapest_not_told_apart`, the one-standard-error rule of CART); otherwise the best. Dev is never looked at.
Each candidate is an ordinary `adabert finetune` run in OUT/select/candidate-i, so an interrupted selection
resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from adabert.core import distributed
from adabert.core.runtime import log, quiet_info
from adabert.data.metrics import paired_difference
from adabert.nas.arch import Arch, save_arch
from adabert.nas.config import SearchConfig
from adabert.students.config import FinetuneConfig
from adabert.students.finetune import finetune_student, student_logits
from adabert.students.student import Student
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
    if distributed.is_main():  # the candidates' folders are written by rank 0 alone (as arch.json is)
        separate_best(best, records, [out / f"candidate-{i}" for i in range(len(candidates))], bundle,
                      cfg.max_length, device)
    return best, records


def not_told_apart(records: list[dict]) -> list[int]:
    """Indices of the candidates the held-out best leads by less than 2 standard errors (`separate_best`), or not
    at all (a tie: both right on the same rows gives a lead and an s.e. of 0)."""
    return [i for i, r in enumerate(records) if "behind_best" in r
            and (r["behind_best"]["lead"] <= 0 or r["behind_best"]["lead"] < 2 * r["behind_best"]["se"])]


def cheapest_not_told_apart(best: int, records: list[dict], costs: list[float]) -> int:
    """The candidate to write when cost is priced: the cheapest of the held-out best and the candidates held-out
    does not tell from it (`not_told_apart`); at equal cost the better held-out score, then the earlier one. A
    lead the held-out slice cannot separate from noise does not pay for a dearer student."""
    return min([best, *not_told_apart(records)], key=lambda i: (costs[i], -records[i]["holdout"], i))


def separate_best(best: int, records: list[dict], folders: list[Path], bundle: TaskBundle, max_length: int,
                  device: torch.device, noun: str = "candidate") -> None:
    """Add to each other candidate's record how far the held-out best (`best`) leads it and the paired bootstrap
    standard error of that lead (`paired_difference`, over the held-out rows), and say which leads are within 2
    s.e.: a lead under that was not told apart from noise by this held-out slice. Candidate i is the student
    saved in folders[i]; the log calls it `noun` i + 1."""
    holdout, enc = bundle.data.holdout, bundle.encoded("holdout", max_length)

    def logits(i: int) -> np.ndarray:
        student, _ = Student.from_pretrained(folders[i])
        return student_logits(student.to(device), enc, device).float().cpu().numpy()

    top = logits(best)
    for i, record in enumerate(records):
        if i != best:
            lead, se = paired_difference(bundle.task, top, logits(i), holdout.labels, seed=i)
            record["behind_best"] = {"lead": lead, "se": se}
    close = not_told_apart(records)
    if close:
        log.info("select: the held-out best's (%s %d) lead over %s(s) %s (%s held-out points, paired bootstrap s.e. "
                 "%s over %d rows) is none or under 2 s.e.: this held-out slice does not tell them apart",
                 noun, best + 1, noun,
                 ", ".join(str(i + 1) for i in close),
                 ", ".join(f"{records[i]['behind_best']['lead']:.2f}" for i in close),
                 ", ".join(f"{records[i]['behind_best']['se']:.2f}" for i in close), len(holdout))
    else:
        log.info("select: the held-out best (%s %d) leads every other %s by 2 s.e. or more on held-out (%d rows)",
                 noun, best + 1, noun, len(holdout))
