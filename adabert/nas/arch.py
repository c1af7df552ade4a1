"""arch.json: the contract between search and finetune.

    {"format_version": 1,
     "search_space": {"name", "hash", "definition": {...}},
     "num_cells": K,
     "cell": [[{"from": i, "op": name}, {"from": i', "op": name'}], ...],   # intermediate nodes 2, 3, ...
     "alpha_probs": [[...]], "edges": [[from, to], ...], "depth_probs": [...],
     "teacher": {...}, "task": {...}, "efficiency": {...}, "selection": {...}}

Node indices 0 and 1 are the cell inputs; node j's inputs come from nodes < j. `load_arch` validates every
field and names the one that is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from adabert import __version__
from adabert.core.errors import AdabertError
from adabert.core.fileio import read_json, write_json
from adabert.nas.search_space import SearchSpace

FORMAT_VERSION = 1


@dataclass
class Arch:
    """A derived architecture. cell[n] lists the (from_node, op) inputs of intermediate node n + 2."""

    space: SearchSpace
    num_cells: int
    cell: list[list[tuple[int, str]]]
    alpha_probs: list[list[float]] = field(default_factory=list)
    depth_probs: list[float] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def op_index(self) -> list[int]:
        """Per supernet edge: the index of the kept op, or -1 (DROPPED) for edges the cell does not keep."""
        kept = {(i, n + 2): op for n, inputs in enumerate(self.cell) for i, op in inputs}
        return [self.space.ops.index(kept[e]) if e in kept else -1 for e in self.space.edges]

    def genotype(self) -> str:
        """One line: K=3 | n2 <- cnn3(0) + dil_cnn5(1) | n3 <- ..."""
        nodes = [f"n{n + 2} <- " + " + ".join(f"{op}({i})" for i, op in inputs) for n, inputs in enumerate(self.cell)]
        return f"K={self.num_cells} | " + " | ".join(nodes)

    def to_json(self) -> dict:
        return {"format_version": FORMAT_VERSION, "adabert_version": __version__,
                "search_space": {"name": self.space.name, "hash": self.space.hash,
                                 "definition": self.space.definition()},
                "num_cells": self.num_cells,
                "cell": [[{"from": i, "op": op} for i, op in inputs] for inputs in self.cell],
                "genotype": self.genotype(),
                "edges": [list(e) for e in self.space.edges], "alpha_probs": self.alpha_probs,
                "depth_probs": self.depth_probs, **self.info}


def derive(space: SearchSpace, alpha: torch.Tensor, depth_logits: torch.Tensor, info: dict | None = None) -> Arch:
    """Read the architecture out of the logits.

    For each intermediate node keep the `inputs_per_node` incoming edges whose best non-zero op is most probable;
    each kept edge takes that op; K = the most probable depth (>= 1).
    """
    p = torch.softmax(alpha.detach().float(), -1)
    nonzero = [k for k, o in enumerate(space.ops) if o != "zero"]
    cell = []
    for j in range(2, 2 + space.intermediate_nodes):
        cands = []
        for e, (i, jj) in enumerate(space.edges):
            if jj == j:
                k = max(nonzero, key=lambda k: float(p[e, k]))
                cands.append((float(p[e, k]), i, space.ops[k]))
        cands.sort(key=lambda c: (-c[0], c[1]))
        cell.append(sorted((i, op) for _, i, op in cands[: space.inputs_per_node]))
    q = torch.softmax(depth_logits.detach().float(), -1)
    return Arch(space, int(q.argmax()) + 1, cell, [[round(float(v), 6) for v in row] for row in p],
                [round(float(v), 6) for v in q], dict(info or {}))


def random_arch(space: SearchSpace, rng: np.random.Generator, alpha: torch.Tensor | None = None,
                depth_logits: torch.Tensor | None = None) -> Arch:
    """One architecture drawn at random: per intermediate node, `inputs_per_node` distinct earlier nodes, each
    edge with a non-zero op, and K in 1..Kmax.

    Without logits every draw is uniform. With them it is a draw from the search's distribution: ops from p~[e]
    (softmax(alpha) renormalised over the non-zero ops), the kept edges without replacement in proportion to
    their non-zero mass 1 - p[e, zero], K from softmax(depth_logits).
    """
    ops = [o for o in space.ops if o != "zero"]
    p = None if alpha is None else torch.softmax(alpha.detach().double().cpu(), -1).numpy()
    cell = []
    for j in range(2, 2 + space.intermediate_nodes):
        if p is None:
            inputs = rng.choice(j, size=min(space.inputs_per_node, j), replace=False)
            cell.append(sorted((int(i), ops[int(rng.integers(len(ops)))]) for i in inputs))
            continue
        into = [e for e, (_, jj) in enumerate(space.edges) if jj == j]
        nonzero = p[into][:, [space.ops.index(o) for o in ops]]
        mass = nonzero.sum(1)
        chosen = rng.choice(len(into), size=min(space.inputs_per_node, j), replace=False, p=mass / mass.sum())
        cell.append(sorted((space.edges[into[c]][0], ops[int(rng.choice(len(ops), p=nonzero[c] / mass[c]))])
                           for c in chosen))
    if depth_logits is None:
        return Arch(space, int(rng.integers(1, space.max_cells + 1)), cell)
    q = torch.softmax(depth_logits.detach().double().cpu(), -1).numpy()
    return Arch(space, int(rng.choice(len(q), p=q)) + 1, cell)


def input_moves(arch: Arch, same_inputs: bool = False) -> list[Arch]:
    """Every architecture that differs from `arch` in one kept edge's input node: the same op and K, read from
    another earlier node than the ones its node already reads, so the same cost. In order of node, edge, input.

    same_inputs: the first cell's two inputs are one tensor (a sentence, or a siamese pair: `cell_inputs`); with
    K = 1 nodes 0 and 1 then hold the same states: a move from one to the other keeps the architecture, and of a
    move to either, one is kept (to node 0).
    """
    alike = same_inputs and arch.num_cells == 1
    moved = []
    for n, inputs in enumerate(arch.cell):
        for s, (i, op) in enumerate(inputs):
            rest = [edge for t, edge in enumerate(inputs) if t != s]
            taken = {i, *(r for r, _ in rest)} | ({0, 1} if alike and i < 2 else set())
            targets = [x for x in range(n + 2) if x not in taken]
            if alike and 0 in targets and 1 in targets:
                targets.remove(1)
            for i2 in targets:
                cell = [list(node) for node in arch.cell]
                cell[n] = sorted([*rest, (i2, op)])
                moved.append(Arch(arch.space, arch.num_cells, cell))
    return moved


def save_arch(arch: Arch, path: Path) -> None:
    validate_arch_json(arch.to_json(), str(path), arch.space)
    write_json(path, arch.to_json())


def validate_arch_json(d: object, source: str, space: SearchSpace | None = None) -> Arch:
    """Check an arch.json document; return the Arch. `space`, if given, must have the recorded hash."""
    if not isinstance(d, dict):
        raise AdabertError(f"{source}: expected a JSON object")
    if d.get("format_version") != FORMAT_VERSION:
        raise AdabertError(f"{source}: field 'format_version' is {d.get('format_version')!r}; this version of "
                           f"adabert reads format {FORMAT_VERSION}")
    ss = d.get("search_space")
    if not isinstance(ss, dict) or "definition" not in ss or "hash" not in ss:
        raise AdabertError(f"{source}: field 'search_space' must hold 'name', 'hash' and 'definition'")
    embedded = SearchSpace.from_dict(ss["definition"], f"{source}: search_space.definition")
    if embedded.hash != ss["hash"]:
        raise AdabertError(f"{source}: field 'search_space.hash' is {ss['hash']!r} but the embedded definition "
                           f"hashes to {embedded.hash!r}")
    if space is not None and space.hash != ss["hash"]:
        raise AdabertError(f"{source}: searched in space {ss.get('name')!r} with hash {ss['hash']!r}, which does "
                           f"not match the given search space {space.name!r} (hash {space.hash!r})")
    k = d.get("num_cells")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= embedded.max_cells:
        raise AdabertError(f"{source}: field 'num_cells' must be an integer in 1..{embedded.max_cells}, got {k!r}")
    cell = d.get("cell")
    if not isinstance(cell, list) or len(cell) != embedded.intermediate_nodes:
        raise AdabertError(f"{source}: field 'cell' must list {embedded.intermediate_nodes} intermediate nodes")
    parsed = []
    for n, inputs in enumerate(cell):
        node = n + 2
        where = f"{source}: cell[{n}] (node {node})"
        if not isinstance(inputs, list) or len(inputs) != embedded.inputs_per_node:
            raise AdabertError(f"{where}: expected exactly {embedded.inputs_per_node} inputs, got "
                               f"{len(inputs) if isinstance(inputs, list) else type(inputs).__name__}")
        node_inputs = []
        for inp in inputs:
            if not isinstance(inp, dict) or set(inp) != {"from", "op"}:
                raise AdabertError(f"{where}: each input must be {{\"from\": node_index, \"op\": op_name}}")
            src, op = inp["from"], inp["op"]
            if not isinstance(src, int) or isinstance(src, bool) or not 0 <= src < node:
                raise AdabertError(f"{where}: input 'from' = {src!r} must be an earlier node index (0..{node - 1})")
            if op not in embedded.ops or op == "zero":
                raise AdabertError(f"{where}: unknown op {op!r}; expected one of "
                                   f"{', '.join(o for o in embedded.ops if o != 'zero')}")
            node_inputs.append((src, op))
        if len({s for s, _ in node_inputs}) != len(node_inputs):
            raise AdabertError(f"{where}: the inputs must come from different nodes")
        parsed.append(node_inputs)
    info = {key: d[key] for key in ("teacher", "task", "efficiency", "selection") if key in d}
    return Arch(embedded, k, parsed, d.get("alpha_probs", []), d.get("depth_probs", []), info)


def load_arch(path: Path, space: SearchSpace | None = None) -> Arch:
    """Load and validate an arch.json file (the one function finetune and users call)."""
    return validate_arch_json(read_json(Path(path), "arch.json"), str(path), space)
