"""Intermediate-representation distillation losses (seed 002): the student matches what the teacher computes
inside, not only its outputs. Each is a pure function on tensors and returns a scalar.

Shapes: token states [B, T, D] with a mask [B, T] (True at real tokens); sentence vectors [B, D]; attention
probabilities [B, heads, T, T]. Student and teacher widths may differ unless stated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` [B, T] over positions where mask [B, T] is True."""
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1)


def fitnets(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, proj: nn.Module) -> torch.Tensor:
    """FitNets hint loss (Romero et al., 2015) with a learned regressor W: D_s -> D_t:
        L = mean over real tokens (b, i) of ||W s_{b,i} - t_{b,i}||_2^2 / D_t
    (divided by the teacher's width so that the term's scale does not grow with it)."""
    return _masked_mean(((proj(student) - teacher) ** 2).mean(-1), mask)


def attention_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention transfer for transformers: with A = attention probabilities averaged over heads [B, T, T],
        L = mean over real query tokens (b, i) of KL(A_t[b, i, :] || A_s[b, i, :]).
    Averaging heads first lets students with another number of heads take part."""
    a_s = student.float().mean(1).clamp_min(1e-12)
    a_t = teacher.float().mean(1).clamp_min(1e-12)
    kl = (a_t * (a_t.log() - a_s.log())).sum(-1)
    return _masked_mean(kl, mask)


def nst_mmd(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Neuron selectivity transfer (Huang & Wang, 2017): squared MMD, with the polynomial kernel
    k(x, y) = (x . y)^2, between the student's and the teacher's neurons, each neuron being its activation
    pattern over the sentence's tokens, L2-normalised:
        f_i = S[b, :, i] / ||S[b, :, i]||,   g_j = T[b, :, j] / ||T[b, :, j]||  (padded tokens zeroed)
        MMD^2_b = mean_{i,i'} k(f_i, f_i') + mean_{j,j'} k(g_j, g_j') - 2 mean_{i,j} k(f_i, g_j)
    and L = mean_b MMD^2_b. Widths may differ."""
    m = mask.unsqueeze(-1).to(student.dtype)
    f = F.normalize((student * m).transpose(1, 2), dim=-1)  # [B, D_s, T]
    g = F.normalize((teacher * m).transpose(1, 2), dim=-1)  # [B, D_t, T]

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a @ b.transpose(1, 2)).pow(2).mean((1, 2))

    return (k(f, f) + k(g, g) - 2 * k(f, g)).mean()


def _pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """||x_i - x_j|| for a batch x [B, D] -> [B, B], normalised by their mean over i != j."""
    d = (x[:, None] - x[None]).pow(2).sum(-1).clamp_min(1e-12).sqrt()
    off = ~torch.eye(len(x), dtype=torch.bool, device=x.device)
    d = d * off
    return d / d[off].mean().clamp_min(1e-12)


def _angles(x: torch.Tensor) -> torch.Tensor:
    """cos of the angle at x_j between x_i and x_k: [B, B, B] with entry (j, i, k) = <e_ji, e_jk>,
    e_ji = (x_i - x_j) / ||x_i - x_j||."""
    e = F.normalize(x[None] - x[:, None], dim=-1)  # [j, i, D]
    return e @ e.transpose(1, 2)


def relational(student: torch.Tensor, teacher: torch.Tensor, angle_weight: float = 2.0) -> torch.Tensor:
    """Relational KD (Park et al., 2019) on sentence vectors s [B, D_s], t [B, D_t] (widths may differ):
        L = Huber(psi_D(s), psi_D(t)) + angle_weight * Huber(psi_A(s), psi_A(t))
    psi_D: pairwise distances divided by their mean; psi_A: cosines of the angles of every triplet.
    The paper's weights are 1 (distance) and 2 (angle)."""
    s, t = student.float(), teacher.float()
    dist = F.smooth_l1_loss(_pairwise_distances(s), _pairwise_distances(t))
    return dist + angle_weight * F.smooth_l1_loss(_angles(s), _angles(t))
