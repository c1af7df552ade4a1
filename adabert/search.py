"""`adabert search`: differentiable architecture search with Gumbel-softmax, single path by default.

Per step (single level, as in the authors' code): sample ops and depth with Gumbel-softmax at temperature tau,
run the sampled sub-network on a batch, and update weights and architecture logits on
    L = (1 - gamma) * CE + gamma * L_KD(probe logits) + beta * L_E.
During the first `alpha_warmup` share of the steps only the weights are updated (architectures are still
sampled uniformly at random), so that parametric ops are trained before they are compared.
With `bilevel`, the architecture logits are updated on a separate half of the training data (first-order DARTS).
The derived architecture is scored on the held-out slice several times per epoch; the best one is `arch.json`.
Checkpoints make `--resume` continue exactly where a run stopped (per-step seeds, saved optimiser states).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from adabert import __version__
from adabert.arch import Arch, derive, save_arch, validate_arch_json
from adabert.costs import OpCosts, measure_op_costs
from adabert.data import TaskData
from adabert.embedding import teacher_tables
from adabert.encoding import batch_indices, encode_separate, student_batch
from adabert.errors import AdabertError
from adabert.fileio import load_tensors, meta_matches, read_json, save_tensors, write_json, write_meta
from adabert.gumbel import tau_schedule
from adabert.losses import search_loss
from adabert.metrics import task_metrics
from adabert.probes import load_probe_logits
from adabert.runtime import autocast, log, progress
from adabert.schedule import eval_points
from adabert.search_config import SearchConfig
from adabert.search_logging import SearchBoard
from adabert.search_space import SearchSpace
from adabert.supernet import Supernet
from adabert.teacher import check_teacher_for_task, load_classifier, load_tokenizer, model_source_fingerprint


def _flatten_optimizer(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    sd = opt.state_dict()
    tensors = {f"{prefix}.{idx}.{k}": (v if torch.is_tensor(v) else torch.tensor(v))
               for idx, st in sd["state"].items() for k, v in st.items()}
    return tensors, sd["param_groups"]


def _restore_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            idx, k = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


class Searcher:
    """Holds everything a search run needs; `run()` trains, evaluates, checkpoints and writes arch.json."""

    def __init__(self, teacher: str, probes_dir: Path, data: TaskData, space: SearchSpace, cfg: SearchConfig,
                 output_dir: Path, device: torch.device) -> None:
        self.cfg, self.space, self.data, self.device = cfg, space, data, device
        self.out = Path(output_dir)
        task = data.task
        self.probes = load_probe_logits(Path(probes_dir), data, teacher)
        model = load_classifier(teacher)
        check_teacher_for_task(model, teacher, task)
        word, pos = teacher_tables(model)
        if cfg.max_length > pos.shape[0]:
            raise AdabertError(f"--max-length: {cfg.max_length} exceeds the teacher's {pos.shape[0]} positions")
        del model
        tok = load_tokenizer(teacher)
        fit_idx = data.train_idx[: cfg.train_limit] if cfg.train_limit else data.train_idx
        self.fit_idx = fit_idx  # rows of the full train split (probe logits are indexed by them)
        self.enc = encode_separate(tok, data.train.subset(fit_idx), cfg.max_length)
        self.holdout_enc = encode_separate(tok, data.holdout, cfg.max_length)
        self.labels = torch.tensor(data.train.labels[fit_idx])
        torch.manual_seed(cfg.seed)
        self.model = Supernet(space, word, pos, task.num_labels, cfg.share_cells).to(device)
        self.costs: OpCosts = measure_op_costs(space, cfg.cost, device)
        self.op_cost = self.costs.normalised.to(device)
        self.opt_w = torch.optim.AdamW(self.model.weight_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.opt_a = torch.optim.Adam(self.model.arch_parameters(), lr=cfg.alpha_lr, betas=(0.5, 0.999),
                                      weight_decay=cfg.alpha_weight_decay)
        n = len(self.enc)
        if cfg.bilevel:
            perm = np.random.default_rng(cfg.seed).permutation(n)
            self.w_rows, self.a_rows = np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
        else:
            self.w_rows, self.a_rows = np.arange(n), None
        self.steps_per_epoch = math.ceil(len(self.w_rows) / cfg.batch_size)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.inputs = {"data": data.fingerprint, "teacher": model_source_fingerprint(teacher),
                       "search_space": space.hash}
        self.config = {**asdict(cfg), "task": task.describe(), "search_space": space.name}
        self.step = 0
        self._order: tuple[int, np.ndarray] = (-1, np.empty(0, dtype=np.int64))
        self.best: dict | None = None
        self.history: list[dict] = []

    # -- schedules ---------------------------------------------------------------------------------------------
    def tau(self, step: int) -> float:
        return tau_schedule(step, self.total_steps, self.cfg.tau_start, self.cfg.tau_end)

    def lr_factor(self, step: int) -> float:
        """Cosine decay of the weight learning rate to 10% over the run."""
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(1, self.total_steps)))

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The epoch's permutation of the weight-training rows (a function of seed and epoch; cached)."""
        if self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.cfg.seed, epoch]).permutation(self.w_rows))
        return self._order[1]

    # -- one step ----------------------------------------------------------------------------------------------
    def _loss(self, rows: np.ndarray, tau: float, update_arch_only: bool = False,
              update_arch: bool = True) -> dict[str, float]:
        cfg, model = self.cfg, self.model
        batch = student_batch(self.enc, rows, self.device)
        y = self.labels[rows].to(self.device)
        probe = self.probes.train[self.fit_idx[rows]].to(self.device)
        sample = model.sample(tau, hard=cfg.mode == "hard")
        with autocast(self.device):
            logits, heads = model(*batch, sample)
        loss, parts = search_loss(logits.float(), [h.float() for h in heads], y, probe, model.alpha,
                                  model.depth_logits, self.op_cost, cfg.gamma, cfg.beta, cfg.temperature)
        self.opt_w.zero_grad(set_to_none=True)
        self.opt_a.zero_grad(set_to_none=True)
        loss.backward()
        if not update_arch_only:
            torch.nn.utils.clip_grad_norm_(model.weight_parameters(), cfg.clip)
            self.opt_w.step()
        if update_arch and (update_arch_only or not cfg.bilevel):
            torch.nn.utils.clip_grad_norm_(model.arch_parameters(), cfg.clip)
            self.opt_a.step()
        parts["depth"] = sample.depth
        return parts

    def train_step(self, rows: np.ndarray) -> dict[str, float]:
        torch.manual_seed(self.cfg.seed * 1_000_003 + self.step)  # dropout and Gumbel noise depend on the step only
        for g in self.opt_w.param_groups:
            g["lr"] = self.cfg.lr * self.lr_factor(self.step)
        self.model.train()
        tau = self.tau(self.step)
        # Warm-up: weights only, so that convolutions are trained before alpha compares them with
        # parameter-free ops (which are "ready" from the first step and otherwise win early).
        update_arch = self.step >= self.cfg.alpha_warmup * self.total_steps
        parts = self._loss(rows, tau, update_arch=update_arch)
        if self.cfg.bilevel and update_arch:
            a_rows = self.a_rows[np.random.default_rng([self.cfg.seed, self.step]).integers(
                0, len(self.a_rows), len(rows))]
            parts.update({f"arch_{k}": v for k, v in self._loss(a_rows, tau, update_arch_only=True).items()})
        parts["tau"] = tau
        return parts

    # -- evaluation --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, arch: Arch) -> dict[str, float]:
        """Task metrics of the derived architecture (with the supernet's weights) on the held-out slice."""
        self.model.eval()
        sample = self.model.fixed(arch.op_index(), arch.num_cells)
        logits = torch.empty(len(self.holdout_enc), self.data.task.num_labels)
        for idx in batch_indices(self.holdout_enc.lengths(), 256, shuffle=False):
            with autocast(self.device):
                out, _ = self.model(*student_batch(self.holdout_enc, idx, self.device), sample)
            logits[idx] = out.float().cpu()
        return task_metrics(self.data.task, logits.numpy(), self.data.holdout.labels)

    def efficiency(self, arch: Arch) -> dict:
        """Parameter and FLOP estimate of the derived student from the op cost table (embedding tables
        materialised at width H, one head)."""
        c = self.costs
        kept = [c.ops.index(op) for inputs in arch.cell for _, op in inputs]
        cell_params = sum(c.params[k] for k in kept) + self.space.intermediate_nodes
        head = self.model.heads[0]
        emb = self.model.embed
        emb_params = (emb.word.shape[0] + emb.pos.shape[0] + 2) * self.space.hidden_size
        return {"params": arch.num_cells * cell_params + emb_params + sum(p.numel() for p in head.parameters()),
                "embedding_params": emb_params, "cell_params": cell_params,
                "flops_per_token_length": self.space.cost_length,
                "flops": arch.num_cells * sum(c.flops[k] for k in kept), "op_costs": c.as_dict()}

    def evaluate_and_log(self, board: SearchBoard) -> None:
        model, task = self.model, self.data.task
        arch = derive(self.space, model.alpha, model.depth_logits)
        m = self.evaluate(arch)
        diag = board.snapshot(self.step, arch, model.alpha, model.depth_logits)
        board.scalars(self.step, {f"holdout/{k}": v for k, v in m.items()})
        record = {"step": self.step, "holdout": m, "genotype": arch.genotype(), **diag}
        self.history.append(record)
        log.info("step %d: held-out %s %.2f | %s | param-free share %.2f", self.step, task.main_metric,
                 m[task.main_metric], arch.genotype(), diag["param_free_share"])
        if self.best is None or m[task.main_metric] > self.best["holdout"][task.main_metric]:
            self.best = {**record, "arch": arch.to_json()}

    def up_to_date(self) -> bool:
        """True when OUT holds a finished search (arch.json) for these inputs and settings."""
        return (self.out / "arch.json").is_file() and meta_matches(self.out, "search", self.inputs, self.config)

    # -- checkpoints -------------------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tw, gw = _flatten_optimizer("opt_w", self.opt_w)
        ta, ga = _flatten_optimizer("opt_a", self.opt_a)
        save_tensors(self.out / "checkpoint.safetensors", {**tensors, **tw, **ta})
        write_json(self.out / "checkpoint.json", {"step": self.step, "inputs": self.inputs, "config": self.config,
                                                  "opt_w_groups": gw, "opt_a_groups": ga, "best": self.best,
                                                  "history": self.history})

    def checkpoint_compatible(self) -> bool:
        """True when OUT holds a checkpoint made with these inputs and settings."""
        path = self.out / "checkpoint.json"
        if not path.is_file():
            return False
        meta = read_json(path, "search checkpoint")
        return meta.get("inputs") == self.inputs and meta.get("config") == json.loads(json.dumps(self.config))

    def load_checkpoint(self) -> bool:
        path = self.out / "checkpoint.json"
        if not path.is_file():
            return False
        if not self.checkpoint_compatible():
            raise AdabertError(f"{path}: the checkpoint was made with other inputs or settings; use the same "
                               "options, or a new --output-dir")
        meta = read_json(path, "search checkpoint")
        t = load_tensors(self.out / "checkpoint.safetensors", "search checkpoint")
        self.model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
        _restore_optimizer("opt_w", self.opt_w, t, meta["opt_w_groups"])
        _restore_optimizer("opt_a", self.opt_a, t, meta["opt_a_groups"])
        self.step, self.best, self.history = meta["step"], meta["best"], meta["history"]
        log.info("search: resumed from %s at step %d", path, self.step)
        return True

    # -- the run -----------------------------------------------------------------------------------------------
    def run(self, resume: bool = False, max_steps: int | None = None) -> dict | None:
        """Train until the end (or `max_steps` steps in total, leaving a checkpoint); return the summary, or None
        when stopped early."""
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self.load_checkpoint()
        elif (self.out / "checkpoint.json").is_file():
            log.info("search: starting afresh (use --resume to continue the checkpoint in %s)", self.out)
        write_json(self.out / "config.json", {"adabert_version": __version__, **self.config})
        board = SearchBoard(self.out / "tensorboard", purge_step=self.step if self.step else None)
        n_eval = min(cfg.evals_per_epoch, self.steps_per_epoch)
        eval_at = eval_points(self.steps_per_epoch, n_eval)
        t0, done_at_start = time.time(), self.step
        bar = progress(range(self.step, self.total_steps), desc="search", initial=self.step, total=self.total_steps)
        try:
            for step in bar:
                epoch, b = divmod(step, self.steps_per_epoch)
                rows = self.epoch_order(epoch)[b * cfg.batch_size: (b + 1) * cfg.batch_size]
                parts = self.train_step(rows)
                self.step = step + 1
                if step % cfg.log_every == 0:
                    board.scalars(step, {"loss/total": parts["total"], "loss/ce": parts["ce"], "loss/kd": parts["kd"],
                                         "loss/efficiency": parts["efficiency"], "search/tau": parts["tau"],
                                         "search/sampled_depth": parts["depth"],
                                         "cost/expected_depth": parts["expected_depth"],
                                         "cost/cell_cost": parts["cell_cost"], **self._expected_costs()})
                if (b + 1) in eval_at:
                    self.evaluate_and_log(board)
                if self.step % cfg.checkpoint_every == 0 or (b + 1) in eval_at:
                    self.save_checkpoint()
                if max_steps is not None and self.step >= max_steps and self.step < self.total_steps:
                    self.save_checkpoint()
                    log.info("search: stopped at step %d of %d; continue with --resume", self.step, self.total_steps)
                    return None
        except KeyboardInterrupt:
            self.save_checkpoint()
            raise
        finally:
            board.close()
        seconds = time.time() - t0
        return self.finish(seconds, self.step - done_at_start)

    def _expected_costs(self) -> dict[str, float]:
        """Expected params and FLOPs of the whole sampled network (all edges, expected depth)."""
        p = torch.softmax(self.model.alpha.detach().float(), -1).cpu()
        q = torch.softmax(self.model.depth_logits.detach().float(), -1).cpu()
        depth = float((q * torch.arange(1, len(q) + 1)).sum())
        params = float((p * torch.tensor(self.costs.params, dtype=torch.float)).sum()) * depth
        flops = float((p * torch.tensor(self.costs.flops, dtype=torch.float)).sum()) * depth
        return {"cost/expected_params": params, "cost/expected_flops": flops}

    def finish(self, seconds: float, steps: int) -> dict:
        best = self.best
        arch = validate_arch_json(best["arch"], "search result", self.space)
        arch.info = {"teacher": {"fingerprint": self.inputs["teacher"]}, "task": self.data.task.describe(),
                     "efficiency": self.efficiency(arch),
                     "selection": {"metric": self.data.task.main_metric, "holdout": best["holdout"],
                                   "step": best["step"], "of_steps": self.total_steps}}
        save_arch(arch, self.out / "arch.json")
        summary = {"arch": str(self.out / "arch.json"), "genotype": arch.genotype(), "selection": arch.info["selection"],
                   "efficiency": {k: v for k, v in arch.info["efficiency"].items() if k != "op_costs"},
                   "steps": self.total_steps, "seconds_this_run": seconds,
                   "examples_per_second": steps * self.cfg.batch_size / max(seconds, 1e-9),
                   "history": self.history}
        write_json(self.out / "search_metrics.json", summary)
        write_meta(self.out, "search", self.inputs, self.config)
        return summary
