"""Step schedules shared by the training loops: epochs raised to a minimum of steps, cosine learning-rate decay and
evaluation points."""

from __future__ import annotations

import math

import torch

from adabert.core.runtime import log


def epochs_to_reach(stage: str, epochs: int, min_steps: int, steps_per_epoch: int) -> int:
    """The epochs a stage runs: `epochs`, raised to the fewest whole epochs of at least `min_steps` steps (small
    tasks train for more epochs, not for fewer updates); a raise is logged under the stage's name."""
    raised = max(epochs, -(-min_steps // max(1, steps_per_epoch)))
    if raised > epochs:
        log.info("%s: %d epochs of %d steps, to reach --min-steps %d", stage, raised, steps_per_epoch, min_steps)
    return raised


def cosine_decay(opt: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """lr(s) = lr0 * (1 + cos(pi * min(s, S) / S)) / 2 over S = total_steps."""
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))


def eval_points(steps_per_epoch: int, evals_per_epoch: int) -> set[int]:
    """1-based steps within an epoch after which to evaluate: evenly spaced, the last at the epoch's end."""
    return {round(steps_per_epoch * (i + 1) / evals_per_epoch) for i in range(evals_per_epoch)}
