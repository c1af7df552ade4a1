"""`adabert search`: single-path architecture search with per-choice loss estimates.

The fit split is cut once into a weight part (1 - estimate_fraction) and an estimate part (with `--holdout-split
disjoint`, as the held-out slice is cut: estimate rows are whole texts, and the rows inside them are no weight rows).
Per step:
1. draw a path, one op per edge: uniformly during the warm-up and for an `explore` share of the later steps
   (fair training of every op), else from softmax(alpha / tau) with the Gumbel-max trick, tau annealed;
2. run all Kmax cells of that path on a weight batch and train the weights on the mean over k of every depth's
   loss  L_k = (1 - gamma) * CE(head_k, y) + gamma * KD(head_k, teacher)   (`losses.depth_losses`): every
   depth is read out by its own head, so each cell and each depth is trained at every step;
3. measure L_1..L_Kmax of the same path on an estimate batch (no gradient, dropout off) and fold them into the
   running estimates of each choice's effect on the loss (`adabert.nas.estimator`): choices are compared on data the
   weights never trained on, so capacity that only memorises does not win;
4. after the warm-up, one gradient step of the architecture logits on J + beta * L_E(E[cost])
   (`losses.efficiency_penalty`).
The written architecture comes from the final logits, not from noisy supernet evaluations: the derived one and
N - 1 distinct draws from their distribution (within the budget, when one is given) are each finetuned briefly from
the supernet's weights and the best on held-out is written (`adabert.nas.select`; `--select-top 1`: the most
probable one); with `--move-steps`, the best on held-out of that pick and its input moves (the same ops, one edge
reading another node) is written instead. The held-out scores of the derived cell along the way are logged only.
Checkpoints make `--resume` continue exactly where a run stopped (per-step seeds, saved optimiser states).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from adabert import __version__
from adabert.core import distributed
from adabert.core.checkpoint import optimizer_tensors, prefixed, restore_optimizer, unprefixed
from adabert.core.errors import AdabertError
from adabert.core.fileio import META, meta_matches, option_defaults, read_json, write_json, write_meta
from adabert.core.guards import check_terms, clip_checked
from adabert.core.heads import init_regression_heads
from adabert.core.losses import depth_losses, efficiency_penalty
from adabert.core.runtime import autocast, log, summary_level, warn_if_emulated_bf16
from adabert.core.schedule import epochs_to_reach, eval_points
from adabert.core.trainer import StageState, Trainee, Trainer
from adabert.data.dataset import disjoint_holdout_split
from adabert.data.encoding import batched_logits, epoch_batches, student_batch
from adabert.data.metrics import task_metrics
from adabert.nas.arch import Arch, derive, input_moves, random_arch, save_arch, validate_arch_json
from adabert.nas.board import PARAM_FREE, SearchBoard
from adabert.nas.config import RUN_FIELDS, SELECTION_FIELDS, SearchConfig
from adabert.nas.costs import CostModel, format_amount, measure_cost_model, rank_archs
from adabert.nas.estimator import ChoiceEstimates
from adabert.nas.gumbel import gumbel_sample, tau_schedule
from adabert.nas.search_space import SearchSpace
from adabert.nas.supernet import Sample, Supernet
from adabert.teacher.bundle import TaskBundle

SUMMARY = "search_metrics.json"  # a finished search's summary, beside arch.json


def search_inputs(bundle: TaskBundle, space: SearchSpace) -> dict[str, str]:
    """Fingerprints of what a search reads: data, teacher, search space, and the augmented text when given (a new
    augment folder means a new search)."""
    inputs = {**bundle.inputs(), "search_space": space.hash}
    if bundle.augment_dir is not None:
        inputs["augment"] = bundle.folder_fingerprint(bundle.augment_dir)
    return inputs


class Searcher:
    """Holds everything a search run needs; `run()` trains, evaluates, checkpoints and writes arch.json."""

    def __init__(self, bundle: TaskBundle, space: SearchSpace, cfg: SearchConfig, output_dir: Path,
                 device: torch.device) -> None:
        self.inputs = search_inputs(bundle, space)  # the stage's data: the widened slice is a setting of the search
        bundle = bundle.with_holdout_fraction(cfg.selection_fraction)
        self.cfg, self.space, self.bundle, self.device = cfg, space, bundle, device
        self.data = data = bundle.data
        self.out = Path(output_dir)
        task = data.task
        settings = {k: v for k, v in asdict(cfg).items() if k not in RUN_FIELDS}
        # the supernet's record (checkpoint) leaves out the selection settings; the run's record (meta) has them
        self.config = {**{k: v for k, v in settings.items() if k not in SELECTION_FIELDS}, "task": task.describe(),
                       "search_space": space.name}
        self.run_config = {**self.config, **{k: settings[k] for k in SELECTION_FIELDS}}
        self.probes = bundle.require_probes("by the search (its KD targets and depth estimates)")
        word, pos = bundle.tables
        if cfg.max_length > pos.shape[0]:
            raise AdabertError(f"--max-length: {cfg.max_length} exceeds the teacher's {pos.shape[0]} positions")
        unit, self.target = cfg.budget()
        self.cost_model: CostModel = measure_cost_model(space, unit, task.num_labels, task.is_pair, device)
        low, self.max_cost = self.cost_model.bounds(space)
        if self.target is not None and self.target < low * (1 - cfg.budget_tolerance):
            raise AdabertError(f"--target-{unit.replace('_', '-')}: {self.target:g} is below the cheapest "
                               f"student of search space {space.name!r} ({low:g} {unit}: one cell of "
                               "parameter-free ops)")
        self.fit_idx = bundle.fit_rows(cfg.train_limit)  # rows of the full train split (probe logits follow them)
        augmented = bundle.augmented
        # rows: the fit split, then the augmented text (`TaskBundle.split`); labels and teacher logits follow them
        self.enc = bundle.encoded("fit", cfg.max_length, cfg.train_limit, augmented=True)
        self.holdout_enc = bundle.encoded("holdout", cfg.max_length)
        self.labels = torch.tensor(bundle.split("fit", cfg.train_limit, augmented=True).labels)
        kd = self.probes.teacher_train[self.fit_idx]
        self.kd = torch.cat([kd, augmented.teacher]) if augmented is not None else kd  # [rows, C]
        torch.manual_seed(cfg.seed)
        self.model = Supernet(space, word, pos, task.num_labels, cfg.share_cells, task.is_pair)
        init_regression_heads(self.model, data)
        self.model.to(device)
        self.estimates = ChoiceEstimates(space.num_edges, len(space.ops), space.max_cells, cfg.estimate_window)
        self.opt_w = torch.optim.AdamW(self.model.weight_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.opt_a = torch.optim.SGD(self.model.arch_parameters(), lr=cfg.alpha_lr)
        n_fit = len(self.fit_idx)
        self.lengths = self.enc.lengths()
        if data.holdout_kind == "disjoint":  # estimate rows share no text with the weight rows, as held-out with fit
            self.w_rows, est = disjoint_holdout_split(bundle.split("fit", cfg.train_limit).texts, cfg.estimate_fraction,
                                                      n_fit, [cfg.seed, 7], "search: estimate rows")
        else:
            perm = np.random.default_rng([cfg.seed, 7]).permutation(n_fit)
            n_est = max(1, int(round(cfg.estimate_fraction * n_fit)))
            self.w_rows, est = np.sort(perm[n_est:]), perm[:n_est]
        if augmented is not None:  # the weights also train on the copies of their own rows, never of estimate rows
            copies = np.flatnonzero(np.isin(augmented.source, self.w_rows))
            log.info("search: %d weight rows + %d augmented copies of them", len(self.w_rows), len(copies))
            self.w_rows = np.concatenate([self.w_rows, n_fit + copies])
        self.e_rows = est[np.argsort(self.lengths[est], kind="stable")]
        self.steps_per_epoch = math.ceil(len(self.w_rows) / cfg.batch_size)
        self.epochs = epochs_to_reach("search", cfg.epochs, cfg.min_steps, self.steps_per_epoch)
        self.total_steps = self.steps_per_epoch * self.epochs
        self.warmup_steps = int(cfg.warmup * self.total_steps)
        self.history: list[dict] = []  # one record per evaluation: held-out metrics, genotype, cost, diagnostics
        self.board: SearchBoard | None = None
        self.trainer = Trainer(
            "search", [Trainee(self.model, self.opt_w)], self.epochs, self.batches, None, self.evaluate_point,
            task.main_metric, 1, cfg.clip, self.checkpoint, {"inputs": self.inputs, "config": self.config},
            step=self.train_step, extra=StageState(self.stage_state, self.load_stage_state), select=False,
            eval_steps=eval_points(self.total_steps, min(cfg.evals, self.total_steps)),
            checkpoint_every=cfg.checkpoint_every, log_evals=False, defaults=option_defaults(cfg))

    @property
    def step(self) -> int:
        """Steps completed (the trainer's count)."""
        return self.trainer.step

    # -- schedules ---------------------------------------------------------------------------------------------
    def tau(self, step: int) -> float:
        """Sampling temperature: annealed over the steps after the warm-up."""
        after = self.total_steps - self.warmup_steps
        return tau_schedule(max(0, step - self.warmup_steps), after, self.cfg.tau_start, self.cfg.tau_end)

    def lr_factor(self, step: int) -> float:
        """Cosine decay of the weight learning rate to 10% over the run."""
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(1, self.total_steps)))

    def batches(self, epoch: int) -> list[np.ndarray]:
        """The epoch's batches of weight rows, of similar lengths (a function of seed and epoch)."""
        return epoch_batches(self.lengths, self.cfg.batch_size, self.cfg.seed, epoch, rows=self.w_rows)

    def draw(self, step: int) -> tuple[Sample, bool]:
        """A path over all Kmax cells, and whether it was drawn uniformly: uniform ops during the warm-up and with
        probability `explore` later (every op keeps being trained and measured), else Gumbel-max samples of
        softmax(alpha / tau)."""
        alpha = self.model.alpha
        if step < self.warmup_steps or float(torch.rand(())) < self.cfg.explore:
            return Sample(gumbel_sample(torch.zeros_like(alpha), 1.0).tolist(), self.space.max_cells), True
        return Sample(gumbel_sample(alpha, self.tau(step)).tolist(), self.space.max_cells), False

    @torch.no_grad()
    def estimate_losses(self, sample: Sample) -> torch.Tensor:
        """L_1..L_Kmax [Kmax] of `sample` on a batch of the estimate rows (dropout off)."""
        cfg, model = self.cfg, self.model
        n = min(cfg.batch_size, len(self.e_rows))
        start = int(torch.randint(0, len(self.e_rows) - n + 1, ()))
        rows = self.e_rows[start: start + n]  # e_rows is sorted by length: a window of similar lengths
        local = distributed.shard(rows)
        teacher = self.kd[local].to(self.device) if cfg.gamma > 0 else None
        model.set_dropout(False)
        with autocast(self.device, cpu=cfg.bf16):
            heads = model(*student_batch(self.enc, local, self.device), sample)
        model.set_dropout(True)
        losses = depth_losses([h.float() for h in heads], self.labels[local].to(self.device), teacher, cfg.gamma,
                              cfg.temperature)
        losses = distributed.mean_over_processes(losses, len(local))
        check_terms(f"search step {self.step + 1}", **{f"estimate loss at depth {k + 1}": v
                                                       for k, v in enumerate(losses)})
        return losses

    # -- one step ----------------------------------------------------------------------------------------------
    def expected_cost(self) -> torch.Tensor:
        return self.cost_model.expected(self.space, self.model.alpha, self.model.depth_logits)

    def arch_step(self) -> dict[str, float]:
        """One gradient step of alpha and the depth logits on J + beta * L_E (plain SGD: J is in noise units, so
        the logits move in proportion to the evidence; Adam would normalise noise into confident steps)."""
        model = self.model
        objective = self.estimates.objective(model.alpha, model.depth_logits)
        cost = self.expected_cost()
        penalty = efficiency_penalty(cost, self.target, self.max_cost)
        total = objective + self.cfg.beta * penalty
        check_terms(f"search step {self.step}", objective=objective, efficiency=penalty)
        self.opt_a.zero_grad(set_to_none=True)
        total.backward()
        self.opt_a.step()
        return {"objective": float(objective.detach()), "efficiency": float(penalty.detach()),
                "expected_cost": float(cost.detach())}

    def train_step(self, rows: np.ndarray, step: int) -> list[float]:
        """Step `step` (0-based) on the global batch `rows`: weights, then estimates, then (after the warm-up)
        the architecture logits; TensorBoard every `log_every` steps. Returns [the mean loss over depths]."""
        cfg, model = self.cfg, self.model
        torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout and path samples depend on the step only
        for g in self.opt_w.param_groups:
            g["lr"] = cfg.lr * self.lr_factor(step)
        if not model.training:  # after an evaluation
            model.train()
        sample, uniform = self.draw(step)
        local = distributed.shard(rows)  # this process's share of the global batch (all of it in one process)
        batch = student_batch(self.enc, local, self.device)
        y = self.labels[local].to(self.device)
        teacher = self.kd[local].to(self.device) if cfg.gamma > 0 else None
        with autocast(self.device, cpu=cfg.bf16):
            heads = model(*batch, sample)
        losses = depth_losses([h.float() for h in heads], y, teacher, cfg.gamma, cfg.temperature)
        where = f"search step {self.step + 1}"
        global_losses = distributed.mean_over_processes(losses, len(local))  # per depth, over the global batch
        check_terms(where, **{f"loss at depth {k + 1}": v for k, v in enumerate(global_losses)})
        loss = losses.mean()
        self.opt_w.zero_grad(set_to_none=True)
        (loss * distributed.share(len(local), len(rows))).backward()
        distributed.average_gradients(self.model.weight_parameters())
        clip_checked(model.named_weight_parameters(), cfg.clip, where)
        self.opt_w.step()
        adv = self.estimates.update(sample.op_index, self.estimate_losses(sample), uniform)
        parts = {"loss": float(global_losses.mean()), "advantage": adv, "noise": self.estimates.noise(),
                 "tau": self.tau(step)}
        if step >= self.warmup_steps:
            parts.update(self.arch_step())
        if step % cfg.log_every == 0 and self.board is not None:
            self.log_scalars(self.board, step, parts)
        return [parts["loss"]]

    # -- evaluation --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, arch: Arch) -> dict[str, float]:
        """Task metrics of a derived architecture (with the supernet's weights) on the held-out slice."""
        self.model.eval()
        sample = Sample(arch.op_index(), arch.num_cells)
        enc = self.holdout_enc
        logits = batched_logits(lambda rows: self.model(*student_batch(enc, rows, self.device), sample)[-1], enc,
                                self.data.task.num_labels, self.device)
        return task_metrics(self.data.task, logits.numpy(), self.data.holdout.labels)

    def derive(self) -> tuple[Arch, dict]:
        """The architecture the logits choose now, and how it meets the budget."""
        model, space = self.model, self.space
        arch = derive(space, model.alpha, model.depth_logits)
        budget: dict = {"unit": self.cost_model.unit, "target": self.target}
        if self.target is not None:
            [(cell, k, feasible)] = rank_archs(space, model.alpha, model.depth_logits, self.cost_model, 1,
                                               self.target, self.cfg.budget_tolerance)
            arch.cell, arch.num_cells = cell, k
            budget.update({"tolerance": self.cfg.budget_tolerance, "within": feasible})
        budget["cost"] = self.cost_model.arch_cost(arch)
        return arch, budget

    def efficiency(self, arch: Arch) -> dict:
        """Parameter and FLOP estimate of the derived student (embedding tables materialised at width H)."""
        task = self.data.task
        params = measure_cost_model(self.space, "params", task.num_labels, task.is_pair)
        flops = measure_cost_model(self.space, "flops", task.num_labels, task.is_pair)
        emb = self.model.embed
        emb_params = (emb.word.shape[0] + emb.pos.shape[0] + 2) * self.space.hidden_size
        searched = params.arch_cost(arch)
        return {"params": int(searched + emb_params), "embedding_params": emb_params, "searched_params": int(searched),
                "flops_per_token_length": self.space.cost_length, "flops": int(flops.arch_cost(arch)),
                "cost_model": self.cost_model.as_dict()}

    def evaluate_point(self, model: Supernet) -> dict[str, float]:
        """An evaluation point of the trainer: the derived cell's held-out metrics, logged with the genotype,
        its cost and the alpha diagnostics (TensorBoard and the search history)."""
        task, board = self.data.task, self.board
        arch, budget = self.derive()
        m = self.evaluate(arch)
        diag = board.snapshot(self.step, arch, model.alpha, model.depth_logits)
        board.scalars(self.step, {f"holdout/{k}": v for k, v in m.items()})
        record = {"step": self.step, "holdout": m, "genotype": arch.genotype(), "cost": budget["cost"], **diag}
        self.history.append(record)
        log.log(summary_level(len(self.history) - 1, min(self.cfg.evals, self.total_steps)),
                "search step %d/%d: held-out %s %.2f | %s | %s %.4g | edge entropy %.2f", self.step, self.total_steps,
                task.main_metric, m[task.main_metric], arch.genotype(), budget["unit"], budget["cost"],
                diag["edge_entropy_mean"])
        return m

    def up_to_date(self) -> bool:
        """True when OUT holds a finished search (arch.json) for these inputs and settings."""
        return (self.out / "arch.json").is_file() and meta_matches(self.out, "search", self.inputs, self.run_config,
                                                               defaults=option_defaults(self.cfg))

    # -- checkpoints (the trainer's, with the estimates and the architecture optimiser beside the supernet) ----
    @property
    def checkpoint(self) -> Path:
        """One safetensors file, written atomically, with the run's record in its header (`core.trainer`); kept
        after the run: `finetune --inherit` and `adabert study` read the final supernet from it."""
        return self.out / "checkpoint.safetensors"

    def stage_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        opt_tensors, groups = optimizer_tensors("opt_a", self.opt_a)
        return {**prefixed("estimates", self.estimates.state()), **opt_tensors}, {"opt_a_groups": groups,
                                                                                 "history": self.history}

    def load_stage_state(self, tensors: dict[str, torch.Tensor], record: dict) -> None:
        self.estimates.load(unprefixed("estimates", tensors))
        restore_optimizer("opt_a", self.opt_a, tensors, record["opt_a_groups"])
        self.history = record["history"]

    def checkpoint_compatible(self) -> bool:
        """True when OUT holds a checkpoint made with these inputs and settings."""
        return self.trainer.compatible()

    def load_checkpoint(self) -> bool:
        """Restore OUT's checkpoint (refusing one of other settings); False when there is none."""
        if not self.checkpoint.is_file():
            return False
        self.trainer.start(resume=True)
        return True

    # -- the run -----------------------------------------------------------------------------------------------
    def ensure(self) -> dict:
        """The summary of this search: read when OUT already holds it, else run (continuing a checkpoint of the
        same settings)."""
        if self.up_to_date():
            log.info("search: %s is up to date (fingerprints match); skipping", self.out)
            return read_summary(self.out)
        return self.run(resume=self.checkpoint_compatible())

    def run(self, resume: bool = False, max_steps: int | None = None) -> dict | None:
        """Train through `core.trainer` until the end (or `max_steps` steps in total, leaving a checkpoint);
        return the summary, or None when stopped early."""
        self.out.mkdir(parents=True, exist_ok=True)
        if self.cfg.bf16 and self.device.type == "cpu":
            warn_if_emulated_bf16("the search's steps")
        self.trainer.start(resume)
        main = distributed.is_main()
        if main:
            if not resume:
                (self.out / META).unlink(missing_ok=True)  # until the new arch.json is written, no finished run
            write_json(self.out / "config.json", {"adabert_version": __version__, **self.run_config})
        self.board = SearchBoard(self.out / "tensorboard", purge_step=self.step or None, enabled=main)
        t0, done_at_start = time.time(), self.step
        try:
            if self.trainer.fit(max_steps=max_steps) is None:
                return None
        finally:
            self.board.close()
        seconds = time.time() - t0
        self.trainer.save_if_main()  # the final supernet, which the selection's candidates start from
        distributed.barrier()  # every process reads it only once rank 0 has written it
        return self.finish(seconds, self.step - done_at_start)

    def log_scalars(self, board: SearchBoard, step: int, parts: dict[str, float]) -> None:
        q = torch.softmax(self.model.depth_logits.detach().float(), -1).cpu()
        unit = self.cost_model.unit
        values = {"loss/train": parts["loss"], "search/advantage": parts["advantage"],
                  "search/noise": parts["noise"], "search/tau": parts["tau"],
                  "search/objective": parts.get("objective", 0.0),
                  "loss/efficiency": parts.get("efficiency", 0.0),
                  f"cost/expected_{unit}": float(self.expected_cost().detach()),
                  "cost/expected_depth": float((q * torch.arange(1, len(q) + 1)).sum()),
                  **{f"depth/p_K{k + 1}": float(v) for k, v in enumerate(q)},
                  **{f"depth/loss_vs_K1_K{k + 1}": float(v) for k, v in enumerate(self.estimates.depth_loss())}}
        if self.target is not None:
            values[f"cost/target_{unit}"] = self.target
        board.scalars(step, values)

    def candidates(self, derived: Arch, max_draws: int = 20_000) -> list[Arch]:
        """`select_top` distinct architectures: the derived one, then draws from the final distribution
        (`arch.random_arch` with the logits; within the budget when one is given), so that the candidates differ
        where the search is unsure and agree where it has decided. When the draws do not find enough (a
        distribution that has decided nearly everything), the next most probable ones (`costs.rank_archs`)."""
        cfg, model, space = self.cfg, self.model, self.space
        archs = {derived.genotype(): derived}
        rng = np.random.default_rng([cfg.seed, 11])

        def add(arch: Arch) -> None:
            if self.target is None or self.cost_model.within(arch, self.target, cfg.budget_tolerance):
                archs.setdefault(arch.genotype(), arch)

        for _ in range(max_draws):
            if len(archs) >= cfg.select_top:
                break
            add(random_arch(space, rng, model.alpha, model.depth_logits))
        for cell, k, _ in rank_archs(space, model.alpha, model.depth_logits, self.cost_model, cfg.select_top,
                                     self.target, cfg.budget_tolerance):
            add(Arch(space, k, cell))
        return [Arch(space, a.num_cells, a.cell, derived.alpha_probs, derived.depth_probs)
                for a in list(archs.values())[: cfg.select_top]]

    def select(self, derived: Arch) -> tuple[Arch, dict]:
        """The architecture to write and the selection record: with one candidate, the derived one; else each
        candidate finetuned `select_steps` steps on the fit split from the supernet's weights (the final
        checkpoint), and the best on held-out, or, when cost is priced (beta > 0, no target), the cheapest of
        those held-out does not tell from the best (`adabert.nas.select`); then, with `move_steps`, the best of
        that pick and its input moves (`move_inputs`)."""
        from adabert.nas.select import cheapest_not_told_apart, select_by_finetune, selection_finetune

        cfg, metric = self.cfg, self.data.task.main_metric
        candidates = self.candidates(derived)
        budget = " within the budget" if self.target is not None else ""
        if len(candidates) == 1:
            selection = {"rule": f"the most probable architecture of the final logits{budget}", "metric": metric}
            return self.move_inputs(derived, selection)
        ft = selection_finetune(cfg, cfg.select_steps)
        best, records = select_by_finetune(candidates, self.bundle, ft, self.out / "select", self.device,
                                           self.checkpoint)
        costs = [self.cost_model.arch_cost(arch) for arch in candidates]
        for record, cost in zip(records, costs):
            record["cost"] = cost
        rule = (f"best held-out {metric} of {len(candidates)} architectures (the derived one and draws from the "
                f"final distribution{budget}), each finetuned {ft.steps} steps on the fit split from the supernet's "
                "weights")
        written = best
        if cfg.prices_cost():
            # the leads are measured by rank 0 alone (it wrote the candidates' folders): every process writes its pick
            written = distributed.from_main(cheapest_not_told_apart(best, records, costs))
            rule += ("; of the best and the candidates it does not lead by 2 paired standard errors, the cheapest "
                     "(--beta prices cost)")
        if written != best:
            unit = self.cost_model.unit
            log.info("select: wrote candidate %d (held-out %.2f, %s), the cheapest of those held-out does not tell "
                     "from the best, candidate %d (%.2f, %s)", written + 1, records[written]["holdout"],
                     format_amount(costs[written], unit), best + 1, records[best]["holdout"],
                     format_amount(costs[best], unit))
        selection = {"rule": rule, "metric": metric, "finetuned_holdout": records[written]["holdout"],
                     "steps": ft.steps, "candidate": written, "holdout_best": best, "candidates": records}
        return self.move_inputs(candidates[written], selection)

    def move_inputs(self, pick: Arch, selection: dict) -> tuple[Arch, dict]:
        """The pick and each of its input moves (`arch.input_moves`: the same ops, one edge reading another node, so
        the same cost), each finetuned `move_steps` steps from the supernet's weights in
        OUT/moves; the best on held-out is written (ties: the pick, candidate 0). Without `move_steps`, the pick.

        Why: the logits score each (edge, op) averaged over whatever the other edges put into its input node, so an
        op that is good given what the pick feeds it goes unseen (SST-2 at 50k: a dilated convolution reading a node
        of pools finetunes 1.8-2.5 points above the same cell with it reading the embedding); and the selection's
        short finetune cannot tell such cells apart where a longer one can (docs/results.md, forty-first session)."""
        from adabert.nas.select import select_by_finetune, selection_finetune

        if not self.cfg.move_steps:
            return pick, selection
        same = self.space.pair_inputs != "cross" or not self.data.task.is_pair  # nodes 0 and 1 alike (`cell_inputs`)
        archs = [pick, *(Arch(self.space, a.num_cells, a.cell, pick.alpha_probs, pick.depth_probs)
                         for a in input_moves(pick, same))]
        if len(archs) == 1:
            return pick, selection
        ft = selection_finetune(self.cfg, self.cfg.move_steps)
        best, records = select_by_finetune(archs, self.bundle, ft, self.out / "moves", self.device, self.checkpoint)
        cost = self.cost_model.arch_cost(pick)  # the same ops: the same cost
        for record in records:
            record["cost"] = cost
        selection["rule"] += (f"; then the best on held-out of it and its {len(archs) - 1} input moves (the same ops, "
                              f"one edge reading another node), each finetuned {ft.steps} steps from the supernet's "
                              "weights")
        selection["moves"] = {"steps": ft.steps, "best": best, "candidates": records}
        selection["finetuned_holdout"] = records[best]["holdout"]
        if best and distributed.is_main():  # the leads are measured by rank 0 alone (`select_by_finetune`)
            log.info("select: wrote input move %d (held-out %.2f against the pick's %.2f after %d steps; paired "
                     "s.e. of the lead %.2f) | %s", best, records[best]["holdout"], records[0]["holdout"], ft.steps,
                     records[0]["behind_best"]["se"], archs[best].genotype())
        return archs[best], selection


    def finish(self, seconds: float, steps: int) -> dict:
        derived, budget = self.derive()
        t0 = time.time()
        arch, selection = self.select(validate_arch_json(derived.to_json(), "search result", self.space))
        budget["cost"] = self.cost_model.arch_cost(arch)
        if self.target is not None and not budget["within"]:
            log.warning("search: no architecture of the space costs %g %s +- %d%%; wrote the closest (%g)",
                        self.target, budget["unit"], round(100 * self.cfg.budget_tolerance), budget["cost"])
        if self.cfg.prices_cost() and {op for node in arch.cell for _, op in node} <= set(PARAM_FREE):
            log.warning("search: the cell chosen has no parameters (pools and identities only; --beta %g, no budget). "
                        "On little data the shared weights favour ops that need no training, and a convolution cell "
                        "can finetune several points better (docs/results.md, thirty-third and thirty-fourth "
                        "sessions): train the weights on augmented text too (`adabert augment`, then --augment), or "
                        "state a size with --target-params (e.g. 300000)", self.cfg.beta)
        arch.info = {"teacher": {"fingerprint": self.inputs["teacher"]}, "task": self.data.task.describe(),
                     "efficiency": {**self.efficiency(arch), "budget": budget},
                     "selection": {**selection, "supernet_holdout": self.evaluate(arch), "step": self.step,
                                   "of_steps": self.total_steps}}
        summary = {"arch": str(self.out / "arch.json"), "genotype": arch.genotype(),
                   "selection": arch.info["selection"],
                   "efficiency": {k: v for k, v in arch.info["efficiency"].items() if k != "cost_model"},
                   "steps": self.total_steps, "seconds_this_run": seconds,
                   "selection_seconds": time.time() - t0,
                   "examples_per_second": steps * self.cfg.batch_size / max(seconds, 1e-9),
                   "estimates": self.estimates.report(self.space.ops), "history": self.history}
        if distributed.is_main():
            if "candidates" in selection or "moves" in selection:
                board = SearchBoard(self.out / "tensorboard")
                if "candidates" in selection:
                    board.selection(selection["candidates"], selection["candidate"], selection["holdout_best"])
                if "moves" in selection:
                    moves = selection["moves"]
                    board.selection(moves["candidates"], moves["best"], moves["best"], "moves")
                board.close()
            save_arch(arch, self.out / "arch.json")
            write_json(self.out / SUMMARY, summary)
            write_meta(self.out, "search", self.inputs, self.run_config)
        return summary


def read_summary(folder: Path) -> dict:
    """The summary a finished search wrote to FOLDER/search_metrics.json."""
    return read_json(Path(folder) / SUMMARY, "search summary", dict)
