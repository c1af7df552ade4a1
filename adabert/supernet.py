"""The supernet: stacked search cells over projected teacher embeddings, one head per cell.

One set of architecture logits `alpha` [E, n_ops] is shared by every cell (one cell type); each cell has its own
op weights. `depth_logits` [Kmax] give the distribution over the number of cells K = 1..Kmax.

A forward pass runs one `Sample`: op weights per edge and a depth. In hard mode (the default) only the sampled
op of each edge and only the first K cells run (single path, GDAS-style); the straight-through weights still
carry gradients to alpha and to the depth logits. In soft mode every op of every edge and all Kmax cells run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adabert.embedding import ProjectedEmbedding
from adabert.gumbel import gumbel_softmax
from adabert.ops import build_op
from adabert.search_space import SearchSpace

DROPPED = -1  # op index of an edge that a derived cell does not keep


@dataclass
class Sample:
    """One architecture drawn from the supernet.

    op_weights [E, n_ops]: straight-through one-hot (hard), relaxed weights (soft) or constants (fixed).
    op_index [E]: the op each edge runs in hard mode (DROPPED: the edge is skipped); None in soft mode.
    depth_weights [Kmax]: weights over depths; depth: the number of cells to run.
    """

    op_weights: torch.Tensor
    op_index: list[int] | None
    depth_weights: torch.Tensor
    depth: int


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, T, H], [B, T] -> [B, H]: the mean over real positions."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


class Head(nn.Module):
    """Masked mean pooling, dropout, linear classifier: [B, T, H] -> [B, C]."""

    def __init__(self, hidden: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_labels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(masked_mean(x, mask)))


def cell_output(nodes: list[torch.Tensor], masks: list[torch.Tensor], node_logits: torch.Tensor,
                s1: torch.Tensor, norm: nn.LayerNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """out = LayerNorm(s1 + sum_n softmax(node_logits)[n] * node_n), zero outside the union of the node masks.

    The residual from the previous cell and the normalisation keep activations in range however many cells
    are stacked and whichever ops are sampled (without them a random deep single path does not train).
    """
    w = torch.softmax(node_logits, 0)
    out = s1
    mask = masks[0]
    for n, (x, m) in enumerate(zip(nodes, masks)):
        out = out + w[n] * x
        mask = mask | m
    return norm(out) * mask.unsqueeze(-1).to(out.dtype), mask


class SearchCell(nn.Module):
    """A cell whose every edge holds all candidate ops. Intermediate node j is the mean of its incoming edges;
    the output combines the intermediate nodes (`cell_output`). A node's mask is the union of its inputs' masks
    (a pair's two sentences have two masks)."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space
        self.edges = nn.ModuleList(nn.ModuleList(build_op(o, space.hidden_size) for o in space.ops)
                                   for _ in space.edges)
        self.node_logits = nn.Parameter(torch.zeros(space.intermediate_nodes))
        self.norm = nn.LayerNorm(space.hidden_size)
        self._zero = space.ops.index("zero") if "zero" in space.ops else None

    def forward(self, s0: torch.Tensor, m0: torch.Tensor, s1: torch.Tensor, m1: torch.Tensor,
                sample: Sample) -> tuple[torch.Tensor, torch.Tensor]:
        states, masks, counts = [s0, s1], [m0, m1], [1, 1]
        w = sample.op_weights
        for e, (i, j) in enumerate(self.space.edges):
            if j == len(states):
                states[j - 1] = states[j - 1] / max(counts[j - 1], 1)
                states.append(torch.zeros_like(s1))
                masks.append(torch.zeros_like(m1))
                counts.append(0)
            index = None if sample.op_index is None else sample.op_index[e]
            if index == DROPPED:
                continue
            masks[j] = masks[j] | masks[i]
            counts[j] += 1
            if index is None:
                y = sum(w[e, k] * op(states[i], masks[i]) for k, op in enumerate(self.edges[e]))
            elif index == self._zero:
                continue
            else:
                y = w[e, index] * self.edges[e][index](states[i], masks[i])
            states[j] = states[j] + y
        states[-1] = states[-1] / max(counts[-1], 1)
        return cell_output(states[2:], masks[2:], self.node_logits, s1, self.norm)


class Supernet(nn.Module):
    """share_cells: one set of cell weights used at every depth during search (the derived student still gets
    its own weights per cell). With Kmax separate cells each conv of each edge is trained on a small share of
    the steps, and under-trained convs lose the comparison with parameter-free ops (collapse)."""

    def __init__(self, space: SearchSpace, word: torch.Tensor, pos: torch.Tensor, num_labels: int,
                 share_cells: bool = False) -> None:
        super().__init__()
        self.space = space
        self.embed = ProjectedEmbedding(word, pos, space.hidden_size, space.dropout)
        self.cells = nn.ModuleList(SearchCell(space) for _ in range(1 if share_cells else space.max_cells))
        self.heads = nn.ModuleList(Head(space.hidden_size, num_labels, space.dropout)
                                   for _ in range(space.max_cells))
        self.alpha = nn.Parameter(torch.randn(space.num_edges, len(space.ops)) * 1e-3)
        self.depth_logits = nn.Parameter(torch.randn(space.max_cells) * 1e-3)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha, self.depth_logits]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def sample(self, tau: float, hard: bool = True) -> Sample:
        """Draw op weights per edge and a depth with Gumbel-softmax (global torch RNG)."""
        op_w, op_idx = gumbel_softmax(self.alpha, tau, hard)
        d_w, d_idx = gumbel_softmax(self.depth_logits, tau, hard)
        return Sample(op_w, op_idx.tolist() if hard else None, d_w, int(d_idx) + 1)

    def fixed(self, op_index: list[int], depth: int) -> Sample:
        """A deterministic sample: exactly these ops (DROPPED edges skipped) and this depth."""
        w = torch.ones_like(self.alpha).detach()
        d = torch.zeros_like(self.depth_logits).detach()
        d[depth - 1] = 1.0
        return Sample(w, list(op_index), d, depth)

    def forward(self, ids_a: torch.Tensor, mask_a: torch.Tensor, ids_b: torch.Tensor, mask_b: torch.Tensor,
                sample: Sample) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """ids/masks [B, T] -> (logits [B, C], per-cell head logits: K tensors [B, C]).

        logits = sum_{k<=K} depth_weights[k] * head_k: in hard mode its value is head_K, and the
        straight-through weights pass gradients to the depth logits; in soft mode all Kmax cells run.
        """
        xa = self.embed(ids_a, mask_a)
        xb = xa if ids_b is ids_a else self.embed(ids_b, mask_b)
        s0, m0, s1, m1 = xa, mask_a, xb, mask_b
        depth = sample.depth if sample.op_index is not None else self.space.max_cells
        heads = []
        for k in range(depth):
            out, mask = self.cells[min(k, len(self.cells) - 1)](s0, m0, s1, m1, sample)
            heads.append(self.heads[k](out, mask))
            s0, m0, s1, m1 = s1, m1, out, mask
        logits = sum(sample.depth_weights[k] * h for k, h in enumerate(heads))
        return logits, heads[: sample.depth]
