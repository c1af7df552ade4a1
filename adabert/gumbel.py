"""Gumbel-softmax relaxation of categorical choices, and the temperature schedule.

    y = softmax((logits + g) / tau),  g = -log(-log(u)),  u ~ U(0, 1)
    hard (straight-through): w = onehot(argmax y) - stopgrad(y) + y   (value one-hot, gradient of y)
"""

from __future__ import annotations

import math

import torch


def gumbel_softmax(logits: torch.Tensor, tau: float, hard: bool = True,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample relaxed one-hot weights over the last axis.

    logits [..., n] -> (weights [..., n], index [...]): index is the sampled choice (argmax of y).
    """
    u = torch.rand(logits.shape, generator=generator, device="cpu").to(logits.device)
    g = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))
    y = torch.softmax((logits + g) / tau, dim=-1)
    index = y.argmax(-1)
    if not hard:
        return y, index
    onehot = torch.zeros_like(y).scatter_(-1, index.unsqueeze(-1), 1.0)
    return onehot - y.detach() + y, index


def tau_schedule(step: int, total_steps: int, tau_start: float, tau_end: float) -> float:
    """Exponential annealing: tau(s) = tau_start * (tau_end / tau_start) ** (s / (S - 1)), s = 0..S-1."""
    if total_steps <= 1:
        return tau_end
    frac = min(1.0, step / (total_steps - 1))
    return tau_start * math.exp(frac * math.log(tau_end / tau_start))
