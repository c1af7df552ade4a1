import json
import os
import subprocess
import sys

import numpy as np
import torch
from conftest import run_cli, save_tiny_bert

from adabert.core.schedule import epochs_to_reach
from adabert.data.dataset import load_task_data
from adabert.data.tasks import get_task
from adabert.teacher.model import TeacherConfig, evaluate_teacher, finetune_teacher, load_classifier, load_tokenizer


def test_tiny_teacher_learns_the_toy_task(tiny_base, tiny_teacher, sst2_dir):
    data = load_task_data(get_task("sst2"), sst2_dir)
    tok = load_tokenizer(str(tiny_base))
    torch.manual_seed(0)
    before = evaluate_teacher(load_classifier(str(tiny_base), data.task), tok, data.dev, 32, torch.device("cpu"))
    after = evaluate_teacher(load_classifier(str(tiny_teacher)), tok, data.dev, 32, torch.device("cpu"))
    assert after["accuracy"] >= 85.0
    assert after["accuracy"] > before["accuracy"] + 20
    metrics = json.loads((tiny_teacher / "metrics.json").read_text())
    assert metrics["dev"]["accuracy"] == after["accuracy"]
    meta = json.loads((tiny_teacher / "meta.json").read_text())
    assert meta["stage"] == "teacher" and set(meta["inputs"]) == {"data", "base_model"}
    assert (tiny_teacher / "model.safetensors").is_file() and (tiny_teacher / "tokenizer.json").is_file()


def test_teacher_skips_when_up_to_date(tiny_base, tiny_teacher, sst2_dir, capsys):
    before = (tiny_teacher / "model.safetensors").stat().st_mtime_ns
    code, out, _ = run_cli(["teacher", "--task", "sst2", "--data-dir", sst2_dir, "--model", tiny_base,
                            "--epochs", 8, "--min-steps", 0, "--batch-size", 16, "--lr", 3e-3, "--max-length", 32,
                            "--output-dir", tiny_teacher], capsys)
    assert code == 0 and "dev: accuracy" in out
    assert (tiny_teacher / "model.safetensors").stat().st_mtime_ns == before


def test_teacher_path_that_is_not_a_model_folder(tmp_path, sst2_dir, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(["teacher", "--task", "sst2", "--data-dir", sst2_dir, "--model", tmp_path / "empty",
                            "--output-dir", tmp_path / "out"], capsys)
    assert code == 2 and "empty: not a model folder" in err and "Traceback" not in err
    code, _, err = run_cli(["probes", "--task", "sst2", "--data-dir", sst2_dir, "--teacher", "./missing/dir",
                            "--output-dir", tmp_path / "out"], capsys)
    assert code == 2 and "./missing/dir: no such model folder" in err
    assert not (tmp_path / "out").exists()


def test_bad_numbers_are_field_errors(tmp_path, sst2_dir, tiny_base, capsys):
    code, _, err = run_cli(["teacher", "--task", "sst2", "--data-dir", sst2_dir, "--model", tiny_base,
                            "--epochs", 0, "--output-dir", tmp_path / "out"], capsys)
    assert code == 2 and "--epochs: expected a positive integer, got 0" in err


def test_hub_id_loads_from_the_local_hub_cache_offline(tmp_path, sst2_dir):
    """The hub-id path: a model id resolved by huggingface_hub from its cache layout, with the network off."""
    snap = tmp_path / "hub" / "models--adabert-test--tiny-bert" / "snapshots" / ("0" * 40)
    save_tiny_bert(snap)
    refs = tmp_path / "hub" / "models--adabert-test--tiny-bert" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("0" * 40)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "adabert", "teacher", "--task", "sst2", "--data-dir", str(sst2_dir),
                           "--model", "adabert-test/tiny-bert", "--epochs", "1", "--min-steps", "0",
                           "--max-length", "16", "--output-dir", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["inputs"]["base_model"] == "hub:adabert-test/tiny-bert"
    proc = subprocess.run([sys.executable, "-m", "adabert", "teacher", "--task", "sst2", "--data-dir", str(sst2_dir),
                           "--model", "adabert-test/not-there", "--output-dir", str(tmp_path / "out2")],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "adabert-test/not-there: cannot load" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def write_scored_pairs(folder, n: int = 40) -> None:
    """An STS-B-shaped task of `n` scored pairs (train and dev alike)."""
    rows = ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"]
    rng = np.random.default_rng(0)
    for i in range(n):
        rows.append(f"{i}\tg\tf\ty\t{i}\ts\ts\tgood film {i}\tbad film\t{rng.uniform(0, 5):.2f}")
    for name in ("train.tsv", "dev.tsv"):
        (folder / name).write_text("\n".join(rows) + "\n")


def test_regression_task_teacher(tmp_path, tiny_base):
    write_scored_pairs(tmp_path)
    data = load_task_data(get_task("stsb"), tmp_path)
    m = finetune_teacher(str(tiny_base), data, TeacherConfig(epochs=1, min_steps=0, max_length=16), tmp_path / "out",
                         torch.device("cpu"))
    assert set(m["dev"]) == {"pearson", "spearman"}


def test_a_small_task_trains_more_epochs_to_reach_min_steps(tmp_path, tiny_base, adabert_log):
    write_scored_pairs(tmp_path)
    data = load_task_data(get_task("stsb"), tmp_path)
    steps_per_epoch = -(-len(data.fit) // 16)
    assert steps_per_epoch >= 2
    min_steps = 2 * steps_per_epoch + 1  # two epochs fall one step short: a third runs
    m = finetune_teacher(str(tiny_base), data, TeacherConfig(epochs=1, min_steps=min_steps, batch_size=16,
                                                             max_length=16), tmp_path / "out", torch.device("cpu"))
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3]
    assert m["history"][-1]["step"] == 3 * steps_per_epoch
    assert f"teacher: 3 epochs of {steps_per_epoch} steps, to reach --min-steps {min_steps}" in adabert_log.text
    assert epochs_to_reach("teacher", 5, min_steps, steps_per_epoch) == 5  # more epochs asked than the minimum needs
    assert epochs_to_reach("teacher", 1, 0, steps_per_epoch) == 1
