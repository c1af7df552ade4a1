"""TensorBoard views of a search: loss terms and costs as scalars; per evaluation an image of the alpha
probabilities (edges x ops), the depth distribution, the derived cell drawn as a graph, the genotype as text,
and collapse diagnostics (share of parameter-free ops, per-edge entropy)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from adabert.nas.arch import Arch  # noqa: E402

PARAM_FREE = ("max_pool3", "avg_pool3", "identity", "zero")


def collapse_diagnostics(alpha: torch.Tensor, ops: tuple[str, ...]) -> dict[str, float]:
    """Share of probability mass on parameter-free ops, and per-edge entropy (mean, min) of softmax(alpha)
    relative to its maximum log(n_ops): 1 = uniform, 0 = decided."""
    p = torch.softmax(alpha.detach().float(), -1)
    free = [k for k, o in enumerate(ops) if o in PARAM_FREE]
    ent = -(p * p.clamp_min(1e-12).log()).sum(-1) / np.log(len(ops))
    return {"param_free_share": float(p[:, free].sum(-1).mean()) if free else 0.0,
            "edge_entropy_mean": float(ent.mean()), "edge_entropy_min": float(ent.min())}


def cell_graph(arch: Arch) -> nx.DiGraph:
    """The derived cell as a graph: nodes in0, in1, n2.., out; edges labelled with their op."""
    g = nx.DiGraph()
    name = lambda i: f"in{i}" if i < 2 else f"n{i}"  # noqa: E731
    for n, inputs in enumerate(arch.cell):
        for i, op in inputs:
            g.add_edge(name(i), name(n + 2), op=op)
        g.add_edge(name(n + 2), "out", op="")
    return g


def _figure_alpha(probs: np.ndarray, ops: tuple[str, ...], edges: list[tuple[int, int]]):
    fig, ax = plt.subplots(figsize=(1 + 0.7 * len(ops), 1 + 0.4 * len(edges)))
    ax.imshow(probs, cmap="viridis", aspect="auto", vmin=0, vmax=max(float(probs.max()), 1e-6))
    ax.set_xticks(range(len(ops)), ops, rotation=45, ha="right")
    ax.set_yticks(range(len(edges)), [f"{i}->{j}" for i, j in edges])
    for (r, c), v in np.ndenumerate(probs):
        ax.text(c, r, f"{v:.2f}", ha="center", va="center", color="w", fontsize=7)
    ax.set_title("alpha probabilities (edge x op)")
    fig.tight_layout()
    return fig


def _figure_depth(probs: np.ndarray):
    fig, ax = plt.subplots(figsize=(4, 2.5))
    ax.bar(range(1, len(probs) + 1), probs)
    ax.set_xlabel("number of cells K")
    ax.set_ylabel("probability")
    fig.tight_layout()
    return fig


def _figure_cell(arch: Arch):
    g = cell_graph(arch)
    layers = {"in0": 0, "in1": 0, "out": len(arch.cell) + 1}
    for n in range(len(arch.cell)):
        layers[f"n{n + 2}"] = n + 1
    for v in g.nodes:
        g.nodes[v]["layer"] = layers[v]
    pos = nx.multipartite_layout(g, subset_key="layer")
    fig, ax = plt.subplots(figsize=(6, 4))
    nx.draw_networkx(g, pos, ax=ax, node_color="#cde", node_size=900, font_size=8, arrows=True)
    nx.draw_networkx_edge_labels(g, pos, edge_labels=nx.get_edge_attributes(g, "op"), ax=ax, font_size=7)
    ax.set_title(f"derived cell (K = {arch.num_cells})")
    ax.axis("off")
    fig.tight_layout()
    return fig


class SearchBoard:
    """Writes a search's TensorBoard event files under `log_dir` (nothing when not `enabled`: processes other
    than rank 0)."""

    def __init__(self, log_dir: Path, purge_step: int | None = None, enabled: bool = True) -> None:
        self.w = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step) if enabled else None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.w is None:
            return
        for k, v in values.items():
            self.w.add_scalar(k, v, step)

    def snapshot(self, step: int, arch: Arch, alpha: torch.Tensor, depth_logits: torch.Tensor) -> dict[str, float]:
        """Images, graph and genotype of the current architecture; returns the collapse diagnostics."""
        space = arch.space
        probs = torch.softmax(alpha.detach().float(), -1).cpu().numpy()
        depth = torch.softmax(depth_logits.detach().float(), -1).cpu().numpy()
        if self.w is not None:
            for tag, fig in (("arch/alpha", _figure_alpha(probs, space.ops, space.edges)),
                             ("arch/depth", _figure_depth(depth)), ("arch/cell", _figure_cell(arch))):
                self.w.add_figure(tag, fig, step, close=True)
            self.w.add_text("arch/genotype", arch.genotype(), step)
        diag = collapse_diagnostics(alpha, space.ops)
        self.scalars(step, {f"collapse/{k}": v for k, v in diag.items()})
        return diag

    def selection(self, candidates: list[dict], chosen: int, best: int, name: str = "candidates") -> None:
        """The selection's finetuned held-out score per candidate (x axis: candidate index) and a table that marks
        the written candidate and the held-out best; `name` "moves" for the pick's input moves (`--move-steps`)."""
        if self.w is None:
            return
        scalar = "select/finetuned_holdout" if name == "candidates" else f"select/{name}_finetuned_holdout"
        for i, c in enumerate(candidates):
            self.w.add_scalar(scalar, c["holdout"], i)

        def mark(i: int) -> str:
            return "".join([" (written)" if i == chosen else "", " (held-out best)" if i == best else ""])

        rows = [f"| {i}{mark(i)} | {c['holdout']:.2f} | {c['cost']:,.6g} | {c['params']:,} | `{c['genotype']}` |"
                for i, c in enumerate(candidates)]
        self.w.add_text(f"select/{name}", "\n".join(["| candidate | held-out | cost | params | genotype |",
                                                    "|---|---|---|---|---|", *rows]), 0)

    def restarts(self, records: list[dict], chosen: int, best: int) -> None:
        """`--restarts`: each restart's selection score (x axis: its seed) and a table that marks the written pick
        and the best-scored one."""
        if self.w is None:
            return
        for r in records:
            self.w.add_scalar("select/restart_finetuned_holdout", r["finetuned_holdout"], r["seed"])

        def mark(i: int) -> str:
            return "".join([" (written)" if i == chosen else "", " (best score)" if i == best else ""])

        rows = [f"| {r['seed']}{mark(i)} | {r['finetuned_holdout']:.2f} | {r['cost']:,.0f} | `{r['genotype']}` |"
                for i, r in enumerate(records)]
        self.w.add_text("select/restarts", "\n".join(["| seed | selection score | cost | genotype |",
                                                      "|---|---|---|---|", *rows]), 0)

    def close(self) -> None:
        if self.w is not None:
            self.w.close()
