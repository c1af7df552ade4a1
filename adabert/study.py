"""`adabert study`: does the search beat a random architecture of the same budget, and can its ranking be trusted?

Parts (each switchable with --parts):
- random: N architectures drawn uniformly from the search space (`sample_arch`) at the searched architecture's
  parameter budget (+- tolerance), each finetuned with the same recipe and the same seeds as the searched one.
  Reported: the searched student's mean +- std over seeds, the random architectures' mean (over architectures,
  each averaged over seeds) +- std, the difference, the searched one's rank among all N + 1, and the permutation
  p-value (1 + #{random mean >= searched mean}) / (N + 1) (under the null the searched architecture is one more
  exchangeable draw).
- rank: the supernet's held-out score of every architecture above (weights of the search's final checkpoint,
  no finetuning) against its finetuned dev score: Kendall tau and Spearman rho. A search whose supernet cannot
  rank architectures cannot choose among them.

Every finetune run is a folder OUT/runs/NAME/seedS written by `finetune_student`, skipped when up to date, so an
interrupted study resumes where it stopped. Outputs: OUT/results.json, OUT/results.md, OUT/study.png.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from adabert import __version__
from adabert.arch import Arch, load_arch, save_arch
from adabert.costs import CostModel, measure_cost_model
from adabert.data import TaskData
from adabert.errors import AdabertError
from adabert.fileio import atomic_write_bytes, read_json, write_json
from adabert.finetune import FinetuneConfig, finetune_student
from adabert.metrics import kendall_tau, spearman
from adabert.runtime import log, progress
from adabert.search_space import SearchSpace

PARTS = ("random", "rank")


@dataclass
class StudyConfig:
    parts: tuple[str, ...] = PARTS
    random: int = 10
    seeds: int = 3
    budget_tolerance: float = 0.1
    sampler_seed: int = 0
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def __post_init__(self) -> None:
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown:
            raise AdabertError(f"--parts: unknown part {unknown[0]!r}; expected some of {', '.join(PARTS)}")
        if self.random < 2 and "random" in self.parts:
            raise AdabertError(f"--random: expected at least 2 random architectures, got {self.random}")
        if self.seeds < 1:
            raise AdabertError(f"--seeds: expected a positive integer, got {self.seeds}")
        if not 0 < self.budget_tolerance < 1:
            raise AdabertError(f"--budget-tolerance: expected a number in (0, 1), got {self.budget_tolerance}")


def random_arch(space: SearchSpace, rng: np.random.Generator) -> Arch:
    """One architecture drawn uniformly: K uniform in 1..Kmax; per intermediate node, `inputs_per_node` distinct
    earlier nodes uniformly, each with a non-zero op uniformly."""
    ops = [o for o in space.ops if o != "zero"]
    cell = []
    for j in range(2, 2 + space.intermediate_nodes):
        inputs = rng.choice(j, size=min(space.inputs_per_node, j), replace=False)
        cell.append(sorted((int(i), ops[int(rng.integers(len(ops)))]) for i in inputs))
    return Arch(space, int(rng.integers(1, space.max_cells + 1)), cell)


def sample_arch(space: SearchSpace, rng: np.random.Generator, cost: CostModel, target: float, tolerance: float,
                max_tries: int = 200_000) -> Arch:
    """A uniform draw from the architectures whose cost lies within target * (1 +- tolerance): rejection sampling
    of `random_arch` (exactly uniform over the space restricted to the budget)."""
    low, high = cost.bounds(space)
    if target < low * (1 - tolerance) or target > high * (1 + tolerance):
        raise AdabertError(f"budget {target:g} {cost.unit} is outside what search space {space.name!r} can build "
                           f"({low:g} to {high:g})")
    for _ in range(max_tries):
        arch = random_arch(space, rng)
        if abs(cost.arch_cost(arch) / target - 1) <= tolerance:
            return arch
    raise AdabertError(f"no random architecture within {target:g} {cost.unit} +- {round(100 * tolerance)}% after "
                       f"{max_tries} draws; widen --budget-tolerance")


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def supernet_scores(search_dir: Path, teacher: str, probes_dir: Path, data: TaskData, archs: dict[str, Arch],
                    device: torch.device) -> dict[str, float]:
    """Held-out main metric of each architecture with the weights of the search's final checkpoint."""
    from adabert.search import Searcher
    from adabert.search_config import SearchConfig

    saved = read_json(search_dir / "config.json", "search config")
    fields = SearchConfig.__dataclass_fields__
    cfg = SearchConfig(**{k: v for k, v in saved.items() if k in fields})
    space = next(iter(archs.values())).space
    searcher = Searcher(teacher, probes_dir, data, space, cfg, search_dir, device)
    if not searcher.load_checkpoint():
        raise AdabertError(f"{search_dir}: no search checkpoint (checkpoint.json) to score architectures with")
    metric = data.task.main_metric
    return {name: searcher.evaluate(arch)[metric] for name, arch in archs.items()}


def run_study(arch_path: Path, teacher: str, probes_dir: Path, data: TaskData, cfg: StudyConfig, output_dir: Path,
              device: torch.device, search_dir: Path | None = None) -> dict:
    out = Path(output_dir)
    searched = load_arch(Path(arch_path))
    space = searched.space
    task = data.task
    metric = task.main_metric
    search_dir = Path(search_dir) if search_dir is not None else Path(arch_path).parent
    params = measure_cost_model(space, "params", task.num_labels, task.is_pair)
    budget = params.arch_cost(searched)
    archs: dict[str, Arch] = {"searched": searched}
    if "random" in cfg.parts:
        rng = np.random.default_rng(cfg.sampler_seed)
        for i in range(cfg.random):
            archs[f"random{i:02d}"] = sample_arch(space, rng, params, budget, cfg.budget_tolerance)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {"adabert_version": __version__, "arch": str(arch_path),
                                     "search_dir": str(search_dir), **asdict(cfg), "task": task.describe()})
    runs: dict[str, list[float]] = {}
    todo = [(name, s) for name in archs for s in range(cfg.seeds)]
    for name, s in progress(todo, desc="study"):
        path = out / "archs" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_arch(archs[name], path)
        m = finetune_student(path, teacher, probes_dir, data, replace(cfg.finetune, seed=s),
                             out / "runs" / name / f"seed{s}", device)
        runs.setdefault(name, []).append(m["dev"][metric])
        log.info("study: %s seed %d: dev %s %.2f | %s", name, s, metric, m["dev"][metric], archs[name].genotype())
    rows = []
    for name, arch in archs.items():
        mean, std = _mean_std(runs[name])
        rows.append({"name": name, "genotype": arch.genotype(), "searched_params": int(params.arch_cost(arch)),
                     "dev": runs[name], "dev_mean": mean, "dev_std": std})
    result: dict = {"task": task.name, "metric": metric, "budget_params": budget,
                    "budget_tolerance": cfg.budget_tolerance, "seeds": cfg.seeds,
                    "finetune": asdict(cfg.finetune), "archs": rows}
    if "random" in cfg.parts:
        s_mean = rows[0]["dev_mean"]
        r_means = [r["dev_mean"] for r in rows[1:]]
        r_mean, r_std = _mean_std(r_means)
        result["random"] = {
            "searched_mean": s_mean, "searched_std": rows[0]["dev_std"], "random_mean": r_mean,
            "random_std_over_archs": r_std, "difference": s_mean - r_mean,
            "rank": 1 + sum(m > s_mean for m in r_means), "of": len(r_means) + 1,
            "p_value": (1 + sum(m >= s_mean for m in r_means)) / (len(r_means) + 1)}
    if "rank" in cfg.parts:
        scores = supernet_scores(search_dir, teacher, probes_dir, data, archs, device)
        for r in rows:
            r["supernet_holdout"] = scores[r["name"]]
        x = np.array([r["supernet_holdout"] for r in rows])
        y = np.array([r["dev_mean"] for r in rows])
        result["rank"] = {"kendall_tau": kendall_tau(x, y), "spearman": spearman(x, y), "archs": len(rows)}
    write_json(out / "results.json", result)
    atomic_write_bytes(out / "results.md", render_markdown(result).encode("utf-8"))
    plot(result, out / "study.png")
    return result


def render_markdown(r: dict) -> str:
    ft = r["finetune"]
    lines = [f"# Study: {r['task']} ({r['metric']})", "",
             f"Budget: {r['budget_params']:,.0f} searched parameters (cells and readouts, all but the embedding "
             f"table) +- {round(100 * r['budget_tolerance'])}%; every architecture finetuned {ft['epochs']} epochs, "
             f"batch {ft['batch_size']}, lr {ft['lr']}, gamma {ft['gamma']}"
             + (f", first {ft['train_limit']} training examples" if ft["train_limit"] else "")
             + f"; {r['seeds']} seeds each.", ""]
    if "random" in r:
        q = r["random"]
        lines += ["| | dev mean | std |", "|---|---|---|",
                  f"| searched | {q['searched_mean']:.2f} | {q['searched_std']:.2f} (over seeds) |",
                  f"| random, same budget | {q['random_mean']:.2f} | {q['random_std_over_archs']:.2f} (over archs) |",
                  "", f"Difference {q['difference']:+.2f}; rank {q['rank']} of {q['of']}; permutation p = "
                  f"{q['p_value']:.3f}.", ""]
    if "rank" in r:
        q = r["rank"]
        lines += [f"Supernet held-out score vs finetuned dev over {q['archs']} architectures: Kendall tau "
                  f"{q['kendall_tau']:.2f}, Spearman {q['spearman']:.2f}.", ""]
    head = "| arch | searched params | dev (per seed) | mean | std |" + (" supernet held-out |" if "rank" in r else "")
    lines += [head, "|---|---|---|---|---|" + ("---|" if "rank" in r else "")]
    for a in r["archs"]:
        row = (f"| {a['name']} `{a['genotype']}` | {a['searched_params']:,} | "
               f"{', '.join(f'{v:.2f}' for v in a['dev'])} | {a['dev_mean']:.2f} | {a['dev_std']:.2f} |")
        lines.append(row + (f" {a['supernet_holdout']:.2f} |" if "rank" in r else ""))
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if "rank" in r else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
    ax = axes[0, 0]
    for a in r["archs"]:
        searched = a["name"] == "searched"
        ax.errorbar(a["searched_params"], a["dev_mean"], yerr=a["dev_std"], fmt="*" if searched else "o",
                    color="C3" if searched else "C0", markersize=12 if searched else 6,
                    label="searched" if searched else None)
    ax.set_xlabel("searched parameters")
    ax.set_ylabel(f"dev {r['metric']} (mean +- std over seeds)")
    ax.legend()
    ax.set_title("searched vs random, same budget")
    if "rank" in r:
        ax = axes[0, 1]
        xs = [a["supernet_holdout"] for a in r["archs"]]
        ys = [a["dev_mean"] for a in r["archs"]]
        ax.scatter(xs, ys)
        ax.set_xlabel("supernet held-out")
        ax.set_ylabel("finetuned dev")
        ax.set_title(f"Kendall tau {r['rank']['kendall_tau']:.2f}")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)

