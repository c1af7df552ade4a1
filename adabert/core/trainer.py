"""The one training loop of every training stage: teacher, probes, search, finetune and distill.

A stage supplies its models (each with its optimiser and schedule), the batches of an epoch, a loss function
and a held-out evaluation; `Trainer.fit` does the rest, the same way for every stage:

- steps: epoch e visits `batches(e)` in order (the stage draws them from a generator seeded by (seed, e), so an
  epoch's order does not depend on what ran before it: a resumed run sees the same batches);
- each step: `loss(rows)` -> one loss per model and the named terms; a NaN/inf term or gradient stops the run
  (`guards`), naming the term and the last good checkpoint; per model: zero_grad, backward, clip, optimiser step;
  then every schedule steps. A stage whose step is not "one loss per model" (the search: weights, then
  estimates, then the architecture logits) passes its own `step(rows, index)` instead of `loss`;
- data parallel (`core.distributed`, under torchrun): each process trains on its share of every batch, the
  gradients are averaged, and every process evaluates the whole held-out slice, so all make the same choices;
  only rank 0 writes checkpoints;
- evaluation points (`evals_per_epoch` evenly spaced per epoch, the last at its end, or the stage's own
  `eval_steps` over the run): `evaluate(model)` on the held-out slice for every model; the history records the
  step, epoch, mean training loss since the previous point and the metrics; with `select`, each model's best
  state (by `metric`) is kept in memory and loaded at the end;
- a checkpoint at every evaluation point, every `checkpoint_every` steps, and after the first step that ends
  `checkpoint_seconds` (default CHECKPOINT_SECONDS, ten minutes) after the last one, so that a killed run loses
  at most that much work whatever its evaluation spacing (`checkpoint`): models, best states, optimisers,
  schedules, the stage's own state (`extra`), torch RNG state, step, history and the running loss sums since the
  last evaluation in one atomically written safetensors file. `fit(resume=True)` continues from it at the next
  step, which reproduces the uninterrupted run exactly on the same device and thread count; a checkpoint made
  with other inputs or settings (`fingerprint`; an option added since, holding its default, still matches) is
  refused in one line. `fit(resume="auto")` (the stages that `adabert pipeline`, `study` and a search's selection
  run for the user) continues a checkpoint it can and starts afresh from one it cannot, saying so: an interrupted
  run of other settings is what their rerun replaces. `fit(max_steps=N)` stops after N steps with a checkpoint.

Returns the index of the best model, its score, every model's best score and the history.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from torch import nn

from adabert.core import distributed
from adabert.core.checkpoint import (load_checkpoint, optimizer_tensors, prefixed, read_record, restore_optimizer,
                                     save_checkpoint, unprefixed)
from adabert.core.errors import AdabertError
from adabert.core.fileio import config_matches, state_mismatch
from adabert.core.guards import NonFiniteError, check_terms, clip_checked
from adabert.core.runtime import log, progress, summary_level
from adabert.core.schedule import eval_points

Losses = tuple[list[torch.Tensor], dict[str, torch.Tensor]]
CHECKPOINT_SECONDS = 600.0  # the most training time a killed run loses (between evaluation points)

Resume = bool | Literal["auto"]  # True: continue the checkpoint (refuse one of other settings); "auto": if it can


@dataclass
class Trainee:
    """A model the trainer updates, with its optimiser and learning-rate schedule (None: the stage sets the
    rate itself); `extra`: modules trained beside it but not part of it (e.g. FitNets regressors), checkpointed
    but not selected or saved."""

    model: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler | None = None
    extra: nn.Module | None = None


@dataclass
class StageState:
    """State a stage keeps beside its models (e.g. the search's estimates and architecture optimiser), saved in
    the same checkpoint: `save()` -> (tensors, JSON record); `load(tensors, record)` restores it."""

    save: Callable[[], tuple[dict[str, torch.Tensor], dict]]
    load: Callable[[dict[str, torch.Tensor], dict], None]


@dataclass
class TrainResult:
    best_index: int
    best_score: float
    history: list[dict]
    best_scores: list[float]


def partial_dir(output_dir: Path) -> Path:
    """Where a stage writing `output_dir` keeps its checkpoints until the output is complete: OUT.partial."""
    output_dir = Path(output_dir)
    return output_dir.with_name(output_dir.name + ".partial")


class Trainer:
    def __init__(self, name: str, trainees: list[Trainee], epochs: int, batches: Callable[[int], list[np.ndarray]],
                 loss: Callable[[np.ndarray], Losses] | None, evaluate: Callable[[nn.Module], dict[str, float]],
                 metric: str, evals_per_epoch: int, clip: float, checkpoint: Path | None = None,
                 fingerprint: dict | None = None, *, step: Callable[[np.ndarray, int], list[float]] | None = None,
                 extra: StageState | None = None, select: bool = True, eval_steps: set[int] | None = None,
                 checkpoint_every: int = 0, checkpoint_seconds: float | None = CHECKPOINT_SECONDS,
                 log_evals: bool = True, defaults: dict | None = None) -> None:
        """step: the stage's own training step (rows of the global batch, 0-based step index) -> one loss per
        model, used instead of `loss`; eval_steps: 1-based steps of the run to evaluate after, instead of
        `evals_per_epoch`; select: keep and load each model's best state; checkpoint_seconds: also checkpoint after
        the first step this long after the last checkpoint (None: only at evaluation points and `checkpoint_every`);
        log_evals: log each evaluation; defaults: the stage's option defaults, so that a checkpoint recorded before
        an option was added resumes while that option holds its default (`fileio.config_matches` on the
        fingerprint's "config")."""
        if (loss is None) == (step is None):
            raise ValueError("Trainer: give exactly one of loss and step")
        self.name, self.trainees, self.epochs = name, trainees, epochs
        self.batches, self.loss, self.evaluate, self.metric = batches, loss, evaluate, metric
        self.evals_per_epoch, self.clip = evals_per_epoch, clip
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.fingerprint = json.loads(json.dumps(fingerprint or {}))
        self.defaults = defaults
        self.custom_step, self.extra, self.select = step, extra, select
        self.eval_steps, self.checkpoint_every, self.log_evals = eval_steps, checkpoint_every, log_evals
        self.checkpoint_seconds = checkpoint_seconds
        self.step, self.history, self.started = 0, [], False
        self.loss_sums, self.loss_count = np.zeros(len(trainees)), 0  # training losses since the last evaluation
        self.saved_at = time.monotonic()
        self.best = [-math.inf] * len(trainees)
        self.best_state: list[dict | None] = [None] * len(trainees)

    # -- checkpoints -------------------------------------------------------------------------------------------
    def save_if_main(self) -> None:
        """Write the checkpoint (rank 0 only, when the trainer has a checkpoint path)."""
        if self.checkpoint is not None and distributed.is_main():
            self.save()

    def save(self) -> None:
        tensors = {"rng.torch": torch.get_rng_state()}
        groups = []
        for i, t in enumerate(self.trainees):
            tensors.update(prefixed(f"model{i}", t.model.state_dict()))
            if t.extra is not None:
                tensors.update(prefixed(f"extra{i}", t.extra.state_dict()))
            opt_tensors, opt_groups = optimizer_tensors(f"opt{i}", t.opt)
            tensors.update(opt_tensors)
            groups.append(opt_groups)
        for i, state in enumerate(self.best_state):
            if state is not None:
                tensors.update(prefixed(f"best{i}", state))
        record = {"stage": self.name, "fingerprint": self.fingerprint, "step": self.step, "history": self.history,
                  "loss_sums": self.loss_sums.tolist(), "loss_count": self.loss_count,
                  "best": [b if s is not None else None for b, s in zip(self.best, self.best_state)],
                  "opt_groups": groups,
                  "scheds": [t.sched.state_dict() if t.sched is not None else None for t in self.trainees]}
        if self.extra is not None:
            extra_tensors, record["extra"] = self.extra.save()
            tensors.update(prefixed("stage", extra_tensors))
        save_checkpoint(self.checkpoint, tensors, record)
        self.saved_at = time.monotonic()

    def restore(self) -> None:
        tensors, record = load_checkpoint(self.checkpoint, f"{self.name} checkpoint")
        for i, t in enumerate(self.trainees):
            for module, prefix in ((t.model, f"model{i}"), (t.extra, f"extra{i}")):
                if module is None:
                    continue
                state = unprefixed(prefix, tensors)
                diff = state_mismatch(module, state)
                if diff is not None:  # made by a version that built the model otherwise
                    raise AdabertError(f"{self.checkpoint}: the checkpoint does not fit the model this version of "
                                       f"adabert builds ({diff}); delete it to start afresh")
                module.load_state_dict(state)
            restore_optimizer(f"opt{i}", t.opt, tensors, record["opt_groups"][i])
            if t.sched is not None:
                t.sched.load_state_dict(record["scheds"][i])
        if self.extra is not None:
            self.extra.load(unprefixed("stage", tensors), record["extra"])
        torch.set_rng_state(tensors["rng.torch"])
        self.step, self.history = record["step"], record["history"]
        if "loss_sums" in record:  # absent from checkpoints written at evaluation points by earlier versions
            self.loss_sums, self.loss_count = np.asarray(record["loss_sums"], dtype=float), record["loss_count"]
        for i, best in enumerate(record["best"]):
            if best is not None:
                self.best[i], self.best_state[i] = best, unprefixed(f"best{i}", tensors)

    def compatible(self) -> bool:
        """True when the checkpoint file exists and was made with these inputs and settings."""
        path = self.checkpoint
        if path is None or not path.is_file():
            return False
        recorded = read_record(path, f"{self.name} checkpoint").get("fingerprint")
        if not isinstance(recorded, dict):
            return False
        rest = {k: v for k, v in recorded.items() if k != "config"}
        return (rest == {k: v for k, v in self.fingerprint.items() if k != "config"}
                and config_matches(recorded.get("config"), self.fingerprint.get("config"), self.defaults))

    def start(self, resume: Resume) -> None:
        """Restore the checkpoint when `resume`; one of other settings is refused (True) or replaced by a fresh start
        ("auto"); once per trainer."""
        if self.started:
            return
        self.started = True
        path = self.checkpoint
        if path is None or not path.is_file():
            if resume:
                log.debug("%s: no checkpoint to resume from; starting afresh", self.name)
            return
        if not resume or (resume == "auto" and not self.compatible()):
            if self.compatible():
                log.info("%s: starting afresh (use --resume to continue the checkpoint in %s)", self.name, path)
            else:
                log.info("%s: starting afresh (the checkpoint in %s was made with other inputs or settings)",
                         self.name, path)
            return
        if not self.compatible():
            raise AdabertError(f"{path}: the checkpoint was made with other inputs or settings; use the same "
                               "options, or delete it to start afresh")
        self.restore()
        log.info("%s: resumed from %s at step %d", self.name, path, self.step)

    # -- the loop ----------------------------------------------------------------------------------------------
    def fit(self, resume: Resume = False, max_steps: int | None = None) -> TrainResult | None:
        """Train to the end; with `max_steps`, stop after that many steps in all (leaving a checkpoint) and
        return None if the end was not reached."""
        self.start(resume)
        self.saved_at = time.monotonic()
        order, order_epoch = self.batches(0), 0
        steps = len(order)
        total = steps * self.epochs
        eval_at = self.eval_steps or {e * steps + p for e in range(self.epochs)
                                      for p in eval_points(steps, self.evals_per_epoch)}
        try:
            for s in progress(range(self.step, total), desc=self.name, initial=self.step, total=total):
                epoch, b = divmod(s, steps)
                if epoch != order_epoch:
                    order, order_epoch = self.batches(epoch), epoch
                losses = (self.custom_step(order[b], s) if self.custom_step is not None
                          else self.train_step(order[b], f"{self.name} epoch {epoch + 1} step {b + 1}"))
                self.loss_sums += losses
                self.loss_count += 1
                self.step = s + 1
                evaluated = self.step in eval_at
                if evaluated:
                    self.evaluate_all(epoch, self.loss_sums / self.loss_count, len(eval_at))
                    self.loss_sums, self.loss_count = np.zeros(len(self.trainees)), 0
                stop = max_steps is not None and self.step >= max_steps and self.step < total
                if evaluated or stop or self.checkpoint_due():
                    self.save_if_main()
                if stop:
                    log.info("%s: stopped at step %d of %d; continue with --resume", self.name, self.step, total)
                    return None
        except NonFiniteError as e:
            kept = (f"the last good checkpoint (step {read_record(self.checkpoint)['step']}) is kept in "
                    f"{self.checkpoint}" if self.checkpoint is not None and self.checkpoint.is_file()
                    else "no checkpoint had been written yet")
            raise NonFiniteError(f"{e}; {kept}") from None
        if self.select:
            if any(state is None for state in self.best_state):
                raise AdabertError(f"{self.name}: no evaluation point was reached (no training rows?)")
            for t, state in zip(self.trainees, self.best_state):
                t.model.load_state_dict(state)
        best = int(np.argmax(self.best))
        return TrainResult(best, self.best[best], self.history, list(self.best))

    def checkpoint_due(self) -> bool:
        """A checkpoint by step count (`checkpoint_every`) or by time since the last one (`checkpoint_seconds`)."""
        if self.checkpoint_every and self.step % self.checkpoint_every == 0:
            return True
        return (self.checkpoint_seconds is not None
                and time.monotonic() - self.saved_at >= self.checkpoint_seconds)

    def train_step(self, rows: np.ndarray, where: str) -> list[float]:
        for t in self.trainees:
            t.model.train()
            if t.extra is not None:
                t.extra.train()
        local = distributed.shard(rows)
        losses, terms = self.loss(local)
        check_terms(where, **{k: distributed.mean_over_processes(v, len(local)) for k, v in terms.items()})
        for t, loss in zip(self.trainees, losses):
            t.opt.zero_grad(set_to_none=True)
            (loss * distributed.share(len(local), len(rows))).backward()
            distributed.average_gradients([p for g in t.opt.param_groups for p in g["params"]])
            clip_checked(t.model.named_parameters(), self.clip, where)
            t.opt.step()
        for t in self.trainees:
            if t.sched is not None:
                t.sched.step()
        return [float(distributed.mean_over_processes(loss, len(local))) for loss in losses]

    def evaluate_all(self, epoch: int, mean_losses: np.ndarray, evals: int) -> None:
        several = len(self.trainees) > 1
        for i, t in enumerate(self.trainees):
            with torch.no_grad():
                m = self.evaluate(t.model)
            self.history.append({"step": self.step, "epoch": epoch + 1, **({"model": i} if several else {}),
                                 "loss": float(mean_losses[i]), "holdout": m})
            if self.log_evals:
                log.log(summary_level(len(self.history) - 1, evals * len(self.trainees)),
                        "%s step %d%s: loss %.4f, held-out %s", self.name, self.step,
                        f" (model {i + 1})" if several else "", mean_losses[i],
                        ", ".join(f"{k} {v:.2f}" for k, v in m.items()))
            if m[self.metric] > self.best[i]:
                self.best[i] = m[self.metric]
                if self.select:
                    self.best_state[i] = copy.deepcopy(t.model.state_dict())


def remove_partial(output_dir: Path) -> None:
    """Drop the checkpoints of a stage whose output is complete."""
    shutil.rmtree(partial_dir(output_dir), ignore_errors=True)
