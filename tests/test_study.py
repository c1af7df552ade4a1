"""`adabert study` on the toy task: the budgeted random sampler, results files, resume, bad arguments."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import run_cli

from adabert.core.errors import AdabertError
from adabert.data.dataset import load_task_data
from adabert.data.tasks import get_task
from adabert.nas.arch import random_arch, save_arch, validate_arch_json
from adabert.nas.costs import measure_cost_model
from adabert.nas.search import SearchConfig, Searcher
from adabert.nas.search_space import load_search_space
from adabert.core.fileio import write_meta
from adabert.study import (arch_effect, half_tau, one_op_arch, render_markdown, sample_arch, search_bundle, seed_tau,
                           share_above)
from adabert.teacher.bundle import TaskBundle


@pytest.fixture(scope="module")
def search_dir(tiny_teacher, tiny_probes, sst2_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "search"
    cfg = SearchConfig(epochs=2, batch_size=32, max_length=32, evals=1, min_steps=0, lr=1e-2, select_top=1)
    data = load_task_data(get_task("sst2"), sst2_dir)
    Searcher(TaskBundle(data, tiny_teacher, tiny_probes), load_search_space("tiny"), cfg, out,
             torch.device("cpu")).run()
    return out


def test_random_sampler_respects_the_space_and_the_budget():
    space = load_search_space("adabert")
    params = measure_cost_model(space, "params", num_labels=2, pair=False)
    rng = np.random.default_rng(0)
    archs = [random_arch(space, rng) for _ in range(300)]
    for arch in archs:
        validate_arch_json(arch.to_json(), "random", space)  # earlier-node rule, distinct inputs, no zero op
    assert {a.num_cells for a in archs} == set(range(1, space.max_cells + 1))
    used = {op for a in archs for node in a.cell for _, op in node}
    assert used == set(space.ops) - {"zero"}
    target = 600_000.0
    for _ in range(20):
        arch = sample_arch(space, rng, params, target, 0.1)
        assert abs(params.arch_cost(arch) / target - 1) <= 0.1
    with pytest.raises(AdabertError, match="outside what search space"):
        sample_arch(space, rng, params, 10.0, 0.1)


def test_draws_from_logits_follow_the_distribution():
    space = load_search_space("adabert")
    alpha = torch.zeros(space.num_edges, len(space.ops))
    cnn5, zero = space.ops.index("cnn5"), space.ops.index("zero")
    into4 = [e for e, (_, j) in enumerate(space.edges) if j == 4]
    alpha[:, cnn5] = 2.0  # p~(cnn5) = e^2 / (e^2 + 8) on every edge
    alpha[into4[0], zero] = 8.0  # the edge 0 -> 4 is nearly all zero: almost never kept
    depth = torch.full((space.max_cells,), -9.0)
    depth[2] = 0.0  # K = 3 with probability ~0.999
    rng = np.random.default_rng(0)
    archs = [random_arch(space, rng, alpha, depth) for _ in range(2000)]
    for arch in archs[:50]:
        validate_arch_json(arch.to_json(), "draw", space)
    share = np.mean([op == "cnn5" for a in archs for node in a.cell for _, op in node])
    assert share == pytest.approx(math.exp(2) / (math.exp(2) + 8), abs=0.02)
    assert np.mean([a.num_cells == 3 for a in archs]) > 0.99
    assert np.mean([any(i == 0 for i, _ in a.cell[2]) for a in archs]) < 0.01
    # without logits: the uniform draws of earlier studies, draw for draw (their run folders are reused)
    assert random_arch(space, np.random.default_rng(5)).genotype() == (
        "K=2 | n2 <- cnn3(0) + avg_pool3(1) | n3 <- cnn7(0) + identity(1) | n4 <- dil_cnn3(0) + dil_cnn7(1)")


def test_arch_effect_tells_separable_architectures_from_seed_noise():
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 1.0, (8, 6))
    same = arch_effect(80.0 + np.array([rng.permutation(noise[0]) for _ in range(8)]))  # equal means, same noise
    assert same["p_equal"] == 1.0 and same["sd_between"] == 0.0 and same["ceiling_tau"] == 0.0
    dev = 80.0 + 5.0 * np.arange(8)[:, None] + noise  # means 5 noise sds apart
    apart = arch_effect(dev)
    assert apart["p_equal"] < 0.01 and apart["ceiling_tau"] > 0.9
    resid = noise - noise.mean(axis=1, keepdims=True) - noise.mean(axis=0, keepdims=True) + noise.mean()
    within = (resid ** 2).sum() / (7 * 5)  # the two-way model's residual variance, by hand
    assert apart["sd_within"] == pytest.approx(np.sqrt(within))
    assert apart["sd_between"] == pytest.approx(np.sqrt(dev.mean(axis=1).var(ddof=1) - within / 6))
    assert arch_effect(noise[:, :1]) is None and arch_effect(noise[:2]) is None


def test_arch_effect_takes_out_the_shift_a_seed_gives_every_architecture():
    """Seeds that lift every architecture alike (shared batch order) are not noise between architectures: small
    true differences under large shared seed shifts are found, and the shifts are reported as such."""
    rng = np.random.default_rng(1)
    shift = np.array([2.0, -2.0, 1.0, -1.0])  # each seed's shift, shared by all architectures
    dev = 80.0 + 0.5 * np.arange(8)[:, None] + shift[None, :] + rng.normal(0.0, 0.1, (8, 4))
    e = arch_effect(dev)
    assert e["sd_within"] < 0.2 and e["sd_seed"] > 1.0  # the shifts are not counted as noise
    assert e["p_equal"] < 0.01 and e["sd_between"] == pytest.approx(0.5 * np.arange(8).std(ddof=1), rel=0.1)
    no_arch = arch_effect(80.0 + shift[None, :] + rng.normal(0.0, 0.1, (8, 4)))  # only the seeds differ
    assert no_arch["p_equal"] > 0.05 and no_arch["sd_between"] < 0.1


def test_share_above_is_the_normal_tail_of_the_true_means():
    assert share_above(1.0, 1.0) == pytest.approx(0.158655, abs=1e-6)  # Q(1)
    assert share_above(0.5, 1.0) == pytest.approx(0.022750, abs=1e-6)  # Q(2)
    assert share_above(0.0, 1.0) == 0.0  # architectures that do not differ: no headroom at all
    draws = np.random.default_rng(0).normal(0.0, 0.8, 200_000)
    assert share_above(0.8, 1.0) == pytest.approx((draws >= 1.0).mean(), abs=0.003)


def test_the_report_states_the_headroom_of_the_same_budget_comparison():
    effect = {"sd_between": 0.5, "sd_within": 0.4, "sd_seed": 0.3, "p_equal": 0.002, "ceiling_tau": 0.7}
    r = {"task": "sst2", "metric": "accuracy", "budget_params": 50000, "budget_tolerance": 0.1, "seeds": 3,
         "majority_baseline": 50.9, "archs": [], "parts": ["random"],
         "finetune": {"epochs": 3, "batch_size": 64, "lr": 0.002, "gamma": 0.8, "train_limit": 0},
         "random": {"searched_mean": 84.0, "searched_std": 0.3, "random_mean": 83.5, "random_std_over_archs": 0.7,
                    "difference": 0.5, "rank": 2, "of": 11, "p_value": 0.18, "arch_effect": effect,
                    "share_1_point_above": share_above(0.5, 1.0)}}
    text = render_markdown(r)
    assert "true means spread with sd 0.50 (seed noise sd 0.40" in text
    assert "2.3% of this space's architectures at this budget lie 1 point or more above the random mean" in text
    assert "Latency" not in text  # nothing timed, nothing said


@pytest.mark.parametrize("error, recheck", [(0.05, False), (0.35, True)])
def test_the_report_asks_for_a_re_timing_when_prediction_and_measurement_part(error, recheck):
    r = {"task": "mrpc", "metric": "f1", "budget_params": 250000, "budget_tolerance": 0.1, "seeds": 3,
         "majority_baseline": 81.2, "parts": ["random"],
         "finetune": {"epochs": 10, "batch_size": 64, "lr": 0.002, "gamma": 0.8, "train_limit": 0},
         "archs": [{"name": "searched", "kind": "searched", "note": "", "genotype": "K=1", "searched_params": 250000,
                    "params": 4200000, "dev": [83.0], "dev_mean": 83.0, "dev_std": 0.0,
                    "predicted_ms": 2.0, "measured_ms": 2.0 / (1 + error)}],
         "latency": {"length": 64, "threads": 2, "batch": 1, "max_abs_relative_error": error}}
    text = render_markdown(r)
    assert f"within {100 * error:.0f}% of the measured student" in text
    assert ("rerun the same command on a quiet machine" in text) == recheck


def test_one_op_arch_puts_the_op_on_every_kept_edge():
    space = load_search_space("adabert")
    arch = one_op_arch(space, "cnn5", 3)
    validate_arch_json(arch.to_json(), "one-op", space)
    assert arch.num_cells == 3 and arch.genotype() == "K=3 | n2 <- cnn5(0) + cnn5(1) | n3 <- cnn5(1) + cnn5(2) | " \
                                                      "n4 <- cnn5(2) + cnn5(3)"


def test_seed_tau_is_the_mean_rank_agreement_between_seeds():
    dev = np.array([[1.0, 1.0, 3.0], [2.0, 2.0, 2.0], [3.0, 3.0, 1.0]])  # seeds 0 and 1 agree, seed 2 reverses
    assert seed_tau(dev) == pytest.approx((1 - 1 - 1) / 3)
    assert seed_tau(dev[:, :1]) is None


def test_half_tau_compares_the_means_of_the_two_halves_of_the_seeds():
    # single seeds disagree (seeds 0 and 2 reverse arch order), but each half's mean ranks a0 < a1 < a2
    dev = np.array([[3.0, 0.0, 0.0, 4.0], [2.0, 2.0, 2.0, 3.0], [1.0, 5.0, 9.0, 0.0]])
    assert half_tau(dev) == pytest.approx(1.0)
    assert seed_tau(dev) < 0
    assert half_tau(np.concatenate([dev[:, :2], -dev[:, 2:]], axis=1)) == pytest.approx(-1.0)  # halves disagree
    assert half_tau(dev[:, :3]) is None


def test_study_writes_results_and_resumes(search_dir, tiny_teacher, tiny_probes, sst2_dir, tmp_path, capsys):
    other = tmp_path / "seed1" / "arch.json"  # stands for the cell of another search seed
    other.parent.mkdir()
    save_arch(one_op_arch(load_search_space("tiny"), "cnn3", 1), other)
    args = ["study", "--arch", search_dir / "arch.json", "--teacher", tiny_teacher, "--probes", tiny_probes,
            "--task", "sst2", "--data-dir", sst2_dir, "--random", 2, "--seeds", 2, "--epochs", 2,
            "--batch-size", 32, "--max-length", 32, "--score-steps", 8, "--searched-arch", other,
            "--output-dir", tmp_path / "study"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    r = json.loads((tmp_path / "study" / "results.json").read_text())
    assert [a["name"] for a in r["archs"]] == ["searched", "searched-2", "random00", "random01"]
    # the searched cells' mean over searches against the random mean, each with its rank and relative cost
    s = r["random"]["searches"]
    devs = [a["dev_mean"] for a in r["archs"]]
    assert s["means"] == devs[:2] and s["mean"] == pytest.approx(np.mean(devs[:2]))
    assert s["difference"] == pytest.approx(np.mean(devs[:2]) - np.mean(devs[2:]))
    assert s["ranks"] == [1 + sum(x > m for x in devs[2:]) for m in devs[:2]]
    assert s["budget_ratios"][0] == 1 and s["budget_ratios"][1] == r["archs"][1]["searched_params"] / r["budget_params"]
    assert "Over the 2 searched cells (--arch and --searched-arch)" in out
    assert r["random"]["of"] == 3  # the searched cell of --arch against the random ones, as without --searched-arch
    # the selection's score: 8 steps from the supernet's weights, one finetune run per architecture
    assert r["score_steps"] == 8 and -1 <= r["rank"]["tuned_kendall_tau"] <= 1
    for i, a in enumerate(r["archs"]):
        m = json.loads((tmp_path / "study" / "rank" / f"candidate-{i}" / "metrics.json").read_text())
        assert m["best_holdout"] == a["tuned_holdout"] and m["genotype"] == a["genotype"]
        assert m["history"][-1]["step"] == 8
    assert "after 8 finetune steps from the supernet's weights" in out
    assert all(len(a["dev"]) == 2 for a in r["archs"])
    assert 0 < r["random"]["p_value"] <= 1
    assert -1 <= r["rank"]["kendall_tau"] <= 1 and all("supernet_holdout" in a for a in r["archs"])
    assert -1 <= r["rank"]["seed_tau"] <= 1 and "one finetune seed against another" in out
    assert 0 < r["rank"]["arch_effect"]["p_equal"] <= 1 and "a perfect proxy would expect Kendall tau" in out
    budget = r["budget_params"]
    for a in r["archs"]:
        if a["name"] == "searched-2":  # the cnn3 cell, of any cost
            continue
        assert abs(a["searched_params"] / budget - 1) <= 0.1
    md = (tmp_path / "study" / "results.md").read_text()
    assert "Kendall tau" in md and "searched parameters" in md
    assert (tmp_path / "study" / "study.png").stat().st_size > 1000
    stamp = (tmp_path / "study" / "runs" / "random00" / "seed0" / "metrics.json").stat().st_mtime_ns
    code, _, err = run_cli(args, capsys)  # a second run skips every finished finetune
    assert code == 0, err
    assert (tmp_path / "study" / "runs" / "random00" / "seed0" / "metrics.json").stat().st_mtime_ns == stamp
    timing = ("predicted_ms", "measured_ms")  # timed anew on every run

    def untimed(rows):
        return [{k: v for k, v in a.items() if k not in timing} for a in rows]

    assert untimed(json.loads((tmp_path / "study" / "results.json").read_text())["archs"]) == untimed(r["archs"])


def test_study_ranks_architectures_over_the_whole_space_and_the_one_op_cells(search_dir, tiny_teacher, tiny_probes,
                                                                            sst2_dir, tmp_path, capsys):
    args = ["study", "--arch", search_dir / "arch.json", "--teacher", tiny_teacher, "--probes", tiny_probes,
            "--task", "sst2", "--data-dir", sst2_dir, "--parts", "space,ops,rank", "--space", 3, "--seeds", 1,
            "--epochs", 1, "--batch-size", 32, "--max-length", 32, "--score-steps", 0, "--bf16", "--output-dir",
            tmp_path / "study"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    r = json.loads((tmp_path / "study" / "results.json").read_text())
    assert json.loads((tmp_path / "study" / "runs" / "space00" / "seed0" / "meta.json").read_text())["config"]["bf16"]
    ops = ["op-cnn3", "op-dil_cnn3", "op-max_pool3", "op-identity"]  # the tiny space's non-zero ops
    assert [a["name"] for a in r["archs"]] == ["searched", "space00", "space01", "space02", *ops]
    assert "rank" not in r and r["rank_space"]["archs"] == 4 and -1 <= r["rank_space"]["kendall_tau"] <= 1
    assert r["rank_ops"]["archs"] == 5 and -1 <= r["rank_ops"]["kendall_tau"] <= 1
    assert all("supernet_holdout" in a and "tuned_holdout" not in a for a in r["archs"])
    md = (tmp_path / "study" / "results.md").read_text()
    assert "whole-space random architectures (4): Kendall tau" in md and "one-op architectures (5)" in md
    assert "| op-identity identity everywhere: `K=" in md


def test_study_budget_sweep_kd_bilstm_and_cross(search_dir, tiny_teacher, tiny_probes, sst2_dir, tmp_path, capsys):
    space = load_search_space("tiny")
    params = measure_cost_model(space, "params", num_labels=2, pair=False)
    costs = sorted({params.arch_cost(random_arch(space, np.random.default_rng(i))) for i in range(40)})
    targets = [costs[1], costs[-2]]  # costs the tiny space can build (its costs are too coarse for any target)
    args = ["study", "--arch", search_dir / "arch.json", "--teacher", tiny_teacher, "--probes", tiny_probes,
            "--task", "sst2", "--data-dir", sst2_dir, "--parts", "kd,budgets,bilstm,cross", "--seeds", 1,
            "--epochs", 2, "--batch-size", 32, "--max-length", 32, "--budgets", ",".join(f"{t:.0f}" for t in targets),
            "--cross-arch", search_dir / "arch.json", "--output-dir", tmp_path / "study"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    r = json.loads((tmp_path / "study" / "results.json").read_text())
    names = [a["name"] for a in r["archs"]]
    assert names == ["searched", "searched-no-kd", "searched-last-layer-kd", "cross-sst2",
                     f"budget-{targets[0]:.0f}", f"budget-{targets[1]:.0f}", "bilstm-mse"]
    sweep = [a for a in r["archs"] if a["kind"] == "budget"]
    assert r["budgets"]["all_within"] and all(abs(a["searched_params"] / a["target"] - 1) <= 0.1 for a in sweep)
    for a in r["archs"]:
        if a["kind"] == "bilstm":
            assert a["searched_params"] is None and "measured_ms" not in a
        else:  # every architecture row is timed beside the cost model's prediction
            assert a["measured_ms"] > 0 and a["predicted_ms"] > 0
    assert (tmp_path / "study" / "budgets" / sweep[0]["name"] / "arch.json").is_file()
    assert (tmp_path / "study" / "pareto.png").stat().st_size > 1000
    assert any((tmp_path / "study" / "tensorboard").rglob("events.out.tfevents.*"))
    md = (tmp_path / "study" / "results.md").read_text()
    assert "Budget sweep" in md and "BiLSTM + MSE KD" in md and "gamma 0" in md
    # the no-KD row really trained without KD: its saved config says so
    saved = json.loads((tmp_path / "study" / "runs" / "searched-no-kd" / "seed0" / "meta.json").read_text())
    assert saved["config"]["gamma"] == 0.0


def test_budget_searches_use_the_augmented_text_their_search_used(sst2_dir, tmp_path):
    data = load_task_data(get_task("sst2"), sst2_dir)
    augments = []
    for name in ("aug", "other"):
        write_meta(tmp_path / name, "augment", {"data": name}, {"copies": 1})
        augments.append(tmp_path / name)
    bundle = TaskBundle(data, "teacher", None, augments[0])
    plain_search, aug_search = tmp_path / "plain", tmp_path / "searched-on-aug"
    write_meta(plain_search, "search", {"data": "d"}, {})
    write_meta(aug_search, "search", {"data": "d", "augment": TaskBundle.folder_fingerprint(augments[0])}, {})
    assert search_bundle(plain_search, bundle).augment_dir is None
    assert search_bundle(aug_search, bundle).augment_dir == augments[0]
    with pytest.raises(AdabertError, match="no --augment given"):
        search_bundle(aug_search, bundle.with_augment(None))
    with pytest.raises(AdabertError, match="is another folder"):
        search_bundle(aug_search, bundle.with_augment(augments[1]))


@pytest.mark.parametrize("extra, message", [
    (["--parts", "random,bogus"], "--parts: unknown part 'bogus'"),
    (["--random", "1"], "--random: expected at least 2"),
    (["--parts", "budgets"], "--budgets: part 'budgets' needs at least one target"),
    (["--parts", "budgets", "--budgets", "10"], "--budgets: 10 searched params is outside what search space"),
    (["--parts", "cross"], "--cross-arch: part 'cross' needs"),
    (["--parts", "random", "--budgets", "5,x"], "--budgets: expected comma-separated numbers"),
    (["--augment-rows"], "--augment-rows: needs --augment"),
    (["--parts", "space", "--searched-arch", "a.json"], "--searched-arch: compared with the random cells"),
])
def test_bad_study_arguments(extra, message, search_dir, tiny_teacher, tiny_probes, sst2_dir, tmp_path, capsys):
    code, _, err = run_cli(["study", "--arch", search_dir / "arch.json", "--teacher", tiny_teacher, "--probes",
                            tiny_probes, "--task", "sst2", "--data-dir", sst2_dir, "--output-dir", tmp_path / "s",
                            *extra], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()
