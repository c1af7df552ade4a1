"""End-to-end search on toy tasks with the tiny teacher and the tiny search space."""

import copy
import json
import re
import shutil
from dataclasses import replace

import pytest
import torch
from conftest import run_cli, teacher_and_probes, write_sst2_phrases, write_word_order

from adabert.data.dataset import load_task_data
from adabert.data.tasks import get_task
from adabert.nas.arch import derive, input_moves, load_arch
from adabert.nas.costs import measure_cost_model
from adabert.nas.search import SearchConfig, Searcher
from adabert.nas.search_space import load_search_space
from adabert.teacher.bundle import TaskBundle

TOY = {"epochs": 6, "batch_size": 32, "max_length": 32, "evals": 2, "min_steps": 0, "checkpoint_every": 3,
       "log_every": 1, "lr": 1e-2, "select_top": 1}
# the module's search ends with a selection among 3 candidates, each finetuned 48 steps from the supernet
SELECT = {"select_top": 3, "select_steps": 48}


def _searcher(tiny_teacher, tiny_probes, data_dir, out, task="sst2", **kw):
    cfg = SearchConfig(**{**TOY, **kw})
    data = load_task_data(get_task(task), data_dir)
    return Searcher(TaskBundle(data, tiny_teacher, tiny_probes), load_search_space("tiny"), cfg, out,
                    torch.device("cpu"))


@pytest.fixture(scope="module")
def searched(tiny_teacher, tiny_probes, sst2_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "full"
    s = _searcher(tiny_teacher, tiny_probes, sst2_dir, out, **SELECT)
    return out, s.run()


def test_tiny_search_learns_and_writes_a_valid_arch(searched):
    out, summary = searched
    arch = load_arch(out / "arch.json", load_search_space("tiny"))
    assert summary["selection"]["supernet_holdout"]["accuracy"] >= 80.0
    first = summary["history"][0]["holdout"]["accuracy"]
    assert max(h["holdout"]["accuracy"] for h in summary["history"]) >= first
    assert 1 <= arch.num_cells <= 3 and arch.info["efficiency"]["params"] > 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["stage"] == "search" and (out / "config.json").is_file()


def test_tensorboard_holds_scalars_and_images(searched):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = searched
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("loss/train", "loss/efficiency", "search/tau", "search/noise", "search/advantage", "holdout/accuracy",
                "cost/expected_params", "cost/expected_depth", "depth/p_K1", "depth/loss_vs_K1_K3",
                "collapse/param_free_share", "collapse/edge_entropy_mean"):
        assert tag in tags["scalars"], tag
    assert {"arch/alpha", "arch/depth", "arch/cell"} <= set(tags["images"])
    assert any(t.startswith("arch/genotype") for t in tags["tensors"])
    assert any(t.startswith("select/candidates") for t in tags["tensors"])
    assert len(acc.Scalars("select/finetuned_holdout")) == SELECT["select_top"]
    taus = [e.value for e in acc.Scalars("search/tau")]
    assert taus[0] == pytest.approx(1.0) and taus[-1] < taus[0]
    img = acc.Images("arch/alpha")[-1]
    assert img.width > 50 and img.height > 50


def test_interrupted_and_resumed_search_gives_the_same_arch(searched, tiny_teacher, tiny_probes, sst2_dir, tmp_path):
    out_full, _ = searched
    out = tmp_path / "resumed"
    assert _searcher(tiny_teacher, tiny_probes, sst2_dir, out, **SELECT).run(max_steps=8) is None
    assert (out / "checkpoint.safetensors").is_file() and not (out / "arch.json").exists()
    _searcher(tiny_teacher, tiny_probes, sst2_dir, out, **SELECT).run(resume=True)
    a, b = json.loads((out_full / "arch.json").read_text()), json.loads((out / "arch.json").read_text())
    for key in ("cell", "num_cells", "alpha_probs", "depth_probs", "selection"):
        assert a[key] == b[key], key


def test_selection_finetunes_the_most_probable_archs_and_writes_the_cheapest_not_told_from_the_best(searched):
    from adabert.nas.select import cheapest_not_told_apart

    out, summary = searched
    sel, arch = summary["selection"], load_arch(out / "arch.json")
    cands, best = sel["candidates"], sel["holdout_best"]
    assert len(cands) == 3 and len({c["genotype"] for c in cands}) == 3
    assert cands[best]["holdout"] == max(c["holdout"] for c in cands) >= 75.0  # the students learned
    # beta 1 and no target price cost: the cheapest of the best and those it does not lead by 2 s.e. is written
    assert sel["candidate"] == cheapest_not_told_apart(best, cands, [c["cost"] for c in cands])
    assert cands[sel["candidate"]]["genotype"] == arch.genotype() == summary["genotype"]
    assert sel["finetuned_holdout"] == cands[sel["candidate"]]["holdout"]
    for i, c in enumerate(cands):  # each candidate is a finetune run whose best held-out score is the record's
        m = json.loads((out / "select" / f"candidate-{i}" / "metrics.json").read_text())
        assert m["best_holdout"] == c["holdout"] and m["genotype"] == c["genotype"]
        assert m["history"][-1]["step"] == SELECT["select_steps"]
        meta = json.loads((out / "select" / f"candidate-{i}" / "meta.json").read_text())
        assert meta["config"]["inherit"] and meta["inputs"]["supernet"]  # started from the supernet's weights
        assert c["cost"] == measure_cost_model(arch.space, "params", 2, False).arch_cost(load_arch(
            out / "select" / f"candidate-{i}.json"))
    for i, c in enumerate(cands):  # the saved students reproduce the held-out scores: the lead is their difference
        if i != best:
            lead, se = c["behind_best"]["lead"], c["behind_best"]["se"]
            assert lead == pytest.approx(cands[best]["holdout"] - c["holdout"], abs=1e-6) and se >= 0
            assert se > 0 or lead == 0
    assert "behind_best" not in cands[best]
    # candidate 0 is the architecture the final logits derive
    probs = torch.tensor(arch.alpha_probs).log(), torch.tensor(arch.depth_probs).log()
    assert derive(arch.space, *probs).genotype() == cands[0]["genotype"]


def test_the_cheapest_candidate_not_told_from_the_best_is_written():
    from adabert.nas.select import cheapest_not_told_apart

    def rec(holdout, lead=None, se=None):
        return {"holdout": holdout, **({} if lead is None else {"behind_best": {"lead": lead, "se": se}})}

    # candidate 1 is best; 0 is cheaper and within 2 s.e. (0.5 < 2 * 0.3): written
    records = [rec(88.0, 0.5, 0.3), rec(88.5), rec(87.9, 0.6, 0.3)]
    assert cheapest_not_told_apart(1, records, [312e3, 476e3, 279e3]) == 0
    # the cheapest (2) is told apart (0.65 >= 2 * 0.3): not written; neither is a dearer close one
    records[2]["behind_best"]["lead"] = 0.65
    assert cheapest_not_told_apart(1, records, [330e3, 476e3, 279e3]) == 0
    assert cheapest_not_told_apart(1, records, [500e3, 476e3, 279e3]) == 1
    # a tie (the same rows right: lead and s.e. 0) is not told apart; equal cost goes to the better score
    records = [rec(88.5, 0.0, 0.0), rec(88.5), rec(88.0, 0.5, 0.2)]
    assert cheapest_not_told_apart(1, records, [100.0, 200.0, 50.0]) == 0
    assert cheapest_not_told_apart(1, records, [200.0, 200.0, 200.0]) == 0  # same score and cost: the earlier
    records[0] = rec(88.3, 0.2, 0.15)
    assert cheapest_not_told_apart(1, records, [200.0, 200.0, 200.0]) == 1


def test_the_search_summary_names_the_candidates_held_out_did_not_tell_from_the_best(searched):
    from adabert.cli import format_search_summary

    out, summary = searched
    summary = json.loads(json.dumps(summary))
    sel = summary["selection"]
    sel["candidate"] = sel["holdout_best"]
    best = sel["holdout_best"]
    others = [i for i in range(len(sel["candidates"])) if i != best]
    sel["candidates"][others[0]]["behind_best"] = {"lead": 0.3, "se": 0.2}  # under 2 s.e.
    sel["candidates"][others[1]]["behind_best"] = {"lead": 1.0, "se": 0.2}
    text = format_search_summary(summary, out)
    assert text.splitlines()[0] == f"arch: {summary['genotype']}"
    assert f"chosen: candidate {best + 1} of 3" in text and "cheaper than" not in text
    assert f"(not told apart): candidate(s) {others[0] + 1}\n" in text
    assert "examples/s" in text and str(out) in text
    sel["candidates"][others[1]]["behind_best"] = {"lead": 0.0, "se": 0.0}  # a tie: the same rows right
    text = format_search_summary(summary, out)
    assert f"(not told apart): candidate(s) {others[0] + 1}, {others[1] + 1}\n" in text
    sel["candidate"] = others[0]  # a cheaper candidate not told apart from the best was written
    sel["candidates"][best]["cost"], sel["candidates"][others[0]]["cost"] = 476293.0, 312197.0
    text = format_search_summary(summary, out)
    assert f"chosen: candidate {others[0] + 1} of 3" in text
    assert (f"cheaper than the held-out best, candidate {best + 1} ({sel['candidates'][best]['holdout']:.2f}, "
            "476,293 params against 312,197 params), and not told apart from it") in text
    sel["candidate"] = best
    sel["candidates"][others[1]]["behind_best"] = {"lead": 1.0, "se": 0.2}
    sel["candidates"][others[0]]["behind_best"]["lead"] = 0.5
    summary["examples_per_second"] = 0  # a finished search resumed: nothing trained in this run
    text = format_search_summary(summary, out)
    assert "not told apart" not in text and "examples/s" not in text


def test_a_finished_search_resumed_with_another_selection_reuses_its_supernet(searched, tiny_teacher, tiny_probes,
                                                                              sst2_dir, tmp_path):
    out_full, summary = searched
    out = tmp_path / "again"
    shutil.copytree(out_full, out)
    again = _searcher(tiny_teacher, tiny_probes, sst2_dir, out, select_top=1).run(resume=True)
    assert again["examples_per_second"] == 0  # no step trained again
    assert again["genotype"] == summary["selection"]["candidates"][0]["genotype"]
    assert "candidates" not in again["selection"] and not (out / "select" / "candidate-3").exists()


def test_input_moves_finetune_the_pick_and_each_move_and_write_the_best(searched, tiny_teacher, tiny_probes,
                                                                        sst2_dir, tmp_path):
    from adabert.cli import format_search_summary

    out_full, summary = searched
    out = tmp_path / "moves"
    shutil.copytree(out_full, out)
    again = _searcher(tiny_teacher, tiny_probes, sst2_dir, out, **SELECT, move_steps=24).run(resume=True)
    sel = again["selection"]
    assert again["examples_per_second"] == 0  # the supernet is reused; the selection's finetunes too (same folders)
    assert [c["holdout"] for c in sel["candidates"]] == [c["holdout"] for c in summary["selection"]["candidates"]]
    pick = load_arch(out / "select" / f"candidate-{sel['candidate']}.json")
    moves = sel["moves"]["candidates"]
    assert moves[0]["genotype"] == pick.genotype()
    assert [m["genotype"] for m in moves[1:]] == [a.genotype() for a in input_moves(pick, same_inputs=True)]
    assert len(moves) > 1 and all(m["params"] == moves[0]["params"] for m in moves)  # the same ops: the same size
    for i, m in enumerate(moves):
        assert json.loads((out / "moves" / f"candidate-{i}" / "metrics.json").read_text())["history"][-1]["step"] == 24
    best = max(range(len(moves)), key=lambda i: (moves[i]["holdout"], -i))
    assert sel["moves"]["best"] == best and again["genotype"] == moves[best]["genotype"]
    assert sel["finetuned_holdout"] == moves[best]["holdout"] and "input moves" in sel["rule"]
    assert load_arch(out / "arch.json").genotype() == moves[best]["genotype"]
    text = format_search_summary(again, out)
    assert f"input moves: {len(moves) - 1}, each finetuned 24 steps; " in text
    pick_score = sel["candidates"][sel["candidate"]]["holdout"]  # the selection's own score of its pick, not the move's
    wrote = copy.deepcopy(again)  # a written move says how far it leads the pick, and whether that is noise
    wrote["selection"]["moves"].update(best=1)
    wrote["selection"]["moves"]["candidates"][0]["behind_best"] = {"lead": 0.5, "se": 0.4}
    assert "; lead 0.50, paired s.e. 0.40: not told apart, under 2 s.e.)" in format_search_summary(wrote, out)
    wrote["selection"]["moves"]["candidates"][0]["behind_best"] = {"lead": 1.0, "se": 0.2}
    assert "; lead 1.00, paired s.e. 0.20)" in format_search_summary(wrote, out)
    assert f"chosen: candidate {sel['candidate'] + 1} of 3, held-out accuracy {pick_score:.2f} after 48 " in text
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    assert [e.value for e in acc.Scalars("select/moves_finetuned_holdout")] == pytest.approx(
        [m["holdout"] for m in moves])
    assert any(t.startswith("select/moves") for t in acc.Tags()["tensors"])


def test_a_finished_search_started_afresh_is_no_longer_up_to_date(searched, tiny_teacher, tiny_probes, sst2_dir,
                                                                   tmp_path):
    out = tmp_path / "afresh"
    shutil.copytree(searched[0], out)
    s = _searcher(tiny_teacher, tiny_probes, sst2_dir, out, **SELECT)
    assert s.up_to_date()
    assert s.run(max_steps=2) is None  # stopped early: arch.json is the old run's, the checkpoint the new one's
    assert not _searcher(tiny_teacher, tiny_probes, sst2_dir, out, **SELECT).up_to_date()


def test_search_in_bf16_learns_and_its_selection_finetunes_in_bf16(tiny_teacher, tiny_probes, sst2_dir, tmp_path):
    out = tmp_path / "bf16"
    summary = _searcher(tiny_teacher, tiny_probes, sst2_dir, out, bf16=True, select_top=2, select_steps=24).run()
    assert summary["selection"]["supernet_holdout"]["accuracy"] >= 80.0
    load_arch(out / "arch.json", load_search_space("tiny"))
    assert json.loads((out / "meta.json").read_text())["config"]["bf16"] is True
    for i in range(2):
        assert json.loads((out / "select" / f"candidate-{i}" / "meta.json").read_text())["config"]["bf16"] is True


def test_resume_refuses_other_settings(tiny_teacher, tiny_probes, sst2_dir, tmp_path):
    from adabert.core.errors import AdabertError

    out = tmp_path / "s"
    _searcher(tiny_teacher, tiny_probes, sst2_dir, out, epochs=1).run(max_steps=2)
    with pytest.raises(AdabertError, match="checkpoint was made with other inputs or settings"):
        _searcher(tiny_teacher, tiny_probes, sst2_dir, out, epochs=1, beta=3.0).run(resume=True)


def test_resume_refuses_a_checkpoint_of_another_model(tiny_teacher, tiny_probes, sst2_dir, tmp_path):
    """A checkpoint whose tensors do not fit today's model (an older version built it otherwise) is a one-line
    error naming the file and the tensors, not a traceback from load_state_dict."""
    from adabert.core.checkpoint import load_checkpoint, save_checkpoint
    from adabert.core.errors import AdabertError

    out = tmp_path / "s"
    _searcher(tiny_teacher, tiny_probes, sst2_dir, out, epochs=1).run(max_steps=2)
    (path,) = [p for p in out.parent.rglob("*.safetensors") if "checkpoint" in p.name]
    tensors, record = load_checkpoint(path)
    gone = sorted(k for k in tensors if k.startswith("model0.heads.0."))[0]
    del tensors[gone]
    save_checkpoint(path, tensors, record)
    expected = re.escape(f"{path}: the checkpoint does not fit") + f".*missing {gone[len('model0.'):]}"
    with pytest.raises(AdabertError, match=expected):
        _searcher(tiny_teacher, tiny_probes, sst2_dir, out, epochs=1).run(resume=True)


def test_larger_beta_gives_cheaper_architectures(tiny_teacher, tiny_probes, sst2_dir, tmp_path):
    costs = {}
    for beta in (0.0, 20.0):
        s = _searcher(tiny_teacher, tiny_probes, sst2_dir, tmp_path / f"b{beta}", epochs=3, beta=beta, evals=1)
        s.run()
        costs[beta] = s.expected_cost().item()
    assert costs[20.0] < 0.8 * costs[0.0]


@pytest.fixture(scope="module")
def order_task(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("order")
    data_dir = write_word_order(root / "data")
    teacher, probes = teacher_and_probes(tiny_base, load_task_data(get_task("sst2"), data_dir), root, epochs=2)
    return data_dir, teacher, probes


def test_search_keeps_convolutions_where_word_order_decides(order_task, tmp_path):
    """No bag of words (pooling, identity) separates "good bad" from "bad good": the convolutions must win."""
    data_dir, teacher, probes = order_task
    s = _searcher(teacher, probes, data_dir, tmp_path / "s", epochs=25, gamma=0.0, beta=0.0, evals=1, lr=3e-3)
    s.run()
    arch = load_arch(tmp_path / "s" / "arch.json")
    p = torch.softmax(s.model.alpha.detach(), -1)
    conv = [arch.space.ops.index(o) for o in ("cnn3", "dil_cnn3")]
    assert float(p[:, conv].sum(-1).max()) > 0.9  # some edge has decided for a convolution
    assert any(op in ("cnn3", "dil_cnn3") for node in arch.cell for _, op in node)


def test_small_budget_picks_a_parameter_free_cell(order_task, tmp_path, adabert_log):
    data_dir, teacher, probes = order_task
    space = load_search_space("tiny")
    params = measure_cost_model(space, "params", num_labels=2, pair=False)
    s = _searcher(teacher, probes, data_dir, tmp_path / "s", epochs=2, target_params=params.per_cell, evals=1)
    summary = s.run()
    arch = load_arch(tmp_path / "s" / "arch.json")
    assert arch.num_cells == 1 and all(op in ("max_pool3", "identity") for node in arch.cell for _, op in node)
    assert summary["efficiency"]["budget"]["within"]
    assert "has no parameters" not in adabert_log.text  # asked for: no warning


def test_a_parameter_free_cell_nobody_asked_for_is_warned_about(order_task, tmp_path, adabert_log):
    """Without a budget, beta pricing every convolution out (here beta 1000 on word order, which only the
    convolutions can read) ends in a cell of pools and identities: the search says so and names the way out."""
    data_dir, teacher, probes = order_task
    _searcher(teacher, probes, data_dir, tmp_path / "s", epochs=2, beta=1000.0, evals=1).run()
    arch = load_arch(tmp_path / "s" / "arch.json")
    assert all(op in ("max_pool3", "identity", "zero") for node in arch.cell for _, op in node)
    assert "the cell chosen has no parameters" in adabert_log.text and "--target-params" in adabert_log.text


def test_budgets_are_met(tiny_teacher, tiny_probes, sst2_dir, tmp_path, capsys):
    space = load_search_space("tiny")
    params = measure_cost_model(space, "params", num_labels=2, pair=False)
    low, high = params.bounds(space)
    s = _searcher(tiny_teacher, tiny_probes, sst2_dir, tmp_path / "t1", epochs=2, target_params=2 * low, beta=5.0,
                  evals=1)
    budget = s.run()["efficiency"]["budget"]
    assert budget["within"] and abs(budget["cost"] / (2 * low) - 1) <= 0.1, budget
    target = round((low + high) / 2)  # the same through the command line, which reports cost and target
    toy = {**TOY, "epochs": 2, "beta": 5.0, "evals": 1, "target_params": target}
    code, out, err = run_cli(["search", "--task", "sst2", "--data-dir", sst2_dir, "--teacher", tiny_teacher,
                              "--probes", tiny_probes, "--search-space", "tiny", "--output-dir", tmp_path / "t2",
                              *[a for k, v in toy.items() for a in (f"--{k.replace('_', '-')}", v)]], capsys)
    assert code == 0, err
    budget = load_arch(tmp_path / "t2" / "arch.json").info["efficiency"]["budget"]
    assert budget["within"] and abs(budget["cost"] / target - 1) <= 0.1, budget
    assert f"cost {budget['cost']:,.0f} params (target {target:,} params)" in out


def test_budget_below_the_cheapest_student_is_refused(tiny_teacher, tiny_probes, sst2_dir, tmp_path, capsys):
    code, _, err = run_cli(["search", "--task", "sst2", "--data-dir", sst2_dir, "--teacher", tiny_teacher,
                            "--probes", tiny_probes, "--search-space", "tiny", "--target-params", 10,
                            "--output-dir", tmp_path / "s"], capsys)
    assert code == 2 and "--target-params: 10 is below the cheapest student" in err
    assert not (tmp_path / "s").exists()


def test_restarts_write_the_cheapest_pick_not_told_from_the_best_score(searched, tiny_teacher, tiny_probes, sst2_dir,
                                                                      tmp_path, capsys, monkeypatch):
    from adabert.cli import format_search_summary
    from adabert.nas.restarts import make_searcher, supernet_dir
    from adabert.nas.select import cheapest_not_told_apart

    out_seed0, _ = searched
    out = tmp_path / "restarts"
    shutil.copytree(out_seed0, out / "seed-0")  # a finished search of seed 0 is restart 0, reused as it is
    before = (out / "seed-0" / "arch.json").read_bytes(), (out / "seed-0" / "checkpoint.safetensors").stat().st_mtime
    toy = {**TOY, **SELECT, "restarts": 2}
    code, printed, err = run_cli(["search", "--task", "sst2", "--data-dir", sst2_dir, "--teacher", tiny_teacher,
                                  "--probes", tiny_probes, "--search-space", "tiny", "--output-dir", out, "--resume",
                                  *[a for k, v in toy.items() for a in (f"--{k.replace('_', '-')}", v)]], capsys)
    assert code == 0, err
    assert before == ((out / "seed-0" / "arch.json").read_bytes(),
                      (out / "seed-0" / "checkpoint.safetensors").stat().st_mtime)
    subs = [json.loads((out / f"seed-{s}" / "search_metrics.json").read_text()) for s in (0, 1)]
    scores = [s["selection"]["finetuned_holdout"] for s in subs]
    best, other = (1, 0) if scores[1] > scores[0] else (0, 1)
    arch = load_arch(out / "arch.json")
    sel = arch.info["selection"]
    records = sel["restarts"]
    assert sel["restart_best"] == best and [r["finetuned_holdout"] for r in records] == scores
    assert [r["seed"] for r in records] == [0, 1] and "behind_best" not in records[best]
    # the best pick's paired lead over the other is measured on their saved students: their scores' difference
    lead, se = records[other]["behind_best"]["lead"], records[other]["behind_best"]["se"]
    assert lead == pytest.approx(scores[best] - scores[other], abs=1e-6) and se >= 0
    # beta 1 and no target price cost: the cheapest pick the best score does not lead by 2 s.e. is written
    written = cheapest_not_told_apart(best, [{"holdout": r["finetuned_holdout"], **r} for r in records],
                                      [r["cost"] for r in records])
    assert sel["restart"] == written and arch.genotype() == subs[written]["genotype"]
    assert json.loads((out / f"seed-{written}" / "arch.json").read_text())["cell"] == arch.to_json()["cell"]
    assert (out / "checkpoint.safetensors").samefile(out / f"seed-{written}" / "checkpoint.safetensors")
    assert supernet_dir(out) == out / f"seed-{written}" and supernet_dir(out_seed0) == out_seed0
    assert f"restarts: seed 0 {scores[0]:.2f}, seed 1 {scores[1]:.2f}; wrote seed {written}'s pick" in printed
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("select/restart_finetuned_holdout")] == [
        (0, pytest.approx(scores[0])), (1, pytest.approx(scores[1]))]
    assert any(t.startswith("select/restarts") for t in acc.Tags()["tensors"])
    # seed 1 is the search `--seed 1` runs alone: same supernet record
    meta = json.loads((out / "seed-1" / "meta.json").read_text())
    assert meta["config"]["seed"] == 1 and "restarts" not in meta["config"]
    # a finished run is read back, nothing runs again
    monkeypatch.setattr("adabert.nas.search.Searcher.run", lambda *a, **k: pytest.fail("ran again"))
    cfg = SearchConfig(**toy)
    data = load_task_data(get_task("sst2"), sst2_dir)
    again = make_searcher(TaskBundle(data, tiny_teacher, tiny_probes), load_search_space("tiny"), cfg, out,
                          torch.device("cpu")).ensure()
    assert again["genotype"] == arch.genotype() and again["supernet_dir"] == f"seed-{written}"
    # when the other pick is cheaper and within 2 s.e. of the best score, it is written, and the summary says why
    for sub, cost in ((subs[best], 2000.0), (subs[other], 1000.0)):
        sub["efficiency"]["budget"]["cost"] = cost
    monkeypatch.setattr("adabert.nas.select.separate_best",
                        lambda best, picks, *a, **k: picks[other].update(behind_best={"lead": 0.5, "se": 0.3}))
    forced = make_searcher(TaskBundle(data, tiny_teacher, tiny_probes), load_search_space("tiny"), cfg, out,
                           torch.device("cpu")).combine(subs)
    sel = load_arch(out / "arch.json").info["selection"]
    assert sel["restart"] == other and sel["restart_best"] == best and forced["supernet_dir"] == f"seed-{other}"
    assert (out / "checkpoint.safetensors").samefile(out / f"seed-{other}" / "checkpoint.safetensors")
    assert (f"cheaper than the best-scored pick, seed {best}'s (2,000 params against 1,000 params), and not told "
            "apart from it: --beta prices cost") in format_search_summary(forced, out)
    # with a target the best score is written, whatever the leads
    at_target = make_searcher(TaskBundle(data, tiny_teacher, tiny_probes), load_search_space("tiny"),
                              replace(cfg, target_params=1500.0), out, torch.device("cpu")).combine(subs)
    assert at_target["supernet_dir"] == f"seed-{best}"


def test_restarts_need_a_selection(tiny_teacher, tiny_probes, sst2_dir, tmp_path, capsys):
    code, _, err = run_cli(["search", "--task", "sst2", "--data-dir", sst2_dir, "--teacher", tiny_teacher,
                            "--probes", tiny_probes, "--search-space", "tiny", "--restarts", 2, "--select-top", 1,
                            "--output-dir", tmp_path / "s"], capsys)
    assert code == 2 and "--restarts" in err and "--select-top 2" in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_augmented_copies_train_the_weights_of_their_own_rows_only(tiny_teacher, tiny_probes, sst2_dir, tmp_path):
    """With `--augment`, the weight rows gain the copies of their own examples; the rows that measure the choices
    (and their copies) stay out of the weights' training, and each row keeps its label and teacher logits."""
    import numpy as np

    from adabert.core.fileio import read_json
    from adabert.teacher.augment import AugmentConfig, load_augmented, run_augment

    data = load_task_data(get_task("sst2"), sst2_dir)
    run_augment(str(tiny_teacher), data, AugmentConfig(copies=2, pos_prob=0.0, max_length=32), tmp_path / "aug",
                torch.device("cpu"))
    aug = load_augmented(tmp_path / "aug", data)
    bundle = TaskBundle(data, tiny_teacher, tiny_probes, tmp_path / "aug")
    s = Searcher(bundle, load_search_space("tiny"), SearchConfig(**{**TOY, "epochs": 2}), tmp_path / "s",
                 torch.device("cpu"))
    plain = _searcher(tiny_teacher, tiny_probes, sst2_dir, tmp_path / "plain")
    n_fit = len(data.fit)
    assert len(s.enc) == len(s.labels) == len(s.kd) == n_fit + len(aug.data)
    assert (s.e_rows < n_fit).all() and set(s.e_rows) == set(plain.e_rows)  # the same real rows measure choices
    own, copies = s.w_rows[s.w_rows < n_fit], s.w_rows[s.w_rows >= n_fit] - n_fit
    assert set(own) == set(plain.w_rows) and len(copies) > len(own)
    assert set(aug.source[copies]) <= set(own)
    assert np.isin(aug.source, s.e_rows).sum() + len(copies) == len(aug.data)  # only copies of estimate rows left out
    assert torch.equal(s.kd[n_fit:], aug.teacher) and (s.labels[n_fit:].numpy() == aug.data.labels).all()
    assert s.steps_per_epoch > plain.steps_per_epoch
    wide = bundle.with_holdout_fraction(0.3)  # `--selection-fraction`: the copies of rows still fit, renumbered
    rows = np.flatnonzero(np.isin(data.train_idx[aug.source], wide.data.train_idx))
    assert 0 < len(rows) < len(aug.data) and len(wide.augmented.data) == len(rows)
    assert np.array_equal(wide.data.train_idx[wide.augmented.source], data.train_idx[aug.source[rows]])
    assert torch.equal(wide.augmented.teacher, aug.teacher[torch.from_numpy(rows)])
    assert wide.augmented.data.texts == [aug.data.texts[i] for i in rows]
    s.run()
    assert load_arch(tmp_path / "s" / "arch.json").num_cells >= 1
    assert read_json(tmp_path / "s" / "meta.json", "meta")["inputs"]["augment"]  # a new augment set: search again
    from adabert.nas.restarts import RestartSearch

    restarts = RestartSearch(bundle, load_search_space("tiny"), SearchConfig(**{**TOY, **SELECT, "restarts": 2}),
                             tmp_path / "r", torch.device("cpu"))
    assert restarts.inputs == s.inputs  # the pick of restarts is redone for new augmented text too


def test_disjoint_split_keeps_the_text_of_estimate_and_held_out_rows_from_the_weights(tiny_base, tmp_path,
                                                                                      adabert_log):
    """`--holdout-split disjoint` on phrase-structured rows: the choices are measured, and the selection scores, on
    whole texts none of whose phrases the supernet's weights trained on; the search runs on that cut."""
    from adabert.core.errors import AdabertError
    from adabert.core.fileio import read_json

    data = load_task_data(get_task("sst2"), write_sst2_phrases(tmp_path / "SST-2"), 0.2, 2000, 0, "disjoint")
    teacher, probes = teacher_and_probes(tiny_base, data, tmp_path, epochs=1)
    s = Searcher(TaskBundle(data, teacher, probes), load_search_space("tiny"), SearchConfig(**{**TOY, "epochs": 2}),
                 tmp_path / "s", torch.device("cpu"))
    fit = [f" {t[0]} " for t in data.fit.texts]
    weights = [fit[i] for i in s.w_rows]
    assert len(s.e_rows) >= 4 and not set(s.w_rows) & set(s.e_rows)
    assert len(s.w_rows) + len(s.e_rows) < len(fit)  # the phrases of estimate rows are in neither part
    for text in [fit[i] for i in s.e_rows] + [f" {t[0]} " for t in data.holdout.texts]:
        assert not any(w in text for w in weights)
    assert s.run()["arch"]
    # `--selection-fraction`: the whole search holds out a wider slice, cut alike, and its selection scores on it
    w = Searcher(TaskBundle(data, teacher, probes), load_search_space("tiny"),
                 SearchConfig(**{**TOY, **SELECT, "epochs": 2, "selection_fraction": 0.3}), tmp_path / "w",
                 torch.device("cpu"))
    assert w.inputs == s.inputs  # a setting of the search: the stages before and after keep their slice
    assert set(data.holdout_idx) < set(w.data.holdout_idx) and len(w.data.fit) < len(data.fit)
    assert set(w.data.train_idx) < set(data.train_idx)
    wide_fit = [f" {t[0]} " for t in w.data.fit.texts]
    for text in w.data.holdout.texts:
        assert not any(f in f" {text[0]} " for f in wide_fit)
    w.run()
    rows = len(w.data.holdout)
    assert f"over {rows} rows" in adabert_log.text or f"on held-out ({rows} rows)" in adabert_log.text
    assert read_json(tmp_path / "w" / "meta.json", "meta")["config"]["selection_fraction"] == 0.3
    with pytest.raises(AdabertError, match="rows inside them .* or a smaller --selection-fraction"):
        TaskBundle(data, teacher, probes).with_holdout_fraction(0.6)
    with pytest.raises(AdabertError, match=r"--selection-fraction: expected a number in \[0, 1\)"):
        SearchConfig(selection_fraction=1.0)
