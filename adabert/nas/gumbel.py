"""Sampling architecture choices with the Gumbel-max trick, and the sampling temperature schedule.

    index = argmax_o (logits_o / tau + g_o),  g = -log(-log(u)),  u ~ U(0, 1)

draws index ~ softmax(logits / tau): tau = 1 samples the architecture distribution itself, tau -> 0 its argmax,
tau = inf (or logits all equal) uniformly.
"""

from __future__ import annotations

import math

import torch


def gumbel_sample(logits: torch.Tensor, tau: float) -> torch.Tensor:
    """logits [..., n] -> sampled indices [...] with P(index = o) = softmax(logits / tau)_o (global torch RNG)."""
    u = torch.rand(logits.shape, device="cpu").clamp(1e-10, 1.0 - 1e-7)
    g = -torch.log(-torch.log(u))
    return (logits.detach().float().cpu() / tau + g).argmax(-1)


def tau_schedule(step: int, total_steps: int, tau_start: float, tau_end: float) -> float:
    """Exponential annealing: tau(s) = tau_start * (tau_end / tau_start) ** (s / (S - 1)), s = 0..S-1."""
    if total_steps <= 1:
        return tau_end
    frac = min(1.0, step / (total_steps - 1))
    return tau_start * math.exp(frac * math.log(tau_end / tau_start))
