"""The supernet: stacked search cells over projected teacher embeddings, one readout per cell.

One set of architecture logits `alpha` [E, n_ops] is shared by every cell (one cell type); each cell has its own
op weights. `depth_logits` [Kmax] give the distribution over the number of cells K = 1..Kmax.

A forward pass runs one `Sample` (single path, as in GDAS/SPOS): the chosen op of each edge and only the first K
cells; it returns the readout of every cell it ran, so that one pass scores every depth <= K. The architecture
logits get no gradient through the network: `adabert.nas.estimator` scores the choices from the losses instead.

Sentence pairs are encoded siamese: sentence A and sentence B run through the same cells as two rows of one
batch, and each readout compares them (`Readout`); with the space's `pair_inputs: cross` the first cell also
reads the other sentence (`cell_inputs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adabert.nas.embedding import ProjectedEmbedding
from adabert.nas.ops import build_op
from adabert.nas.search_space import SearchSpace

DROPPED = -1  # op index of an edge that a derived cell does not keep


@dataclass
class Sample:
    """One architecture drawn from the supernet: op_index [E] (DROPPED: the edge is skipped) and a depth."""

    op_index: list[int]
    depth: int


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, T, H], [B, T] -> [B, H]: the mean over real positions."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def soft_align(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each word's view of the other sentence, [2B, T, H] -> [2B, T, H] (rows :B sentence a, rows B: sentence b).

    e = a b^T / sqrt(H) [B, T, T]; a~ = softmax over b's real positions of e, times b; b~ likewise from e^T and a;
    returns [a~; b~]. Parameter-free: what it compares is learned by whatever produced x.
    """
    a, b = x.unflatten(0, (2, -1)).unbind(0)
    ma, mb = mask.bool().unflatten(0, (2, -1)).unbind(0)
    e = a @ b.transpose(1, 2) / a.shape[-1] ** 0.5
    low = torch.finfo(e.dtype).min  # not -inf: an empty sentence gives a uniform row, not NaN
    a_t = torch.softmax(e.masked_fill(~mb.unsqueeze(1), low), -1) @ b
    b_t = torch.softmax(e.transpose(1, 2).masked_fill(~ma.unsqueeze(1), low), -1) @ a
    return torch.cat([a_t, b_t])


def align_pair(x: torch.Tensor, mask: torch.Tensor, proj: nn.Linear, gate: torch.Tensor,
               drop: nn.Module) -> torch.Tensor:
    """Soft alignment of a pair's token states (ESIM's local inference, Chen et al. 2017), [2B, T, H] -> same.

    With t = `soft_align(x)`, each state x gets x + g relu(W [x, t, x * t, x - t]) with one W [4H -> H] for both
    sides and a scalar gate g that starts at 0: a fresh readout is the pooled one, and the alignment comes in as
    it helps (ungated, one MRPC student in 16 stayed at the majority class).
    """
    t = soft_align(x, mask)
    return x + gate * torch.relu(proj(drop(torch.cat([x, t, x * t, x - t], -1))))


class Readout(nn.Module):
    """Masked mean pooling, then a classifier.

    Single sentences: [B, T, H] -> pool u [B, H] -> dropout -> linear -> [B, C].
    Pairs (the batch holds A in rows :B and B in rows B:): with `align`, the token states are first aligned across
    the two sentences (`align_pair`); then u, v [B, H] -> f = [u, v, u * v, |u - v|] [B, 4H] (InferSent-style
    matching features: the product and the difference let a linear layer compare the sentences dimension by
    dimension; the alignment lets it compare them word by word, which pooled vectors cannot: +1.3 F1 on MRPC with
    augmentation, docs/results.md). `linear` (the space's `pair_readout: linear`): f -> dropout -> linear 4H -> C;
    otherwise (`mlp`) f -> dropout -> linear 4H -> H -> tanh -> dropout -> linear H -> C. The linear readout has
    4H^2 fewer parameters, so a budget buys more cell.
    """

    def __init__(self, hidden: int, num_labels: int, dropout: float, pair: bool = False, align: bool = True,
                 linear: bool = False) -> None:
        super().__init__()
        self.pair = pair
        self.drop = nn.Dropout(dropout)
        self.align = nn.Linear(4 * hidden, hidden) if pair and align else None
        self.align_gate = nn.Parameter(torch.zeros(())) if self.align is not None else None
        self.match = nn.Linear(4 * hidden, hidden) if pair and not linear else None
        self.out = nn.Linear(4 * hidden if pair and linear else hidden, num_labels)

    @staticmethod
    def of(space: SearchSpace, num_labels: int, pair: bool, dropout: float | None = None) -> "Readout":
        """The readout `space` asks for (its `pair_inputs` and `pair_readout`); dropout: the space's unless given."""
        return Readout(space.hidden_size, num_labels, space.dropout if dropout is None else dropout, pair,
                       space.pair_inputs == "siamese", space.pair_readout == "linear")

    def pooled(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The sentence (or pair) vector [B, out.in_features] the classifier sees."""
        if self.align is not None:
            x = align_pair(x, mask, self.align, self.align_gate, self.drop)
        h = masked_mean(x, mask)
        if self.pair:
            u, v = h.unflatten(0, (2, -1)).unbind(0)  # (not chunk: keeps the batch size dynamic in ONNX export)
            h = torch.cat([u, v, u * v, (u - v).abs()], -1)
            if self.match is not None:
                h = torch.tanh(self.match(self.drop(h)))
        return h

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(self.pooled(x, mask)))


def cell_inputs(embed: nn.Module, pair: bool, cross: bool, ids_a: torch.Tensor, mask_a: torch.Tensor,
                ids_b: torch.Tensor, mask_b: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The first cell's inputs (s0, m0, s1, m1): states [B, T, H] and masks [B, T]; for pairs [2B, T, H], A's rows
    then B's (same T: the batch pads both segments to one length). s0 = s1 = the embeddings, except for pairs with
    `cross` (the space's `pair_inputs: cross`): s0 = `soft_align` of them, the other sentence seen from each word.
    """
    if pair:
        mask = torch.cat([mask_a, mask_b])
        x = embed(torch.cat([ids_a, ids_b]), mask)
        return (soft_align(x, mask) if cross else x), mask, x, mask
    x = embed(ids_a, mask_a)
    return x, mask_a, x, mask_a


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
    """A cell whose every edge holds all candidate ops; a sample picks one per edge. Intermediate node j is the
    mean of its incoming (non-zero) edges; the output combines the intermediate nodes (`cell_output`)."""

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
        for e, (i, j) in enumerate(self.space.edges):
            if j == len(states):
                states[j - 1] = states[j - 1] / max(counts[j - 1], 1)
                states.append(torch.zeros_like(s1))
                masks.append(torch.zeros_like(m1))
                counts.append(0)
            index = sample.op_index[e]
            if index == DROPPED:
                continue
            masks[j] = masks[j] | masks[i]
            counts[j] += 1
            if index != self._zero:
                states[j] = states[j] + self.edges[e][index](states[i], masks[i])
        states[-1] = states[-1] / max(counts[-1], 1)
        return cell_output(states[2:], masks[2:], self.node_logits, s1, self.norm)


class Supernet(nn.Module):
    """share_cells: one set of cell weights used at every depth during search (the derived student still gets
    its own weights per cell)."""

    def __init__(self, space: SearchSpace, word: torch.Tensor, pos: torch.Tensor, num_labels: int,
                 share_cells: bool = False, pair: bool = False) -> None:
        super().__init__()
        self.space = space
        self.pair = pair
        self.embed = ProjectedEmbedding(word, pos, space.hidden_size, space.dropout)
        self.cells = nn.ModuleList(SearchCell(space) for _ in range(1 if share_cells else space.max_cells))
        self.heads = nn.ModuleList(Readout.of(space, num_labels, pair) for _ in range(space.max_cells))
        self.alpha = nn.Parameter(torch.zeros(space.num_edges, len(space.ops)))
        self.depth_logits = nn.Parameter(torch.zeros(space.max_cells))
        self.dropouts = [m for m in self.modules() if isinstance(m, nn.Dropout)]  # a plain list: not registered

    def set_dropout(self, on: bool) -> None:
        """Dropout on or off, the rest of the modes untouched: what `train()` / `eval()` change in this network
        (no other layer reads the mode), without their walk over every submodule (1,711 in the default space:
        5-17 ms a call, against a 150 ms search step on a GPU)."""
        for m in self.dropouts:
            m.training = on

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha, self.depth_logits]

    def named_weight_parameters(self) -> list[tuple[str, nn.Parameter]]:
        arch = {id(p) for p in self.arch_parameters()}
        return [(n, p) for n, p in self.named_parameters() if id(p) not in arch]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_weight_parameters()]

    def forward(self, ids_a: torch.Tensor, mask_a: torch.Tensor, ids_b: torch.Tensor, mask_b: torch.Tensor,
                sample: Sample) -> list[torch.Tensor]:
        """ids/masks [B, T] -> the readout logits of cells 1..K: K tensors [B, C]."""
        s0, m0, s1, m1 = cell_inputs(self.embed, self.pair, self.space.pair_inputs == "cross", ids_a, mask_a, ids_b,
                                     mask_b)
        heads = []
        for k in range(sample.depth):
            out, m = self.cells[min(k, len(self.cells) - 1)](s0, m0, s1, m1, sample)
            heads.append(self.heads[k](out, m))
            s0, m0, s1, m1 = s1, m1, out, m
        return heads
