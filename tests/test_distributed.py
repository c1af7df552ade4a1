"""Data-parallel runs under torchrun (2 processes, gloo on CPU) against the same run in one process."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import run_cli, subprocess_env, tiny_arch

from adabert.nas.arch import save_arch

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


def run(args: list, processes: int) -> subprocess.CompletedProcess:
    """`adabert ARGS` in one process, or under torchrun with `processes` processes."""
    launch = [sys.executable, "-m", "adabert"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), "-m",
        "adabert"]
    env = subprocess_env()
    done = subprocess.run(launch + [str(a) for a in args] + ["--threads", "1"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def alpha(folder: Path) -> list[float]:
    arch = json.loads((folder / "arch.json").read_text())
    return [p for edge in arch["alpha_probs"] for p in edge] + arch["depth_probs"]


def search_in_one_and_two_processes(args: list, out: Path) -> tuple[subprocess.CompletedProcess, ...]:
    """A tiny search (`args` added) in one process (OUT/one) and in two (OUT/two): both runs."""
    args = ["search", *args, "--search-space", "tiny", "--task", "sst2", "--epochs", 4, "--min-steps", 0,
            "--batch-size", 32, "--max-length", 16, "--select-top", 1]
    return run(args + ["--output-dir", out / "one"], 1), run(args + ["--output-dir", out / "two"], 2)


def test_two_process_search_matches_one_process(tiny_teacher, tiny_probes, sst2_dir, tmp_path):
    one, two = search_in_one_and_two_processes(["--teacher", tiny_teacher, "--probes", tiny_probes, "--data-dir",
                                                sst2_dir], tmp_path)
    a1, a2 = (json.loads((tmp_path / d / "arch.json").read_text()) for d in ("one", "two"))
    assert a2["cell"] == a1["cell"] and a2["num_cells"] == a1["num_cells"]
    # the same global batch in two halves: the summed gradients differ from one pass only by rounding
    assert max(abs(x - y) for x, y in zip(alpha(tmp_path / "one"), alpha(tmp_path / "two"))) < 1e-3
    # only rank 0 wrote: one TensorBoard event file, one summary on stdout
    assert len(list((tmp_path / "two" / "tensorboard").rglob("events.out.tfevents.*"))) == 1
    assert two.stdout.count("wrote ") == one.stdout.count("wrote ") == 1


def test_two_process_search_runs_its_selection_and_compares_the_candidates(tiny_teacher, tiny_probes, sst2_dir,
                                                                           tmp_path):
    run(["search", "--search-space", "tiny", "--teacher", tiny_teacher, "--probes", tiny_probes, "--task", "sst2",
         "--data-dir", sst2_dir, "--epochs", 2, "--min-steps", 0, "--batch-size", 32, "--max-length", 16,
         "--select-top", 2, "--select-steps", 8, "--output-dir", tmp_path], 2)
    sel = json.loads((tmp_path / "arch.json").read_text())["selection"]
    assert len(sel["candidates"]) == 2
    best, other = sel["candidates"][sel["holdout_best"]], sel["candidates"][1 - sel["holdout_best"]]
    assert other["behind_best"]["lead"] == pytest.approx(best["holdout"] - other["holdout"], abs=1e-6)


def test_two_process_finetune_matches_one_process(tiny_teacher, tiny_probes, sst2_dir, tmp_path):
    save_arch(tiny_arch(), tmp_path / "arch.json")
    args = ["finetune", "--arch", tmp_path / "arch.json", "--teacher", tiny_teacher, "--probes", tiny_probes,
            "--task", "sst2", "--data-dir", sst2_dir, "--epochs", 4, "--batch-size", 32, "--max-length", 16]
    run(args + ["--output-dir", tmp_path / "one"], 1)
    two = run(args + ["--output-dir", tmp_path / "two"], 2)
    m1, m2 = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert [h["step"] for h in m2["history"]] == [h["step"] for h in m1["history"]]
    for h1, h2 in zip(m1["history"], m2["history"]):
        assert abs(h1["loss"] - h2["loss"]) < 1e-3 * max(1.0, abs(h1["loss"]))
    assert abs(m1["dev"]["accuracy"] - m2["dev"]["accuracy"]) <= 2.5  # at most 2 of the 80 dev sentences
    assert two.stdout.count("saved to") == 1 and not list(tmp_path.glob("two.partial"))


def test_more_processes_than_gpus_is_a_one_line_error(tiny_teacher, tiny_probes, sst2_dir, tmp_path, monkeypatch,
                                                      capsys):
    """`--device auto` picks the GPUs under torchrun, one per process: a second process on a one-GPU machine is told
    so before it waits for a process group."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    code, _, err = run_cli(["search", "--task", "sst2", "--data-dir", sst2_dir, "--teacher", tiny_teacher, "--probes",
                            tiny_probes, "--output-dir", tmp_path / "s"], capsys)
    assert code == 2 and err.count("\n") == 1 and not dist.is_initialized()
    assert "torchrun started local rank 1, but torch sees 1 GPU(s)" in err and "--device cpu" in err
    assert not (tmp_path / "s").exists()
