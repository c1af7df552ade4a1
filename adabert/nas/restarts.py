"""`adabert search --restarts N`: N independent searches, and the pick with the best selection score of all.

One search's outcome depends on its seed more than on most of its settings: on SST-2 (default search, no budget) the
written cells of six seeds finetune to dev 84.63-86.01, 85.63 +- 0.50 over search seeds (3 finetune seeds each). The
best selection score of 3 restarts picks 85.85 +- 0.11 over all 20 triples of those six (worst 85.74): it cuts the
bad tail, while the score orders the six picks only weakly (Kendall tau 0.14; docs/results.md, fourteenth session).
So with `restarts` N > 1 the search runs N times, with seeds seed .. seed + N - 1, each an ordinary search in
OUT/seed-S (its own supernet, TensorBoard logs and selection), and OUT/arch.json is the pick whose selection score
(`finetuned_holdout`: held-out after `select_steps`, or with input moves `move_steps`, finetune steps from its
supernet) is best, ties to the lower seed: with a target (or beta 0), the same as one selection over the candidates
of every restart. When beta prices cost, each restart writes the cheapest candidate held-out does not tell from its
best (`select.cheapest_not_told_apart`), and the restarts' picks are compared by the same rule: the cheapest of the
best-scored pick and the picks it does not lead by 2 paired standard errors on the held-out rows (each pick's
finetuned student is in OUT/seed-S/select/candidate-i, or OUT/seed-S/moves/candidate-i: `pick_folder`).
OUT/checkpoint.safetensors is a hard link to the chosen supernet, so `finetune --inherit` and `adabert study` find
it beside arch.json as after a single search.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from adabert import __version__
from adabert.core import distributed
from adabert.core.fileio import META, meta_matches, option_defaults, write_json, write_meta
from adabert.core.runtime import log
from adabert.nas.arch import load_arch, save_arch
from adabert.nas.board import SearchBoard
from adabert.nas.config import SearchConfig
from adabert.nas.search import SUMMARY, Searcher, read_summary, search_inputs
from adabert.nas.search_space import SearchSpace
from adabert.teacher.bundle import TaskBundle


def pick_folder(run: Path, selection: dict) -> Path:
    """Where a search run's written student was finetuned: the best of its input moves (`--move-steps`), or its
    selection's pick."""
    if "moves" in selection:
        return run / "moves" / f"candidate-{selection['moves']['best']}"
    return run / "select" / f"candidate-{selection['candidate']}"


class RestartSearch:
    """N searches in OUT/seed-S, each with `Searcher`; `run()` and `ensure()` as `Searcher`'s."""

    def __init__(self, bundle: TaskBundle, space: SearchSpace, cfg: SearchConfig, output_dir: Path,
                 device: torch.device) -> None:
        self.bundle, self.space, self.cfg, self.device = bundle, space, cfg, device
        self.out = Path(output_dir)
        self.seeds = [cfg.seed + i for i in range(cfg.restarts)]
        self.inputs = search_inputs(bundle, space)
        self.run_config = {**asdict(cfg), "task": bundle.data.task.describe(), "search_space": space.name}

    def searcher(self, seed: int) -> Searcher:
        """The restart of this seed (built when needed: each holds a supernet)."""
        return Searcher(self.bundle, self.space, replace(self.cfg, seed=seed, restarts=1),
                        self.out / f"seed-{seed}", self.device)

    def up_to_date(self) -> bool:
        """True when OUT holds the pick of these restarts for these inputs and settings."""
        return (self.out / "arch.json").is_file() and meta_matches(self.out, "search", self.inputs, self.run_config,
                                                               defaults=option_defaults(self.cfg))

    def ensure(self) -> dict:
        """As `Searcher.ensure`: each restart reused when finished, continued when interrupted."""
        if self.up_to_date():
            log.info("search: %s is up to date (fingerprints match); skipping", self.out)
            return read_summary(self.out)
        return self.combine([self.searcher(seed).ensure() for seed in self.seeds])

    def run(self, resume: bool = False, max_steps: int | None = None) -> dict | None:
        """Run every restart (`max_steps` applies to each; None when one stopped early). With `resume`, a
        finished restart is read back and an interrupted one continues."""
        if not resume and distributed.is_main():
            (self.out / META).unlink(missing_ok=True)  # until the new pick is written, OUT holds no finished run
        summaries = []
        for i, seed in enumerate(self.seeds):
            log.info("search: restart %d/%d (seed %d) in %s", i + 1, len(self.seeds), seed, self.out / f"seed-{seed}")
            searcher = self.searcher(seed)
            if resume and searcher.up_to_date():
                summary = read_summary(searcher.out)
            else:
                summary = searcher.run(resume=resume, max_steps=max_steps)
            if summary is None:
                return None
            summaries.append(summary)
            del searcher  # free its supernet before the next is built
        return self.combine(summaries)

    def combine(self, summaries: list[dict]) -> dict:
        """Write the pick with the best selection score (ties: the lower seed), or when cost is priced the cheapest
        pick it does not lead by 2 paired s.e., to OUT and return the summary."""
        scores = [s["selection"]["finetuned_holdout"] for s in summaries]
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))
        records = [{"seed": seed, "dir": f"seed-{seed}", "genotype": s["genotype"], "finetuned_holdout": score,
                    "cost": s["efficiency"]["budget"]["cost"]}
                   for seed, s, score in zip(self.seeds, summaries, scores)]
        written = self.cheapest_close_pick(best, summaries, records) if self.cfg.prices_cost() else best
        chosen = self.out / f"seed-{self.seeds[written]}"
        metric = summaries[written]["selection"]["metric"]
        log.info("search: restarts' selection scores (held-out %s): %s; wrote seed %d's pick%s", metric,
                 ", ".join(f"seed {r['seed']} {r['finetuned_holdout']:.2f}" for r in records), self.seeds[written],
                 "" if written == best else f", the cheapest held-out does not tell from seed {self.seeds[best]}'s")
        arch = load_arch(chosen / "arch.json", self.space)
        arch.info["selection"] = {**arch.info["selection"], "restart": written, "restart_best": best,
                                  "restarts": records}
        summary = {**summaries[written], "arch": str(self.out / "arch.json"), "selection": arch.info["selection"],
                   "supernet_dir": records[written]["dir"],
                   "seconds_this_run": sum(s["seconds_this_run"] for s in summaries),
                   "selection_seconds": sum(s["selection_seconds"] for s in summaries)}
        if distributed.is_main():
            board = SearchBoard(self.out / "tensorboard")
            board.restarts(records, written, best)
            board.close()
            link_file(chosen / "checkpoint.safetensors", self.out / "checkpoint.safetensors")
            save_arch(arch, self.out / "arch.json")
            write_json(self.out / SUMMARY, summary)
            write_json(self.out / "config.json", {"adabert_version": __version__, **self.run_config})
            write_meta(self.out, "search", self.inputs, self.run_config)
        return summary

    def cheapest_close_pick(self, best: int, summaries: list[dict], records: list[dict]) -> int:
        """The restart whose pick to write when cost is priced: `select.cheapest_not_told_apart` over the restarts'
        picks, with the best-scored pick's paired lead over each added to its record (`behind_best`)."""
        from adabert.nas.select import cheapest_not_told_apart, separate_best

        picks = [{"holdout": r["finetuned_holdout"]} for r in records]
        if distributed.is_main():  # as in one selection, rank 0 measures the leads and every process writes its pick
            folders = [pick_folder(self.out / r["dir"], s["selection"]) for r, s in zip(records, summaries)]
            separate_best(best, picks, folders, self.bundle.with_holdout_fraction(self.cfg.selection_fraction),
                          self.cfg.max_length, self.device, "restart")
        for record, pick in zip(records, picks):
            if "behind_best" in pick:
                record["behind_best"] = pick["behind_best"]
        return distributed.from_main(cheapest_not_told_apart(best, picks, [r["cost"] for r in records]))


def make_searcher(bundle: TaskBundle, space: SearchSpace, cfg: SearchConfig, output_dir: Path,
                  device: torch.device) -> Searcher | RestartSearch:
    """The search `cfg` asks for: one `Searcher`, or `RestartSearch` when cfg.restarts > 1."""
    cls = RestartSearch if cfg.restarts > 1 else Searcher
    return cls(bundle, space, cfg, output_dir, device)


def supernet_dir(search_dir: Path) -> Path:
    """The folder of the supernet that wrote search_dir/arch.json: search_dir itself, or its chosen restart."""
    chosen = read_summary(search_dir).get("supernet_dir") if (Path(search_dir) / SUMMARY).is_file() else None
    return Path(search_dir) / chosen if chosen else Path(search_dir)


def link_file(source: Path, target: Path) -> None:
    """Make `target` the same file as `source` (a hard link; a copy where links are not possible), atomically."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{time.time_ns()}.tmp")
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)
