"""What an architecture costs, in the user's units, for the efficiency term and the budget of a search.

Per op (measured on the real modules at the space's width H):
- params: parameter count;
- flops: FLOPs of one forward at batch 1 and the space's `cost_length` (`torch.utils.flop_counter`: matmuls and
  convolutions; pools, identity and zero count 0);
- latency_ms: median milliseconds of one forward on the current device at batch 1 and `cost_length`
  (FBNet-style lookup table; warm-up, then the median of repeats, every op timed in turn in each round).

A derived student of K cells costs

    cost = fixed + K * (per_cell + sum over the cell's kept edges of per_op[op])

params: the searched part of the student, i.e. everything but the embedding table (whose size is the vocabulary's,
not the search's): per_cell = node weights + LayerNorm + the cell's readout; fixed = 0.
flops: per_cell = fixed = 0 (the ops dominate); latency_ms: per_cell and fixed are timed too (a cell's residual
and normalisation; the embedding lookup and one readout). Sentence pairs run both sentences: flops and latency
are those of a batch of two.

Under the architecture distribution (softmax(alpha), softmax(depth_logits)) the expected cost is
    E[cost] = fixed + E[K] * (per_cell + sum_j (n_keep / n_j) sum_{e -> j} sum_{o != zero} p~[e, o] per_op[o])
with p~ the probabilities renormalised over the non-zero ops (a derived cell keeps n_keep of the n_j edges into
node j, each with a non-zero op).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from adabert.core.errors import AdabertError
from adabert.nas.arch import Arch
from adabert.nas.config import COST_UNITS
from adabert.nas.ops import build_op
from adabert.nas.search_space import SearchSpace


def interleaved_median_ms(fns: Sequence[Callable[[], object]], device: torch.device, rounds: int = 30,
                          warmup: int = 5) -> list[float]:
    """Median milliseconds of each of `fns`, called in turn, one call each, for `warmup` rounds and then `rounds`
    timed ones. Timing them round-robin rather than one after another lets a change of the machine's load during
    the measurement fall on all of them alike, so their ratios hold even where their absolute times drift. On a GPU
    each call is timed to the end of its kernels (launches return at once)."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    times: list[list[float]] = [[] for _ in fns]
    for r in range(warmup + rounds):
        for fn, out in zip(fns, times):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if r >= warmup:
                out.append((time.perf_counter() - t0) * 1e3)
    return [sorted(t)[len(t) // 2] for t in times]


def readout_params(hidden: int, num_labels: int, pair: bool, align: bool = True, linear: bool = False) -> int:
    """Parameters of one `supernet.Readout`. Pairs: with `align` the alignment (4H -> H and its gate); the
    classifier reads 4H features, through the matching layer (4H -> H, then H -> C) unless `linear` (4H -> C)."""
    if not pair:
        return hidden * num_labels + num_labels
    aligned = 4 * hidden * hidden + hidden + 1 if align else 0
    classifier = 4 * hidden * num_labels if linear else 4 * hidden * hidden + hidden + hidden * num_labels
    return aligned + classifier + num_labels


@dataclass
class CostModel:
    unit: str
    ops: tuple[str, ...]
    per_op: list[float]
    per_cell: float
    fixed: float

    def arch_cost(self, arch: Arch) -> float:
        kept = sum(self.per_op[self.ops.index(op)] for node in arch.cell for _, op in node)
        return self.fixed + arch.num_cells * (self.per_cell + kept)

    def within(self, arch: Arch, target: float, tolerance: float) -> bool:
        """True when the architecture costs target * (1 +- tolerance)."""
        return abs(self.arch_cost(arch) / target - 1) <= tolerance

    def expected(self, space: SearchSpace, alpha: torch.Tensor, depth_logits: torch.Tensor) -> torch.Tensor:
        """E[cost] under softmax(alpha) [E, n_ops] and softmax(depth_logits) [Kmax]; differentiable."""
        c = torch.tensor(self.per_op, dtype=alpha.dtype, device=alpha.device)
        nonzero = torch.tensor([o != "zero" for o in self.ops], device=alpha.device)
        p = torch.softmax(alpha.masked_fill(~nonzero, -math.inf), -1)
        per_edge = (p * c).sum(-1)
        cell = alpha.new_zeros(())
        for j in range(2, 2 + space.intermediate_nodes):
            into = [e for e, (_, jj) in enumerate(space.edges) if jj == j]
            cell = cell + min(space.inputs_per_node, len(into)) / len(into) * per_edge[into].sum()
        q = torch.softmax(depth_logits, -1)
        depth = (q * torch.arange(1, len(q) + 1, dtype=q.dtype, device=q.device)).sum()
        return self.fixed + depth * (self.per_cell + cell)

    def bounds(self, space: SearchSpace) -> tuple[float, float]:
        """(cheapest, dearest) derivable student: 1 cell of the cheapest non-zero ops, Kmax of the dearest."""
        costs = [c for c, o in zip(self.per_op, self.ops) if o != "zero"]
        kept = space.intermediate_nodes * space.inputs_per_node
        return (self.fixed + self.per_cell + kept * min(costs),
                self.fixed + space.max_cells * (self.per_cell + kept * max(costs)))

    def as_dict(self) -> dict:
        return {"unit": self.unit, "ops": list(self.ops), "per_op": self.per_op, "per_cell": self.per_cell,
                "fixed": self.fixed}


def format_amount(value: float, unit: str) -> str:
    """A budget or cost in `unit` as a user reads it: '50,000 params', '1,234,567 flops', '2.42 ms'."""
    return f"{value:.3g} ms" if unit == "latency_ms" else f"{value:,.0f} {unit}"


def measure_cost_model(space: SearchSpace, unit: str, num_labels: int, pair: bool,
                       device: torch.device | None = None) -> CostModel:
    """The cost table of `space` in `unit` (one of COST_UNITS), measured on `device`."""
    if unit not in COST_UNITS:
        raise AdabertError(f"cost unit: expected one of {', '.join(COST_UNITS)}, got {unit!r}")
    device = device or torch.device("cpu")
    if unit == "latency_ms":
        return latency_table(space, num_labels, pair, device)[0]
    h, (x, mask) = space.hidden_size, _example(space, pair, device)
    per_op: list[float] = []
    for name in space.ops:
        op = build_op(name, h).to(device).eval()
        if unit == "params":
            per_op.append(float(sum(p.numel() for p in op.parameters())))
        else:
            counter = FlopCounterMode(display=False)
            with counter, torch.no_grad():
                op(x, mask)
            per_op.append(float(counter.get_total_flops()))
    if unit == "params":
        align, linear = space.pair_inputs == "siamese", space.pair_readout == "linear"
        per_cell = float(space.intermediate_nodes + 2 * h + readout_params(h, num_labels, pair, align, linear))
        return CostModel(unit, space.ops, per_op, per_cell, 0.0)
    return CostModel(unit, space.ops, per_op, 0.0, 0.0)


def _example(space: SearchSpace, pair: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(states [b, cost_length, H], mask [b, cost_length]): what the table's ops are measured on, b = 2 for pairs
    (both sentences run), else 1."""
    batch = 2 if pair else 1
    return (torch.randn(batch, space.cost_length, space.hidden_size, device=device),
            torch.ones(batch, space.cost_length, dtype=torch.bool, device=device))


def latency_table(space: SearchSpace, num_labels: int, pair: bool, device: torch.device | None = None,
                  alongside: Sequence[Callable[[], object]] = ()) -> tuple[CostModel, list[float]]:
    """The latency_ms cost table, and the median ms of each of `alongside` (e.g. real students' forwards), all
    timed in the same rounds (`interleaved_median_ms`), so that a prediction and a measurement see the same load.

    Per op: one forward at batch 1 (pairs: 2) and `cost_length`. per_cell: a cell whose kept edges are all `zero`
    (dropped, in a space without it), i.e. the residual, mean and normalisation overhead. fixed: the embedding
    lookup (for cross pairs with the first cell's alignment) plus one readout.
    """
    from adabert.nas.supernet import DROPPED, Readout, Sample, SearchCell, soft_align

    device = device or torch.device("cpu")
    h, (x, mask) = space.hidden_size, _example(space, pair, device)
    timed = [(i, build_op(name, h).to(device).eval()) for i, name in enumerate(space.ops) if name != "zero"]
    cell = SearchCell(space).to(device).eval()
    sample = Sample([space.ops.index("zero") if "zero" in space.ops else DROPPED] * space.num_edges, 1)
    table = torch.nn.Embedding(30522, h).to(device)
    norm = torch.nn.LayerNorm(h).to(device)
    head = Readout.of(space, num_labels, pair, dropout=0.0).to(device).eval()
    ids = torch.randint(0, 30522, tuple(mask.shape), device=device)

    def embedded() -> torch.Tensor:
        e = norm(table(ids) + x)
        return e + soft_align(e, mask) if pair and space.pair_inputs != "siamese" else e

    fns = [lambda op=op: op(x, mask) for _, op in timed]
    fns += [lambda: cell(x, mask, x, mask, sample), lambda: head(embedded(), mask), *alongside]
    with torch.no_grad():
        ms = interleaved_median_ms(fns, device)
    per_op = [0.0] * len(space.ops)
    for (i, _), t in zip(timed, ms):
        per_op[i] = t
    per_cell, fixed = ms[len(timed)], ms[len(timed) + 1]
    return CostModel("latency_ms", space.ops, per_op, per_cell, fixed), ms[len(timed) + 2:]


Cell = list[list[tuple[int, str]]]  # per intermediate node, its (from_node, op) inputs


def rank_archs(space: SearchSpace, alpha: torch.Tensor, depth_logits: torch.Tensor, model: CostModel, n: int,
               target: float | None = None, tolerance: float = 0.1) -> list[tuple[Cell, int, bool]]:
    """The `n` most probable derivable architectures, best first; with a `target`, those whose cost lies within
    target * (1 +- tolerance).

    Score of an architecture = sum over kept (edge, op) of log p~[e, o] + log q[K] (p~: softmax over non-zero
    ops). Exact: per node every choice of n_keep incoming edges and their ops, the n best per distinct cost
    (costs rounded to 1e-6 relative), then every combination of nodes and every K (scores and costs add, so the
    n best of any total cost are combinations of the n best of each part). Returns [(cell, K, feasible)]; when
    nothing lies within the tolerance, the one architecture closest to the target (feasible False).
    """
    nonzero = [k for k, o in enumerate(space.ops) if o != "zero"]
    logp = torch.log_softmax(alpha.detach().float().cpu()[:, nonzero], -1)
    logq = torch.log_softmax(depth_logits.detach().float().cpu(), -1)
    scale = max(abs(target or model.bounds(space)[1]), 1e-12) * 1e-6
    Part = tuple[float, float, list]  # (score, cost, nodes)

    def keep_best(parts: list[Part]) -> dict[int, list[Part]]:
        by_cost: dict[int, list[Part]] = {}
        for part in parts:
            by_cost.setdefault(round(part[1] / scale), []).append(part)
        return {key: sorted(v, key=lambda x: -x[0])[:n] for key, v in by_cost.items()}

    cells: dict[int, list[Part]] = {0: [(0.0, 0.0, [])]}
    for j in range(2, 2 + space.intermediate_nodes):
        into = [(e, i) for e, (i, jj) in enumerate(space.edges) if jj == j]
        node = [(sum(float(logp[e, o]) for (e, _), o in zip(chosen, ops)),
                 sum(model.per_op[nonzero[o]] for o in ops),
                 sorted((i, space.ops[nonzero[o]]) for (_, i), o in zip(chosen, ops)))
                for chosen in itertools.combinations(into, min(space.inputs_per_node, len(into)))
                for ops in itertools.product(range(len(nonzero)), repeat=len(chosen))]
        best = [p for parts in keep_best(node).values() for p in parts]
        cells = keep_best([(s1 + s2, c1 + c2, n1 + [n2]) for parts in cells.values() for s1, c1, n1 in parts
                           for s2, c2, n2 in best])
    ranked, closest = [], None
    for parts in cells.values():
        for k in range(1, space.max_cells + 1):
            total = model.fixed + k * (model.per_cell + parts[0][1])
            gap = 0.0 if target is None else abs(total / target - 1)
            if gap <= tolerance:
                ranked += [(score + float(logq[k - 1]), cell, k) for score, _, cell in parts]
            if closest is None or gap < closest[0]:
                closest = (gap, parts[0][2], k)
    if not ranked:
        return [(closest[1], closest[2], False)]
    ranked.sort(key=lambda r: -r[0])
    return [(cell, k, True) for _, cell, k in ranked[:n]]
