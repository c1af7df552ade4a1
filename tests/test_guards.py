"""Numerical guards: a NaN loss term or gradient stops the run naming the term, exit code 3, last good
checkpoint kept, nothing half-written."""

import json

import pytest
import torch
from conftest import run_cli
from safetensors.torch import load_file
from torch import nn

import adabert.nas.search
import adabert.students.finetune
from adabert.core.checkpoint import read_record
from adabert.core.guards import EXIT_NONFINITE, NonFiniteError, all_finite, check_terms, clip_checked
from adabert.data.dataset import load_task_data
from adabert.data.tasks import get_task
from adabert.nas.search import SearchConfig, Searcher
from adabert.nas.search_space import load_search_space
from adabert.teacher.bundle import TaskBundle


def test_check_terms_names_the_bad_term():
    check_terms("step 1", ce=torch.tensor(0.5), kd=1.0)
    with pytest.raises(NonFiniteError, match="step 3: loss term 'kd' is inf"):
        check_terms("step 3", ce=torch.tensor(0.5), kd=torch.tensor([1.0, float("inf")]))
    with pytest.raises(NonFiniteError, match="loss term 'ce' is nan"):
        check_terms("step 3", ce=float("nan"))


def test_clip_checked_names_the_parameter_and_clips():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    model(torch.ones(1, 2)).sum().mul(100).backward()
    norm = clip_checked(model.named_parameters(), 1.0, "step 1")
    assert norm > 1 and torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]) <= 1.0 + 1e-5
    model[1].bias.grad[0] = float("nan")
    with pytest.raises(NonFiniteError, match="step 2: the gradient of '1.bias' is not finite"):
        clip_checked(model.named_parameters(), 1.0, "step 2")


def _nan_from_call(real, first_bad: int):
    calls = {"n": 0}

    def fn(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        return out * float("nan") if calls["n"] >= first_bad else out

    return fn


def test_search_stops_on_nan_and_keeps_the_last_good_checkpoint(tiny_teacher, tiny_probes, sst2_dir, tmp_path,
                                                                  monkeypatch):
    # depth_losses runs twice a step (train batch, estimate batch): call 7 is step 4's training loss
    monkeypatch.setattr(adabert.nas.search, "depth_losses", _nan_from_call(adabert.nas.search.depth_losses, 7))
    data = load_task_data(get_task("sst2"), sst2_dir)
    cfg = SearchConfig(epochs=2, batch_size=32, max_length=16, evals=1, min_steps=0, checkpoint_every=2)
    searcher = Searcher(TaskBundle(data, tiny_teacher, tiny_probes), load_search_space("tiny"), cfg, tmp_path / "s",
                        torch.device("cpu"))
    with pytest.raises(NonFiniteError) as e:
        searcher.run()
    assert "search step 4: loss term 'loss at depth 1' is nan" in str(e.value)
    assert "the last good checkpoint (step 2) is kept" in str(e.value)
    assert read_record(tmp_path / "s" / "checkpoint.safetensors")["step"] == 2
    assert all(torch.isfinite(t).all() for t in load_file(str(tmp_path / "s" / "checkpoint.safetensors")).values()
               if t.is_floating_point())
    assert not (tmp_path / "s" / "arch.json").exists()


def test_finetune_nan_exits_3_keeps_the_last_checkpoint_and_resumes(tiny_teacher, tiny_probes, sst2_dir, tmp_path,
                                                                    monkeypatch, capsys):
    data = load_task_data(get_task("sst2"), sst2_dir)
    Searcher(TaskBundle(data, tiny_teacher, tiny_probes), load_search_space("tiny"),
             SearchConfig(epochs=1, batch_size=32, max_length=16, evals=1, min_steps=0, select_top=1), tmp_path / "s",
             torch.device("cpu")).run()
    monkeypatch.setattr(adabert.students.finetune, "probe_kd", _nan_from_call(adabert.students.finetune.probe_kd, 6))
    args = ["finetune", "--arch", tmp_path / "s" / "arch.json", "--teacher", tiny_teacher, "--probes", tiny_probes,
            "--task", "sst2", "--data-dir", sst2_dir, "--epochs", 1, "--batch-size", 32, "--max-length", 16,
            "--output-dir", tmp_path / "student"]
    code, _, err = run_cli(args, capsys)
    lines = err.strip().splitlines()
    kept = tmp_path / "student.partial" / "finetune.safetensors"
    assert code == EXIT_NONFINITE == 3
    # 7 steps an epoch, evaluations (and checkpoints) after steps 4 and 7; the NaN comes at step 6
    assert lines[-1] == ("adabert: error: finetune epoch 1 step 6: loss term 'KD' is nan; stopped before applying the "
                         f"step; the last good checkpoint (step 4) is kept in {kept}")
    assert "Traceback" not in err and not (tmp_path / "student").exists() and kept.is_file()
    monkeypatch.undo()
    code, _, err = run_cli(args + ["--resume"], capsys)
    assert code == 0, err
    history = json.loads((tmp_path / "student" / "metrics.json").read_text())["history"]
    assert [h["step"] for h in history] == [4, 7] and not kept.parent.exists()


def test_all_finite_finds_a_bad_value_in_any_chunk():
    x = torch.randn(10, 3).half()
    assert all_finite(x, chunk=4)
    x[7, 1] = float("nan")
    assert not all_finite(x, chunk=4)
    assert not all_finite(torch.tensor(float("inf")))
    assert all_finite(torch.empty(0, 3))
