import json
import re

import numpy as np
import pytest
import torch
from conftest import run_cli

from adabert.data.dataset import load_task_data
from adabert.data.demo_task import write_demo_task
from adabert.data.metrics import baseline_warning
from adabert.data.tasks import get_task
from adabert.nas.arch import random_arch
from adabert.nas.costs import measure_cost_model
from adabert.nas.search_space import load_search_space


def test_demo_task_is_deterministic_and_balanced(tmp_path):
    a = write_demo_task(tmp_path / "a", train_size=400, dev_size=100, seed=3)
    b = write_demo_task(tmp_path / "b", train_size=400, dev_size=100, seed=3)
    assert (a / "train.tsv").read_bytes() == (b / "train.tsv").read_bytes()
    data = load_task_data(get_task("sst2"), a)
    assert len(data.train) == 400 and len(data.dev) == 100
    assert 0.35 < data.train.labels.mean() < 0.65
    negated = [t[0] for t, y in zip(data.train.texts, data.train.labels) if " not " in t[0]]
    assert negated, "the demo task must contain negations"


def test_pipeline_runs_every_stage_and_skips_when_up_to_date(tiny_teacher, sst2_dir, tmp_path, capsys):
    space = load_search_space("tiny")
    params = measure_cost_model(space, "params", num_labels=2, pair=False)
    costs = sorted({params.arch_cost(random_arch(space, np.random.default_rng(i))) for i in range(40)})
    target = costs[len(costs) // 2]  # a budget the tiny space can build
    args = ["pipeline", "--task", "sst2", "--data-dir", sst2_dir, "--teacher", tiny_teacher, "--search-space", "tiny",
            "--search-epochs", 1, "--select-top", 1, "--move-steps", 8, "--selection-fraction", 0.2,
            "--finetune-epochs", 2, "--max-length", 16, "--target-params", target, "--export-format", "torchscript",
            "--export-format", "pt2", "--output-dir", tmp_path / "run"]  # --augment-copies auto: 16 copies
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    budget = summary["budget"]  # the search ran to the stated budget and the summary says how the student met it
    assert budget["target"] == target and budget["within"] and abs(budget["cost"] / target - 1) <= 0.1
    assert f"search budget: {target:,.0f} params; the student's searched part costs {budget['cost']:,.0f}" in out
    assert {"teacher", "student", "files", "stage_seconds"} <= set(summary)
    assert summary["student"]["params"] < summary["teacher"]["params"]
    for f in ("arch", "student", "bench"):
        assert (tmp_path / "run" / "search" / "arch.json").is_file() and summary["files"][f]
    exported = tmp_path / "run" / "export"  # --export-format reached the export stage
    assert set(summary["files"]["export"]) == {"torchscript", "pt2"} and (exported / "model.pt2").is_file()
    assert not (exported / "model.onnx").exists()
    moves = json.loads((tmp_path / "run" / "search" / "arch.json").read_text())["selection"]["moves"]
    assert moves["steps"] == 8 and len(moves["candidates"]) > 1  # --move-steps reached the search
    assert (tmp_path / "run" / "search" / "moves" / "candidate-1" / "metrics.json").is_file()
    student = json.loads((tmp_path / "run" / "student" / "metrics.json").read_text())
    fit = len(load_task_data(get_task("sst2"), sst2_dir).fit)
    assert summary["student"]["augment_copies"] == 16 and "trained with 16 augmented copies of each example" in out
    assert fit * 10 < student["train_examples"] <= fit * 17   # augmented text used (duplicate draws are dropped)
    search_meta = json.loads((tmp_path / "run" / "search" / "meta.json").read_text())
    assert search_meta["inputs"]["augment"]  # by the search too
    assert search_meta["config"]["selection_fraction"] == 0.2  # the search alone held out the wider slice
    assert "teacher" in out and "student" in out and "speed-up" in out and "majority class" in out
    fidelity = summary["student"]["teacher_agreement"]
    assert fidelity["dev"] == student["dev_teacher_agreement"] and 0 <= fidelity["dev"] <= 100
    assert f"fidelity on dev: {fidelity['dev']:.2f} % same label as the teacher" in out
    data = load_task_data(get_task("sst2"), sst2_dir)
    majority = int(data.fit.labels.mean() > 0.5)
    assert summary["majority_baseline"]["dev"]["accuracy"] == pytest.approx(100 * (data.dev.labels == majority).mean())
    assert summary["warning"] is None and "majority-class" not in err  # the tiny teacher learned the toy task
    assert summary["student_warning"] is None  # and so did its student
    from adabert.pipeline import format_summary

    majority = summary["majority_baseline"]["dev"]["accuracy"]
    weak = {**summary, "student": {**summary["student"], "dev": {"accuracy": majority - 1.0}}}
    weak["student_warning"] = baseline_warning(get_task("sst2"), weak["student"]["dev"], {"accuracy": majority},
                                               who="student")
    assert f"warning: the student's dev accuracy ({majority - 1:.2f}) is below the majority-class" in \
        format_summary(weak)
    assert summary["student_aoti_latency_ms"] is None and "student (aoti)" not in out  # no aoti export, no such row
    t = summary["teacher"]["latency_ms"]
    served = {**summary, "student_aoti_latency_ms": t / 40}  # as the bench stage reports an aoti package's time
    assert re.search(rf"student \(aoti\) +{t / 40:.2f} +40\.0x", format_summary(served))
    stamp = (tmp_path / "run" / "student" / "model.safetensors").stat().st_mtime_ns
    arch_stamp = (tmp_path / "run" / "search" / "arch.json").stat().st_mtime_ns
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert (tmp_path / "run" / "student" / "model.safetensors").stat().st_mtime_ns == stamp
    assert (tmp_path / "run" / "search" / "arch.json").stat().st_mtime_ns == arch_stamp


def test_preset_runs_epochs_given_as_given_and_the_demo_small():
    from adabert.nas.config import SearchConfig
    from adabert.pipeline import preset
    from adabert.teacher.config import auto_copies
    from adabert.teacher.model import TeacherConfig

    real = preset(False, 5000, augment_copies=0)  # small tasks: each stage raised to its minimum steps
    assert (real.teacher.min_steps, real.search.min_steps) == (TeacherConfig.min_steps, SearchConfig.min_steps)
    assert real.augment is None and real.search.max_length == 64 and real.teacher.max_length == 128
    given = preset(False, 5000, teacher_epochs=2, search_epochs=3, beta=0.5, target_params=1e5)
    assert (given.teacher.epochs, given.teacher.min_steps, given.search.epochs, given.search.min_steps) == (2, 0, 3, 0)
    assert (given.search.beta, given.search.target_params, given.augment.copies) == (0.5, 1e5, auto_copies(5000))
    demo = preset(True, 1800)
    assert demo.augment is None and (demo.search.min_steps, demo.teacher.min_steps) == (0, 0)
    assert (demo.teacher.epochs, demo.search.epochs, demo.finetune.epochs) == (1, 6, 30)


def test_every_stage_has_help_that_states_each_default_once():
    from adabert.cli import build_parser

    parser = build_parser()
    stages = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    assert {"teacher", "probes", "search", "finetune", "study", "pipeline"} <= set(stages)
    for name, sub in stages.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            shown = formatter._get_help_string(action) or ""
            assert shown.count("(default:") <= 1, (name, action.dest, shown)
        assert "--help" in sub.format_help()


@pytest.mark.parametrize("argv", [["--help"], ["finetune", "--help"], ["search", "--help"], ["distill", "--help"]])
def test_help_loads_neither_torch_nor_transformers(argv):
    import subprocess
    import sys

    code = (f"import sys\nfrom adabert.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit as e:\n"
            "    rc = e.code\nprint(rc, 'torch' in sys.modules, 'transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "0 False False", done.stderr
    assert "usage: adabert" in done.stdout and (argv == ["--help"] or "--output-dir" in done.stdout)


def test_summary_level_keeps_a_few_evenly_spaced_lines_and_the_last():
    import logging

    from adabert.core.runtime import summary_level

    levels = [summary_level(i, 60) for i in range(60)]
    info = [i for i, lv in enumerate(levels) if lv == logging.INFO]
    assert len(info) == 4 and info[-1] == 59 and info == [14, 29, 44, 59]
    assert all(summary_level(i, 3) == logging.INFO for i in range(3))


def test_auto_augmentation_follows_the_size_of_the_training_set():
    from adabert.teacher.config import auto_copies

    assert [auto_copies(n) for n in (200, 2_700, 3_301, 7_650, 20_000, 24_001, 65_349)] == [16, 16, 13, 5, 1, 0, 0]


def test_pipeline_augmentation_settings(monkeypatch, adabert_log):
    import adabert.pipeline
    from adabert.pipeline import augment_config
    from adabert.teacher.config import AugmentConfig

    base = AugmentConfig(max_length=32, seed=3)
    assert augment_config(0, 2_700, False, base) is None
    assert augment_config(2, 90_000, False, base).copies == 2  # a count is taken as given
    assert augment_config("auto", 90_000, False, base) is None
    assert augment_config("auto", 2_700, True, base) is None  # the demo keeps to its few minutes
    auto = augment_config("auto", 7_650, False, base)
    assert (auto.copies, auto.pos_prob, auto.seed, auto.max_length) == (5, base.pos_prob, 3, 32)
    monkeypatch.setattr(adabert.pipeline, "tagger_installed", lambda model: False)
    bare = augment_config("auto", 7_650, False, base)
    assert (bare.copies, bare.pos_prob, bare.mask_prob) == (5, 0.0, base.mask_prob)  # masks and n-grams still run
    assert "without POS-guided replacement" in adabert_log.text and "adabert[augment]" in adabert_log.text


def test_a_teacher_at_the_majority_class_is_reported_before_the_search(monkeypatch, sst2_dir, tmp_path, adabert_log):
    import adabert.pipeline
    from adabert.core.errors import AdabertError
    from adabert.nas.config import SearchConfig
    from adabert.pipeline import PipelineConfig, run_pipeline
    from adabert.students.config import FinetuneConfig
    from adabert.teacher.config import ProbeConfig, TeacherConfig

    data = load_task_data(get_task("sst2"), sst2_dir)
    majority = 100 * float((data.dev.labels == int(data.fit.labels.mean() > 0.5)).mean())
    weak = {"teacher_dev": {"accuracy": majority + 1.5, "f1": 50.0}}  # within 2 points of the majority class

    def search(*args, **kwargs):  # the hour-long stages start here; the user must have been told already
        assert "within 2 points of the majority-class baseline" in adabert_log.text
        raise AdabertError("stopped at the search")

    monkeypatch.setattr(adabert.pipeline, "run_probes", lambda *args, **kwargs: weak)
    monkeypatch.setattr(adabert.pipeline, "make_searcher", search)
    cfg = PipelineConfig(TeacherConfig(), ProbeConfig(), SearchConfig(), FinetuneConfig())
    with pytest.raises(AdabertError, match="stopped at the search"):
        run_pipeline(data, tmp_path, cfg, load_search_space("tiny"), torch.device("cpu"), teacher="unused")
    assert f"the teacher's dev accuracy ({majority + 1.5:.2f})" in adabert_log.text
    assert "a student of this teacher is no evidence" in adabert_log.text


def test_pipeline_teacher_epochs_are_raised_on_small_tasks_unless_given(monkeypatch, sst2_dir, tmp_path, capsys):
    import adabert.pipeline
    from adabert.teacher.config import TeacherConfig

    seen = []
    monkeypatch.setattr(adabert.pipeline, "run_pipeline", lambda data, out, cfg, *a, **k: seen.append(cfg.teacher))
    monkeypatch.setattr(adabert.pipeline, "format_summary", lambda summary: "")
    task = ["--task", "sst2", "--data-dir", sst2_dir]
    for args in (task, [*task, "--teacher-epochs", 3], []):  # the last: the demo, which keeps to its minutes
        code, _, err = run_cli(["pipeline", *args, "--output-dir", tmp_path / "run"], capsys)
        assert code == 0, err
    assert [(t.epochs, t.min_steps) for t in seen] == [(3, TeacherConfig.min_steps), (3, 0), (1, 0)]


def test_pipeline_with_two_budgets_is_one_line_and_exit_2(sst2_dir, tmp_path, capsys):
    code, _, err = run_cli(["pipeline", "--task", "sst2", "--data-dir", sst2_dir, "--target-params", 300000,
                            "--target-latency-ms", 2, "--output-dir", tmp_path / "run"], capsys)
    assert code == 2 and "give at most one budget" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["-1", "some", "2.5"])
def test_bad_augment_copies_is_one_line_and_exit_2(value, tmp_path, capsys):
    from adabert.cli import main

    with pytest.raises(SystemExit) as e:
        main(["pipeline", "--augment-copies", value, "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"--augment-copies: expected 'auto' or a whole number >= 0, got '{value}'" in err
