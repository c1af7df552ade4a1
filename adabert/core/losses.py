"""Loss pieces, each a small pure function on tensors: CE/MSE, Hinton KD, probe KD, per-depth search losses and
the efficiency penalty."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def layer_map(k: int, num_cells: int, teacher_layers: int) -> int:
    """Teacher probe layer m(k) matched to student cell k (1-based) of a K-cell student:
    m(k) = floor(k * L / K + 1/2), in 0..L (0 is the embedding layer)."""
    return int(math.floor(k * teacher_layers / num_cells + 0.5))


def hard_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross entropy with gold labels (logits [B, C], y [B] int), or MSE for regression (logits [B, 1], y float)."""
    if y.is_floating_point():
        return F.mse_loss(logits[:, 0], y)
    return F.cross_entropy(logits, y)


def soft_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-example KD term, shape [...]: student/teacher [..., C].

    Classification: T^2 * KL(softmax(t / T) || softmax(s / T)) (Hinton et al.: the T^2 keeps gradient
    magnitudes comparable across temperatures). Regression (C = 1): squared difference.
    """
    if student.shape[-1] == 1:
        return (student[..., 0] - teacher[..., 0]) ** 2
    t = F.log_softmax(teacher / temperature, -1)
    s = F.log_softmax(student / temperature, -1)
    return (t.exp() * (t - s)).sum(-1) * temperature**2


def kd_weights(alpha: float, beta: float | None = None) -> tuple[float, float]:
    """(w_CE, w_KD) of L = w_CE * CE + w_KD * KD.

    The seed notes spell the same formula twice: alpha*CE + (1-alpha)*KD (seed 000, beta=None) and
    alpha*CE + beta*KD (seed 002, beta given). Both are this one function.
    """
    return alpha, (1 - alpha) if beta is None else beta


def hinton_kd(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, temperature: float, alpha: float,
              beta: float | None = None) -> torch.Tensor:
    """Hinton et al. (2015): L = w_CE * CE(s, y) + w_KD * T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over
    the batch; s, t [B, C], y [B]; (w_CE, w_KD) = `kd_weights(alpha, beta)`."""
    w_ce, w_kd = kd_weights(alpha, beta)
    return w_ce * hard_loss(student, y) + w_kd * soft_kd(student, teacher, temperature).mean()


def mse_logits(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Tang et al. (2019) distillation on logits: mean_b ||s_b - t_b||_2^2; s, t [B, C]."""
    return ((student - teacher) ** 2).sum(-1).mean()


def probe_weights(probe_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example weights over the matched teacher layers: w[b, k] = softmax_k(-CE(probe_k(x_b), y_b)).

    probe_logits [B, K, C] -> [B, K]; for regression the negative squared error replaces -CE.
    """
    if y.is_floating_point():
        err = (probe_logits[..., 0] - y[:, None]) ** 2
    else:
        err = -F.log_softmax(probe_logits, -1).gather(-1, y[:, None, None].expand(-1, probe_logits.shape[1], 1))[..., 0]
    return torch.softmax(-err, dim=-1)


def probe_kd(heads: list[torch.Tensor], probe_logits: torch.Tensor, y: torch.Tensor,
             temperature: float) -> torch.Tensor:
    """Layer-wise KD of a K-cell student from teacher probes.

    heads: K tensors [B, C] (student cell k's head); probe_logits [B, L+1, C]; y [B].
        L_KD = mean_b sum_k w[b, k] * kd(head_k, probe_{m(k)}),  w = probe_weights of the matched layers.
    """
    num_cells, layers = len(heads), probe_logits.shape[1] - 1
    idx = [layer_map(k, num_cells, layers) for k in range(1, num_cells + 1)]
    teacher = probe_logits[:, idx]
    student = torch.stack(heads, 1)
    w = probe_weights(teacher, y)
    return (w * soft_kd(student, teacher, temperature)).sum(1).mean()


def feature_kd(pooled: list[torch.Tensor], targets: torch.Tensor, projs: list) -> torch.Tensor:
    """Sentence-vector KD of a K-cell student (`teacher.features`): cell k's sentence vector u_k [B, H], through a
    learned linear map P_k: H -> r, regresses the teacher's target at the matched layer m(k):

        L_F = mean_k mean_b ||P_k(u_k[b]) - c[b, m(k)]||^2 / r

    pooled: K tensors [B, H]; targets c [B, L+1, r] (each component of unit mean square, so L_F = 1 at P = 0);
    projs: K modules H -> r.
    """
    num_cells, layers = len(pooled), targets.shape[1] - 1
    terms = [((proj(u) - targets[:, layer_map(k, num_cells, layers)]) ** 2).mean()
             for k, (u, proj) in enumerate(zip(pooled, projs), 1)]
    return torch.stack(terms).mean()


def depth_losses(heads: list[torch.Tensor], y: torch.Tensor, teacher: torch.Tensor | None, gamma: float,
                 temperature: float) -> torch.Tensor:
    """The loss of every candidate depth, each read out by its own cell's head: [K].

        L_k = (1 - gamma) * CE(head_k, y) + gamma * mean_b kd(head_k, teacher)      k = 1..K

    heads: K tensors [B, C]; teacher [B, C]: the teacher's logits (None when gamma = 0).
    """
    out = []
    for h in heads:
        loss = (1 - gamma) * hard_loss(h, y)
        if gamma > 0:
            loss = loss + gamma * soft_kd(h, teacher, temperature).mean()
        out.append(loss)
    return torch.stack(out)


def efficiency_penalty(expected_cost: torch.Tensor, target: float | None, max_cost: float) -> torch.Tensor:
    """L_E: |E[cost] / target - 1| with a budget (two-sided, as TuNAS's absolute reward: the search must land on
    the budget, not merely below it), else E[cost] / max_cost in [0, 1]."""
    if target is not None:
        return (expected_cost / target - 1).abs()
    return expected_cost / max_cost
