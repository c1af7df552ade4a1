"""`adabert study`: the evidence a user needs before trusting a search, in one table.

Parts (each switchable with --parts; every row is finetuned with the same recipe and the same seeds):
- random: N architectures drawn uniformly from the search space (`sample_arch`) at the searched architecture's
  parameter budget (+- tolerance). Reported: the searched student's mean +- std over seeds, the random
  architectures' mean (over architectures, each averaged over seeds) +- std, the difference, the searched one's
  rank among all N + 1, and the permutation p-value (1 + #{random mean >= searched mean}) / (N + 1) (under the
  null the searched architecture is one more exchangeable draw). And the headroom: how far the random
  architectures' true means spread beyond seed noise (`arch_effect`) and the share of the space at this budget
  that lies 1 point or more above their mean (`share_above`): a search cannot beat random by more than the space
  holds. With --searched-arch (cells of other search seeds on the task), also the searched cells' mean over
  searches +- std against the random mean, and each one's difference, rank and cost relative to the budget: one
  search seed's cell is one draw of the search.
- space: N architectures drawn uniformly from the whole space (`random_arch`, any depth and cost): the usual
  rank-fidelity sample of NAS benchmarks, where architectures differ by more than seed noise.
- ops: one architecture per non-zero op of the space, that op on every kept edge (node j <- op(j-2) + op(j-1))
  at the searched depth: the largest differences a cell can make (convolutions against pooling and identity),
  i.e. the sample on which a supernet that ranks anything must rank correctly.
- rank: the supernet's held-out score of every architecture above (weights of the search's final checkpoint,
  no finetuning) against its finetuned dev score: Kendall tau and Spearman rho. The search that wrote --arch
  trained its own choice's path most once alpha settled, so it scores that choice too high; --search-dir can
  name a search run with --explore 1 (uniform paths throughout) to score every row alike. A search whose
  supernet cannot rank architectures cannot choose among them. Reported separately over the same-budget, the
  whole-space and the one-op samples, each with the recipe's own reliability: the mean Kendall tau between the
  rankings that two finetune seeds give the same architectures (`seed_tau`). No proxy can be expected to rank
  the finetuned scores better than one finetune seed ranks another, so a tau near seed_tau is as good as the
  recipe allows. With 4 or more
  seeds also `half_tau`: the tau between the means of the two halves of the seeds, the reliability of the means
  themselves (it rises with the seeds; seed_tau does not). And `arch_effect`: whether the architectures differ
  beyond seed noise at all (permutation p-value), by how much, and the tau a perfect proxy would expect against
  the study's seed means (ceiling_tau), the yardstick against which the supernet's tau is read.
- kd: the searched architecture without KD (gamma 0) and with last-layer KD from the teacher's logits instead
  of the probes.
- budgets: the search that wrote --arch rerun (its saved settings, and its augmented text if it had any) at each
  `--budgets` target in searched parameters, each result finetuned: accuracy against parameters and against
  measured latency (pareto.png).
- bilstm: the classic answer, a BiLSTM distilled with MSE on the teacher's logits (Tang et al., 2019), with the
  same epochs, seeds and training examples (and the augmented set when --augment is given).
- cross: architectures searched on other tasks (--cross-arch), finetuned on this one.

Latency: every architecture row's student (seed 0) is timed at batch 1 and the space's cost length on this
device (median of repeats), beside the latency the search's cost model predicts for it (`costs`, unit
latency_ms), so the cost table a latency budget relies on is checked against the real student. The students and
the table's parts are timed in the same rounds (`costs.latency_table`), so a change of the machine's load falls on
prediction and measurement alike.

Every run is a folder OUT/runs/NAME/seedS (searches: OUT/budgets/NAME), skipped when up to date, so an
interrupted study resumes where it stopped. Outputs: OUT/results.json, OUT/results.md, OUT/study.png,
OUT/pareto.png (budgets), OUT/tensorboard (an hparams view of every run).
"""

from __future__ import annotations

import itertools
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from adabert import __version__
from adabert.core.errors import AdabertError
from adabert.core.fileio import atomic_write_bytes, read_json, write_json
from adabert.core.runtime import log, progress
from adabert.data.metrics import baseline_name, kendall_tau, majority_baseline, spearman
from adabert.nas.arch import Arch, load_arch, random_arch, save_arch
from adabert.nas.costs import CostModel, latency_table, measure_cost_model
from adabert.nas.search_space import SearchSpace
from adabert.students.finetune import FinetuneConfig, finetune_student
from adabert.teacher.bundle import TaskBundle

PARTS = ("random", "space", "ops", "rank", "kd", "budgets", "bilstm", "cross")
ARCH_KINDS = ("searched", "random", "space", "ops", "kd", "budget", "cross")
RANK_GROUPS = (("rank", "random", "same budget", "the searched and the same-budget random"),
               ("rank_space", "space", "whole space", "the searched and the whole-space random"),
               ("rank_ops", "ops", "one op", "the searched and the one-op"))
SAMPLED_KINDS = tuple(kind for _, kind, _, _ in RANK_GROUPS)  # rows drawn to be ranked, not timed
# Relative error between predicted and measured latency above which the report asks for a re-timing: timed in
# the same rounds as the students, the cost model has been within 10% of them, under load too (fifty-ninth session);
# timed apart, it was 1-7% off on a quiet machine and up to 37% under load (docs/results.md).
LATENCY_RECHECK = 0.2


@dataclass
class StudyConfig:
    """budgets: searched-parameter targets of the 'budgets' part; search_train_limit and search_min_steps: those
    searches use the first N rows of the fit split and at least N steps (0: as the search that wrote --arch);
    cross_archs: arch.json files searched on other tasks ('cross' part); searched_archs: more cells searched on this
    task (other search seeds or settings; part 'random' reports their mean against the random cells); score_steps:
    part 'rank' also scores every architecture as the search's selection does, by the held-out score after that
    many finetune steps from the supernet's weights (0: the supernet's own score only); augment_rows: the
    architecture rows finetune on the augmented set too (the bundle's `augment_dir`; default: only the BiLSTM
    baseline, whose recipe includes it)."""

    parts: tuple[str, ...] = ("random", "rank")
    random: int = 10
    space: int = 10
    seeds: int = 3
    budget_tolerance: float = 0.1
    sampler_seed: int = 0
    budgets: tuple[float, ...] = ()
    search_train_limit: int = 0
    search_min_steps: int = 0
    cross_archs: tuple[str, ...] = ()
    searched_archs: tuple[str, ...] = ()
    score_steps: int = 400
    augment_rows: bool = False
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def __post_init__(self) -> None:
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown:
            raise AdabertError(f"--parts: unknown part {unknown[0]!r}; expected some of {', '.join(PARTS)}")
        if not self.parts:
            raise AdabertError(f"--parts: expected some of {', '.join(PARTS)}")
        if self.random < 2 and "random" in self.parts:
            raise AdabertError(f"--random: expected at least 2 random architectures, got {self.random}")
        if self.space < 3 and "space" in self.parts:
            raise AdabertError(f"--space: expected at least 3 architectures, got {self.space}")
        if self.seeds < 1:
            raise AdabertError(f"--seeds: expected a positive integer, got {self.seeds}")
        if not 0 < self.budget_tolerance < 1:
            raise AdabertError(f"--budget-tolerance: expected a number in (0, 1), got {self.budget_tolerance}")
        if "budgets" in self.parts and not self.budgets:
            raise AdabertError("--budgets: part 'budgets' needs at least one target (searched parameters)")
        if any(not b > 0 for b in self.budgets):
            raise AdabertError(f"--budgets: expected positive numbers, got {','.join(f'{b:g}' for b in self.budgets)}")
        for name in ("search_train_limit", "search_min_steps", "score_steps"):
            if getattr(self, name) < 0:
                raise AdabertError(f"--{name.replace('_', '-')}: expected 0 or a positive integer, got "
                                   f"{getattr(self, name)}")
        if "cross" in self.parts and not self.cross_archs:
            raise AdabertError("--cross-arch: part 'cross' needs at least one arch.json searched on another task")
        if self.searched_archs and "random" not in self.parts:
            raise AdabertError("--searched-arch: compared with the random cells, so it needs part 'random'")


@dataclass
class Row:
    """One line of the study's table: an architecture finetuned with `finetune` (kind in ARCH_KINDS) or the
    BiLSTM baseline (kind 'bilstm', arch None)."""

    name: str
    kind: str
    arch: Arch | None
    finetune: FinetuneConfig
    note: str = ""


def one_op_arch(space: SearchSpace, op: str, num_cells: int) -> Arch:
    """`op` on every kept edge: intermediate node j sums op(node j-2) and op(node j-1)."""
    return Arch(space, num_cells, [[(i, op) for i in range(max(0, j - space.inputs_per_node), j)]
                                   for j in range(2, 2 + space.intermediate_nodes)])


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
        if cost.within(arch, target, tolerance):
            return arch
    raise AdabertError(f"no random architecture within {target:g} {cost.unit} +- {round(100 * tolerance)}% after "
                       f"{max_tries} draws; widen --budget-tolerance")


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def seed_tau(dev: np.ndarray) -> float | None:
    """The finetune recipe's rank reliability: mean over pairs of seeds (i, j) of Kendall tau between the
    architectures' dev scores under seed i and under seed j; dev [archs, seeds]. None with one seed."""
    pairs = list(itertools.combinations(range(dev.shape[1]), 2))
    return float(np.mean([kendall_tau(dev[:, i], dev[:, j]) for i, j in pairs])) if pairs else None


def half_tau(dev: np.ndarray) -> float | None:
    """The reliability of a mean over half the seeds: Kendall tau between the architectures' mean dev score over
    the first floor(S/2) seeds and over the rest; dev [archs, seeds]. None below 4 seeds. It grows with the seeds
    while `seed_tau` does not, so it says whether the means a proxy is judged against are themselves stable."""
    h = dev.shape[1] // 2
    return kendall_tau(dev[:, :h].mean(axis=1), dev[:, h:].mean(axis=1)) if h >= 2 else None


def arch_effect(dev: np.ndarray, draws: int = 2000, seed: int = 0) -> dict | None:
    """How far the architectures of dev [archs A, seeds S] differ beyond seed noise, and so how well any proxy
    could rank them. Two-way random-effects model dev[a, s] = mu + b_a + c_s + e_as, b ~ N(0, sd_between^2),
    c ~ N(0, sd_seed^2), e ~ N(0, sd_within^2): every architecture of a study is finetuned with the same seeds,
    and a seed fixes the batch order (and the initialisation of the parts all students share), so one seed can
    lift every architecture at once (on MRPC by 0.5-2.5 F1 in each of ten cells, fifty-sixth session); that shift
    is not noise between architectures. With residuals r = dev - row means - column means + grand mean:
    sd_within^2 = sum r^2 / ((A - 1)(S - 1)), sd_between^2 = max(0, var over archs of the seed means -
    sd_within^2 / S), sd_seed^2 = max(0, var over seeds of the arch means - sd_within^2 / A). p_equal: permutation
    p-value of F = S var(means) / sd_within^2, each seed's scores shuffled across architectures (the null: no
    architecture differs; the seeds' shifts stay). ceiling_tau: the Kendall tau a perfect proxy (the true means
    mu + b) is expected to reach against the S-seed means, by simulation under the fitted model; a proxy cannot be
    asked for more. None below 2 seeds or 3 architectures."""
    a, s = dev.shape
    if s < 2 or a < 3:
        return None
    rng = np.random.default_rng(seed)

    def within_var(x: np.ndarray) -> float:
        r = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + x.mean()
        return float((r ** 2).sum()) / ((a - 1) * (s - 1))

    def f_stat(x: np.ndarray) -> float:
        return s * x.mean(axis=1).var(ddof=1) / max(within_var(x), 1e-12)

    within = within_var(dev)
    between = max(0.0, float(dev.mean(axis=1).var(ddof=1)) - within / s)
    seed_var = max(0.0, float(dev.mean(axis=0).var(ddof=1)) - within / a)
    f = f_stat(dev)
    p_equal = (1 + sum(f_stat(np.stack([rng.permutation(c) for c in dev.T], 1)) >= f - 1e-9 for _ in range(draws))
               ) / (draws + 1)
    true = rng.normal(0.0, np.sqrt(between), (draws, a))
    observed = true + rng.normal(0.0, np.sqrt(within / s), (draws, a))
    ceiling = float(np.mean([kendall_tau(t, o) for t, o in zip(true, observed)]))
    return {"sd_between": float(np.sqrt(between)), "sd_within": float(np.sqrt(within)),
            "sd_seed": float(np.sqrt(seed_var)), "p_equal": float(p_equal), "ceiling_tau": ceiling}


def share_above(sd_between: float, points: float) -> float:
    """The share of a space's architectures whose true mean lies `points` or more above the space's mean, when
    the true means are N(mu, sd_between^2) (the `arch_effect` model): Q(points / sd_between) =
    erfc(points / (sd_between sqrt 2)) / 2. At a budget where this share is tiny, no search can be expected to beat
    the mean of random architectures by `points`: such architectures barely exist."""
    if sd_between <= 0:
        return 0.0
    return 0.5 * math.erfc(points / (sd_between * math.sqrt(2)))


def _arch_in_space(path: str | Path, space: SearchSpace, flag: str) -> Arch:
    """An arch.json that must have been searched in `space` (the study's --arch's)."""
    arch = load_arch(Path(path))
    if arch.space.name != space.name:
        raise AdabertError(f"{flag}: {path}: searched in space {arch.space.name!r}, expected {space.name!r}")
    return arch


def _search_config(search_dir: Path):
    from adabert.nas.config import SearchConfig

    saved = read_json(search_dir / "config.json", "search config")
    fields = SearchConfig.__dataclass_fields__
    return SearchConfig(**{k: v for k, v in saved.items() if k in fields})


def search_bundle(search_dir: Path, bundle: TaskBundle) -> TaskBundle:
    """The bundle the search in `search_dir` trained on: with the study's augmented text when the search's inputs
    (meta.json) include augmented text, which must then be the same folder's; without it otherwise."""
    path = search_dir / "meta.json"
    inputs = read_json(path, "search meta", expect=dict).get("inputs", {}) if path.is_file() else {}
    used = inputs.get("augment", "") if isinstance(inputs, dict) else ""
    if not used:
        return bundle.with_augment(None)
    if bundle.augment_dir is None or bundle.folder_fingerprint(bundle.augment_dir) != used:
        given = f"--augment {bundle.augment_dir} is another folder" if bundle.augment_dir else "no --augment given"
        raise AdabertError(f"{path}: the search trained on augmented text ('augment' {used}) and part 'budgets' "
                           f"reruns it on the same text; {given}")
    return bundle


def supernet_scores(search_dir: Path, bundle: TaskBundle, archs: dict[str, Arch], device: torch.device
                    ) -> dict[str, float]:
    """Held-out main metric of each architecture with the weights of the search's final checkpoint (the chosen
    restart's, after `--restarts`)."""
    from adabert.nas.restarts import supernet_dir
    from adabert.nas.search import Searcher

    search_dir = supernet_dir(search_dir)
    space = next(iter(archs.values())).space
    searcher = Searcher(bundle, space, _search_config(search_dir), search_dir, device)
    if not searcher.load_checkpoint():
        raise AdabertError(f"{search_dir}: no search checkpoint (checkpoint.safetensors) to score architectures "
                           "with")
    metric = bundle.task.main_metric
    return {name: searcher.evaluate(arch)[metric] for name, arch in archs.items()}


def tuned_scores(search_dir: Path, bundle: TaskBundle, archs: list[Arch], steps: int, out: Path,
                 device: torch.device) -> list[float]:
    """Held-out main metric of each architecture after `steps` finetune steps from the search's final supernet,
    with the search's own selection recipe (`nas.select.selection_finetune`); runs in OUT/candidate-i."""
    from adabert.nas.restarts import supernet_dir
    from adabert.nas.select import select_by_finetune, selection_finetune

    search_dir = supernet_dir(search_dir)
    cfg = selection_finetune(_search_config(search_dir), steps)
    _, records = select_by_finetune(archs, bundle, cfg, out, device, search_dir / "checkpoint.safetensors")
    return [r["holdout"] for r in records]


def budget_search(search_dir: Path, bundle: TaskBundle, space: SearchSpace, target: float, cfg: StudyConfig,
                  out: Path, device: torch.device) -> Arch:
    """The search that wrote search_dir/arch.json (its restarts included), rerun with `target` searched parameters
    (and the study's search_train_limit / search_min_steps when > 0); resumes an interrupted run, skips a finished
    one."""
    from adabert.nas.restarts import make_searcher

    overrides = {k: v for k, v in (("train_limit", cfg.search_train_limit), ("min_steps", cfg.search_min_steps)) if v}
    cfg = replace(_search_config(search_dir), target_params=float(target), target_flops=0.0, target_latency_ms=0.0,
                  cost="params", **overrides)
    make_searcher(bundle, space, cfg, out, device).ensure()
    return load_arch(out / "arch.json")


def bilstm_run(bundle: TaskBundle, ft: FinetuneConfig, seed: int, out: Path, device: torch.device) -> dict:
    """The BiLSTM + MSE-on-logits baseline with the study's epochs, length, seed and training rows (its KD
    targets: the bundle's cached teacher logits)."""
    from adabert.distill.distill import DistillConfig, run_distill

    cfg = DistillConfig(student="bilstm", method="mse", epochs=ft.epochs, max_length=ft.max_length, seed=seed)
    return run_distill(bundle.with_fit_limit(ft.train_limit), cfg, out, device, resume="auto")


def student_forward(folder: Path, length: int) -> Callable[[], torch.Tensor]:
    """One forward of a saved student at batch 1 (pairs: one pair) and `length` tokens (no padding), as a call to
    time beside the cost table (`costs.latency_table`)."""
    from adabert.students.load import load_student

    student = load_student(folder)
    inputs = tuple(torch.ones_like(t) if i % 2 else t for i, t in enumerate(student.random_inputs(1, length)))
    return lambda: student.module(*inputs)


def run_study(arch_path: Path, bundle: TaskBundle, cfg: StudyConfig, output_dir: Path, device: torch.device,
              search_dir: Path | None = None) -> dict:
    """Finetune the searched architecture and the study's other rows (`cfg.parts`) with one recipe and several
    seeds; the bundle's augmented text, if any, is used by the BiLSTM baseline, and by the architecture rows with
    `cfg.augment_rows`, and by the budgets' searches when the search that wrote --arch trained on it
    (`search_bundle`). Supernet scores never see it."""
    out = Path(output_dir)
    data = bundle.data
    augment_dir = bundle.augment_dir
    plain = bundle.with_augment(None)
    if cfg.augment_rows and augment_dir is None:
        raise AdabertError("--augment-rows: needs --augment (a folder from `adabert augment`)")
    rows_bundle = bundle if cfg.augment_rows else plain
    searched = load_arch(Path(arch_path))
    space = searched.space
    task = data.task
    metric = task.main_metric
    search_dir = Path(search_dir) if search_dir is not None else Path(arch_path).parent
    params = measure_cost_model(space, "params", task.num_labels, task.is_pair)
    budget = params.arch_cost(searched)
    ft = cfg.finetune
    if "budgets" in cfg.parts:
        budget_bundle = search_bundle(search_dir, bundle)
        low, high = params.bounds(space)
        for t in cfg.budgets:
            if not low * (1 - cfg.budget_tolerance) <= t <= high * (1 + cfg.budget_tolerance):
                raise AdabertError(f"--budgets: {t:g} searched params is outside what search space {space.name!r} "
                                   f"can build ({low:g} to {high:g})")
    rows = [Row("searched", "searched", searched, ft)]
    rows += [Row(f"searched-{i + 2}", "searched", _arch_in_space(path, space, "--searched-arch"), ft, str(path))
             for i, path in enumerate(cfg.searched_archs)]
    if "random" in cfg.parts:
        rng = np.random.default_rng(cfg.sampler_seed)
        rows += [Row(f"random{i:02d}", "random", sample_arch(space, rng, params, budget, cfg.budget_tolerance), ft)
                 for i in range(cfg.random)]
    if "space" in cfg.parts:
        rng = np.random.default_rng(cfg.sampler_seed + 1)
        rows += [Row(f"space{i:02d}", "space", random_arch(space, rng), ft, "any budget")
                 for i in range(cfg.space)]
    if "ops" in cfg.parts:
        rows += [Row(f"op-{op}", "ops", one_op_arch(space, op, searched.num_cells), ft, f"{op} everywhere")
                 for op in space.ops if op != "zero"]
    if "kd" in cfg.parts:
        rows += [Row("searched-no-kd", "kd", searched, replace(ft, gamma=0.0), "gamma 0"),
                 Row("searched-last-layer-kd", "kd", searched, replace(ft, kd_target="teacher"),
                     "KD from the teacher's logits at the last cell")]
    if "cross" in cfg.parts:
        for path in cfg.cross_archs:
            arch = _arch_in_space(path, space, "--cross-arch")
            source = (arch.info.get("task") or {}).get("name", Path(path).parent.name)
            rows.append(Row(f"cross-{source}", "cross", arch, ft, f"searched on {source}"))
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {"adabert_version": __version__, "arch": str(arch_path),
                                     "search_dir": str(search_dir), "augment": str(augment_dir or ""),
                                     **asdict(cfg), "task": task.describe()})
    if "budgets" in cfg.parts:
        for target in cfg.budgets:
            name = f"budget-{target:.0f}"
            arch = budget_search(search_dir, budget_bundle, space, target, cfg, out / "budgets" / name, device)
            rows.append(Row(name, "budget", arch, ft, f"target {target:,.0f} searched params"))
    if "bilstm" in cfg.parts:
        rows.append(Row("bilstm-mse", "bilstm", None, ft, "BiLSTM + MSE KD" + (" + augmentation" if augment_dir
                                                                                 else "")))
    results: dict[str, list[dict]] = {}
    todo = [(row, s) for row in rows for s in range(cfg.seeds)]
    for row, s in progress(todo, desc="study"):
        folder = out / "runs" / row.name / f"seed{s}"
        if row.arch is None:
            m = bilstm_run(bundle, ft, s, folder, device)
        else:
            path = out / "archs" / f"{row.name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_arch(row.arch, path)
            m = finetune_student(path, rows_bundle, replace(row.finetune, seed=s), folder, device, resume="auto")
        results.setdefault(row.name, []).append(m)
        log.info("study: %s seed %d: dev %s %.2f%s", row.name, s, metric, m["dev"][metric],
                 f" | {row.arch.genotype()}" if row.arch is not None else "")
    timed_rows = [r.name for r in rows if r.kind not in SAMPLED_KINDS and r.arch is not None]
    latency, measured = latency_table(space, task.num_labels, task.is_pair, alongside=[
        student_forward(out / "runs" / name / "seed0", space.cost_length) for name in timed_rows]) if timed_rows \
        else (None, [])
    measured_ms = dict(zip(timed_rows, measured))
    table = []
    for row in rows:
        devs = [m["dev"][metric] for m in results[row.name]]
        mean, std = _mean_std(devs)
        entry = {"name": row.name, "kind": row.kind, "note": row.note,
                 "genotype": row.arch.genotype() if row.arch is not None else "",
                 "searched_params": int(params.arch_cost(row.arch)) if row.arch is not None else None,
                 "params": int(results[row.name][0]["params"]), "dev": devs, "dev_mean": mean, "dev_std": std}
        if row.name in measured_ms:
            entry["predicted_ms"] = latency.arch_cost(row.arch)
            entry["measured_ms"] = measured_ms[row.name]
        table.append(entry)
    result: dict = {"task": task.name, "metric": metric, "budget_params": budget,
                    "majority_baseline": majority_baseline(task, data.fit.labels, data.dev.labels)[metric],
                    "baseline_name": baseline_name(task),
                    "budget_tolerance": cfg.budget_tolerance, "seeds": cfg.seeds, "finetune": asdict(ft),
                    "parts": list(cfg.parts), "augment_rows": str(augment_dir) if cfg.augment_rows else "",
                    "archs": table}
    if latency is not None:
        result["latency"] = {"threads": torch.get_num_threads(), "length": space.cost_length, "batch": 1,
                             "cost_model": latency.as_dict()}
    if "random" in cfg.parts:
        s_mean, s_std = table[0]["dev_mean"], table[0]["dev_std"]
        randoms = [r for r in table if r["kind"] == "random"]
        r_means = [r["dev_mean"] for r in randoms]
        r_mean, r_std = _mean_std(r_means)
        result["random"] = {
            "searched_mean": s_mean, "searched_std": s_std, "random_mean": r_mean,
            "random_std_over_archs": r_std, "difference": s_mean - r_mean,
            "rank": 1 + sum(m > s_mean for m in r_means), "of": len(r_means) + 1,
            "p_value": (1 + sum(m >= s_mean for m in r_means)) / (len(r_means) + 1)}
        searched_rows = [r for r in table if r["kind"] == "searched"]
        if len(searched_rows) > 1:
            means = [r["dev_mean"] for r in searched_rows]
            mean, std = _mean_std(means)
            result["random"]["searches"] = {
                "names": [r["name"] for r in searched_rows], "means": means, "mean": mean, "std": std,
                "differences": [m - r_mean for m in means], "difference": mean - r_mean,
                "ranks": [1 + sum(x > m for x in r_means) for m in means],
                "budget_ratios": [r["searched_params"] / budget for r in searched_rows]}
        effect = arch_effect(np.array([r["dev"] for r in randoms]))
        if effect is not None:
            result["random"]["arch_effect"] = effect
            result["random"]["share_1_point_above"] = share_above(effect["sd_between"], 1.0)
    if "rank" in cfg.parts:
        ranked = [r for r in table if r["kind"] in ("searched", *SAMPLED_KINDS)]
        archs = {row.name: row.arch for row in rows}
        scores = supernet_scores(search_dir, plain, {r["name"]: archs[r["name"]] for r in ranked}, device)
        for r in ranked:
            r["supernet_holdout"] = scores[r["name"]]
        if cfg.score_steps:
            tuned = tuned_scores(search_dir, plain, [archs[r["name"]] for r in ranked], cfg.score_steps,
                                 out / "rank", device)
            for r, score in zip(ranked, tuned):
                r["tuned_holdout"] = score
            result["score_steps"] = cfg.score_steps
        for key, kind, _, _ in RANK_GROUPS:
            group = [r for r in ranked if r["kind"] in ("searched", kind)]
            if len(group) >= 3:
                x = np.array([r["supernet_holdout"] for r in group])
                y = np.array([r["dev_mean"] for r in group])
                dev = np.array([r["dev"] for r in group])
                result[key] = {"kendall_tau": kendall_tau(x, y), "spearman": spearman(x, y), "archs": len(group),
                               "seed_tau": seed_tau(dev), "half_tau": half_tau(dev), "arch_effect": arch_effect(dev)}
                if cfg.score_steps:
                    t = np.array([r["tuned_holdout"] for r in group])
                    result[key].update({"tuned_kendall_tau": kendall_tau(t, y), "tuned_spearman": spearman(t, y)})
    if "budgets" in cfg.parts:
        sweep = [r for r in table if r["kind"] == "budget"]
        for r, target in zip(sweep, cfg.budgets):
            r["target"] = float(target)
            r["within"] = abs(r["searched_params"] / target - 1) <= cfg.budget_tolerance
        by_target = sorted(sweep, key=lambda r: r["target"])
        result["budgets"] = {"search_train_limit": cfg.search_train_limit, "search_min_steps": cfg.search_min_steps,
                             "all_within": all(r["within"] for r in sweep),
                             "non_decreasing": all(b["dev_mean"] >= a["dev_mean"]
                                                   for a, b in zip(by_target, by_target[1:]))}
    timed = [r for r in table if "measured_ms" in r]
    if timed:
        errors = [r["predicted_ms"] / r["measured_ms"] - 1 for r in timed]
        result["latency"]["max_abs_relative_error"] = max(abs(e) for e in errors)
    write_json(out / "results.json", result)
    atomic_write_bytes(out / "results.md", render_markdown(result).encode("utf-8"))
    plot(result, out / "study.png")
    if "budgets" in cfg.parts:
        plot_pareto(result, out / "pareto.png")
    write_hparams(result, out / "tensorboard")
    return result


def write_hparams(result: dict, folder: Path) -> None:
    """One TensorBoard hparams entry per (row, seed): kind, parameters, seed -> dev metric (rewritten whole)."""
    from torch.utils.tensorboard import SummaryWriter

    shutil.rmtree(folder, ignore_errors=True)
    with SummaryWriter(str(folder)) as w:
        for r in result["archs"]:
            for s, v in enumerate(r["dev"]):
                hp = {"row": r["name"], "kind": r["kind"], "seed": s, "params": r["params"],
                      "searched_params": r["searched_params"] or 0}
                w.add_hparams(hp, {f"dev/{result['metric']}": v}, run_name=f"{r['name']}-seed{s}")


def render_markdown(r: dict) -> str:
    ft = r["finetune"]
    lines = [f"# Study: {r['task']} ({r['metric']})", "",
             f"Budget: {r['budget_params']:,.0f} searched parameters (cells and readouts, all but the embedding "
             f"table) +- {round(100 * r['budget_tolerance'])}%; every architecture finetuned {ft['epochs']} epochs, "
             f"batch {ft['batch_size']}, lr {ft['lr']}, gamma {ft['gamma']}"
             + (f", first {ft['train_limit']} training examples" if ft["train_limit"] else "")
             + (f", with the augmented text of {r['augment_rows']}" if r.get("augment_rows") else "")
             + f"; {r['seeds']} seeds each. {r.get('baseline_name', 'majority-class').capitalize()} baseline on dev: "
             f"{r['majority_baseline']:.2f}.", ""]
    if "random" in r:
        q = r["random"]
        lines += ["| | dev mean | std |", "|---|---|---|",
                  f"| searched | {q['searched_mean']:.2f} | {q['searched_std']:.2f} (over seeds) |",
                  f"| random, same budget | {q['random_mean']:.2f} | {q['random_std_over_archs']:.2f} (over archs) |",
                  "", f"Difference {q['difference']:+.2f}; rank {q['rank']} of {q['of']}; permutation p = "
                  f"{q['p_value']:.3f}.", ""]
        m = q.get("searches")
        if m:
            each = ", ".join(f"{n} {d:+.2f} (rank {k} of {q['of']}, {100 * (b - 1):+.1f}% against the budget)"
                             for n, d, k, b in zip(m["names"], m["differences"], m["ranks"], m["budget_ratios"]))
            lines += [f"Over the {len(m['means'])} searched cells (--arch and --searched-arch): dev mean "
                      f"{m['mean']:.2f} +- {m['std']:.2f} (over cells), {m['difference']:+.2f} against the random "
                      f"mean; each: {each}.", ""]
        e = q.get("arch_effect")
        if e:
            lines += [f"The random architectures' true means spread with sd {e['sd_between']:.2f} (seed noise sd "
                      f"{e['sd_within']:.2f} once each seed's shift of every architecture, sd {e['sd_seed']:.2f}, is "
                      f"taken out; 'none differs' p = {e['p_equal']:.4f}): under that spread "
                      f"{100 * q['share_1_point_above']:.2g}% of this space's architectures at this budget lie 1 point "
                      "or more above the random mean, the headroom any search has here.", ""]
    for key, _, _, which in RANK_GROUPS:
        if key in r:
            q = r[key]
            reliability = (f"; one finetune seed against another: Kendall tau {q['seed_tau']:.2f}"
                           if q.get("seed_tau") is not None else "")
            if q.get("half_tau") is not None:
                h = r["seeds"] // 2
                reliability += (f"; the mean of seeds 0-{h - 1} against the mean of seeds {h}-{r['seeds'] - 1}: "
                                f"Kendall tau {q['half_tau']:.2f}")
            tuned = (f"; after {r['score_steps']} finetune steps from the supernet's weights (the search's selection "
                     f"score): Kendall tau {q['tuned_kendall_tau']:.2f}, Spearman {q['tuned_spearman']:.2f}"
                     if "tuned_kendall_tau" in q else "")
            lines += [f"Supernet held-out score vs finetuned dev over {which} architectures ({q['archs']}): "
                      f"Kendall tau {q['kendall_tau']:.2f}, Spearman {q['spearman']:.2f}{tuned}{reliability}.", ""]
            e = q.get("arch_effect")
            if e:
                lines += [f"How much these architectures differ: spread of their true means sd {e['sd_between']:.2f} "
                          f"against seed noise sd {e['sd_within']:.2f} (each seed's shift, sd {e['sd_seed']:.2f}, "
                          f"taken out); 'no architecture differs' permutation "
                          f"p = {e['p_equal']:.4f}; a perfect proxy would expect Kendall tau "
                          f"{e['ceiling_tau']:.2f} against these {r['seeds']}-seed means.", ""]
    if "budgets" in r:
        q = r["budgets"]
        lines += ["Budget sweep (searches on "
                  + (f"the first {q['search_train_limit']} fit rows" if q["search_train_limit"] else "the search's "
                     "own data")
                  + (f", at least {q['search_min_steps']} steps" if q.get("search_min_steps") else "")
                  + f"): every student within its target +-{round(100 * r['budget_tolerance'])}%: "
                  f"{'yes' if q['all_within'] else 'no'}; dev mean non-decreasing with the budget: "
                  f"{'yes' if q['non_decreasing'] else 'no'}.", ""]
    if "latency" in r and "max_abs_relative_error" in r["latency"]:
        q = r["latency"]
        recheck = (" That is more than the cost model's usual error: a burst of load on the machine while it timed "
                   "can cause it, so rerun the same command on a quiet machine (a finished study only re-times its "
                   "students)."
                   if q["max_abs_relative_error"] > LATENCY_RECHECK else "")
        lines += [f"Latency at batch 1, {q['length']} tokens, {q['threads']} threads: the cost model's prediction "
                  f"is within {100 * q['max_abs_relative_error']:.0f}% of the measured student for every timed "
                  f"row.{recheck}", ""]
    timed = any("measured_ms" in a for a in r["archs"])
    ranked = any("supernet_holdout" in a for a in r["archs"])
    tuned = any("tuned_holdout" in a for a in r["archs"])
    head = "| run | searched params | params | dev (per seed) | mean | std |"
    head += (" supernet held-out |" if ranked else "") + (f" after {r.get('score_steps')} steps |" if tuned else "")
    head += " predicted ms | measured ms |" if timed else ""
    lines += [head, "|" + "---|" * (6 + ranked + tuned + 2 * timed)]
    for a in r["archs"]:
        what = f"`{a['genotype']}`" if a["genotype"] else a["note"]
        if a["genotype"] and a["note"]:
            what = f"{a['note']}: {what}"
        sp = f"{a['searched_params']:,}" if a["searched_params"] is not None else "-"
        row = (f"| {a['name']} {what} | {sp} | {a['params']:,} | {', '.join(f'{v:.2f}' for v in a['dev'])} | "
               f"{a['dev_mean']:.2f} | {a['dev_std']:.2f} |")
        if ranked:
            row += f" {a['supernet_holdout']:.2f} |" if "supernet_holdout" in a else " - |"
        if tuned:
            row += f" {a['tuned_holdout']:.2f} |" if "tuned_holdout" in a else " - |"
        if timed:
            row += (f" {a['predicted_ms']:.2f} | {a['measured_ms']:.2f} |" if "measured_ms" in a else " - | - |")
        lines.append(row)
    return "\n".join(lines) + "\n"


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(r: dict, path: Path) -> None:
    """Searched vs random at the same budget and over the whole space (left), supernet held-out vs finetuned dev
    (right, part rank)."""
    plt = _pyplot()
    rank = any(key in r for key, _, _, _ in RANK_GROUPS)
    panels = 2 if rank else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
    ax = axes[0, 0]
    for a in r["archs"]:
        style = {"searched": ("*", "C3", 12, "searched"), "random": ("o", "C0", 6, "random, same budget"),
                 "space": ("s", "C2", 6, "random, whole space"), "ops": ("^", "C1", 6, "one op everywhere")
                 }.get(a["kind"])
        if style is None:
            continue
        ax.errorbar(a["searched_params"], a["dev_mean"], yerr=a["dev_std"], fmt=style[0], color=style[1],
                    markersize=style[2], label=style[3])
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.set_xscale("log")
    ax.set_xlabel("searched parameters")
    ax.set_ylabel(f"dev {r['metric']} (mean +- std over seeds)")
    ax.legend(unique.values(), unique.keys())
    ax.set_title("searched vs other architectures")
    if rank:
        ax = axes[0, 1]
        for kind, color in (("searched", "C3"), ("random", "C0"), ("space", "C2"), ("ops", "C1")):
            pts = [(a["supernet_holdout"], a["dev_mean"]) for a in r["archs"]
                   if "supernet_holdout" in a and a["kind"] == kind]
            if pts:
                ax.scatter(*zip(*pts), color=color)
        ax.set_xlabel("supernet held-out")
        ax.set_ylabel("finetuned dev")
        ax.set_title(", ".join(f"{name} tau {r[key]['kendall_tau']:.2f}" for key, _, name, _ in RANK_GROUPS
                               if key in r))
    _save(fig, path)


def plot_pareto(r: dict, path: Path) -> None:
    """Dev metric against searched parameters (left) and measured latency (right) for the budget sweep, with
    the searched and random architectures for reference."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    sweep = sorted((a for a in r["archs"] if a["kind"] == "budget"), key=lambda a: a["target"])
    for ax, key, label in ((axes[0], "searched_params", "searched parameters"),
                           (axes[1], "measured_ms", "measured latency, ms (batch 1)")):
        others = [a for a in r["archs"] if a["kind"] in ("searched", "random") and a.get(key) is not None]
        for a in others:
            searched = a["kind"] == "searched"
            ax.plot(a[key], a["dev_mean"], "*" if searched else "o", color="C3" if searched else "0.6",
                    markersize=12 if searched else 5, label="searched (study budget)" if searched else None)
        ax.errorbar([a[key] for a in sweep], [a["dev_mean"] for a in sweep], yerr=[a["dev_std"] for a in sweep],
                    fmt="-s", color="C0", label="searched at each budget")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(f"dev {r['metric']} (mean +- std over seeds)")
        ax.legend(fontsize=8)
    axes[0].set_title("accuracy vs size")
    axes[1].set_title("accuracy vs latency")
    _save(fig, path)
