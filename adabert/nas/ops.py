"""The candidate ops: name -> factory(hidden) with one call signature, `op(x, mask) -> y`.

x: [B, T, H], zero at padded positions; mask: [B, T] bool (True at real tokens); y: [B, T, H], zero at padded
positions. Every op only mixes positions through zero-padded windows, so padding a batch further never changes
the outputs at real positions.

- cnn{k}: Conv1d (same padding) -> ReLU -> LayerNorm over H without affine parameters. A learnable output
  gain would let training set the op's scale so that its straight-through architecture gradient averages out
  to zero, while parameter-free ops have no gain and keep a consistent gradient: the search would then drift
  to parameter-free ops for no reason of accuracy (collapse). Every op's output is at the scale of its input.
- dil_cnn{k}: the same with dilation 2 (a real dilated convolution: receptive field 2k-1).
- max_pool3 / avg_pool3: stride-1 pooling over 3 positions; pads are -inf for max and left out of the mean.
- identity, zero.
- attn: light multi-head self-attention over the real tokens (`AttentionOp`). Not one of AdaBERT's ten ops; the
  space `adabert-attn` adds it. The key mask makes its outputs at real positions independent of padding too.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class ConvOp(nn.Module):
    def __init__(self, hidden: int, kernel: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(hidden, hidden, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation)
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        return self.norm(y) * mask.unsqueeze(-1).to(y.dtype)


class MaxPoolOp(nn.Module):
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # The max of three shifted views (rather than F.max_pool1d) keeps the length dynamic in ONNX export.
        m = mask.unsqueeze(-1)
        p = F.pad(x.masked_fill(~m, float("-inf")), (0, 0, 1, 1), value=float("-inf"))
        y = torch.maximum(torch.maximum(p[:, :-2], p[:, 1:-1]), p[:, 2:])
        return y.masked_fill(~m, 0.0)


class AvgPoolOp(nn.Module):
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(x.dtype)
        total = F.avg_pool1d((x * m).transpose(1, 2), 3, stride=1, padding=1, count_include_pad=True)
        count = F.avg_pool1d(m.transpose(1, 2), 3, stride=1, padding=1, count_include_pad=True)
        return (total / count.clamp_min(1e-6)).transpose(1, 2) * m


class AttentionOp(nn.Module):
    """Content-based mixing over the whole sentence, light enough to sit beside the convolutions.

        q = W_q x + b_q, k = W_k x + b_k        [B, T, H] -> n heads of [B, T, d], d = H / (4 n)
        v_h = x[..., h H/n : (h+1) H/n]          the input itself, split into n heads
        y = LayerNorm(concat_h softmax(q_h k_h^T / sqrt(d) + pad) v_h) * mask

    n = H / 32 heads (one when H is not a multiple of 32); 2 (H^2 / 4 + H / 4) parameters (8,256 at H = 128). Like
    the pools it moves features between positions without a value projection, but which positions it averages is
    chosen by content over the whole sentence rather than by a 3-wide window. `pad` is the dtype's lowest value at
    padded keys (not -inf: a row with no real token stays finite and is zeroed by the mask).
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.heads = hidden // 32 if hidden % 32 == 0 else 1
        self.key_dim = max(1, hidden // (4 * self.heads))
        self.qk = nn.Linear(hidden, 2 * self.heads * self.key_dim)
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k = self.qk(x).unflatten(-1, (2, self.heads, self.key_dim)).permute(2, 0, 3, 1, 4).unbind(0)  # [B, n, T, d]
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.key_dim)                                # [B, n, T, T]
        scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
        v = x.unflatten(-1, (self.heads, -1)).transpose(1, 2)                                     # [B, n, T, H/n]
        y = (torch.softmax(scores, -1) @ v.to(scores.dtype)).transpose(1, 2).flatten(2)          # [B, T, H]
        return self.norm(y) * mask.unsqueeze(-1).to(y.dtype)


class IdentityOp(nn.Module):
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x


class ZeroOp(nn.Module):
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


OPS: dict[str, Callable[[int], nn.Module]] = {
    "cnn3": lambda h: ConvOp(h, 3),
    "cnn5": lambda h: ConvOp(h, 5),
    "cnn7": lambda h: ConvOp(h, 7),
    "dil_cnn3": lambda h: ConvOp(h, 3, dilation=2),
    "dil_cnn5": lambda h: ConvOp(h, 5, dilation=2),
    "dil_cnn7": lambda h: ConvOp(h, 7, dilation=2),
    "max_pool3": lambda h: MaxPoolOp(),
    "avg_pool3": lambda h: AvgPoolOp(),
    "identity": lambda h: IdentityOp(),
    "attn": AttentionOp,
    "zero": lambda h: ZeroOp(),
}


def register_op(name: str, factory: Callable[[int], nn.Module]) -> None:
    """Add an op to the registry: `factory(hidden)` must return a module with `forward(x, mask)` as above."""
    if name in OPS:
        raise ValueError(f"op {name!r} is already registered")
    OPS[name] = factory


def build_op(name: str, hidden: int) -> nn.Module:
    return OPS[name](hidden)
