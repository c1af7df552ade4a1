"""Loss pieces. Each is a small pure function on tensors; the search loss returns its parts for logging.

    L = (1 - gamma) * L_CE + gamma * L_KD + beta * L_E
"""

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


def efficiency_loss(alpha: torch.Tensor, depth_logits: torch.Tensor,
                    op_cost: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Expected normalised cost of the architecture distribution.

        c_cell = mean_e sum_o softmax(alpha)[e, o] * cost(o)          in [0, 1]
        E[K]   = sum_k k * softmax(depth_logits)[k - 1]
        L_E    = E[K] / Kmax * c_cell

    Returns (L_E, details) with c_cell, E[K] and the share of parameter-free ops in expectation.
    """
    p = torch.softmax(alpha, -1)
    q = torch.softmax(depth_logits, -1)
    kmax = depth_logits.shape[0]
    cell = (p * op_cost).sum(-1).mean()
    exp_depth = (q * torch.arange(1, kmax + 1, dtype=q.dtype, device=q.device)).sum()
    loss = exp_depth / kmax * cell
    return loss, {"cell_cost": float(cell.detach()), "expected_depth": float(exp_depth.detach())}


def search_loss(logits: torch.Tensor, heads: list[torch.Tensor], y: torch.Tensor, probe_logits: torch.Tensor,
                alpha: torch.Tensor, depth_logits: torch.Tensor, op_cost: torch.Tensor, gamma: float, beta: float,
                temperature: float) -> tuple[torch.Tensor, dict[str, float]]:
    """L = (1 - gamma) * CE(logits, y) + gamma * L_KD(heads, probes) + beta * L_E; returns (L, parts)."""
    ce = hard_loss(logits, y)
    kd = probe_kd(heads, probe_logits, y, temperature) if gamma > 0 else logits.new_zeros(())
    eff, details = efficiency_loss(alpha, depth_logits, op_cost)
    total = (1 - gamma) * ce + gamma * kd + beta * eff
    return total, {"total": float(total.detach()), "ce": float(ce.detach()), "kd": float(kd.detach()),
                   "efficiency": float(eff.detach()), **details}
