"""Crash-safe resume: each long stage, run as a real subprocess, is killed with SIGKILL once its first checkpoint
exists, resumed with --resume, and must end exactly where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")


def adabert(args: list, timeout: float = 300) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "adabert", *map(str, args), "--threads", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(args: list) -> str:
    """Run the stage to the end; its log (stderr)."""
    proc = adabert(args)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return err


def kill_after(args: list, checkpoint: Path) -> None:
    """Start the stage; SIGKILL it as soon as `checkpoint` exists (it must not have finished by then)."""
    proc = adabert(args)
    deadline = time.time() + 300
    while not checkpoint.is_file():
        assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.communicate()[1][-2000:]}"
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def metrics(folder: Path) -> dict:
    m = json.loads((folder / "metrics.json").read_text())
    m.pop("train_seconds")
    return m


def check_resume(args: list, out: Path, reference: Path, checkpoint: Path) -> None:
    finish(args + ["--output-dir", reference])
    kill_after(args + ["--output-dir", out], checkpoint)
    assert checkpoint.is_file() and not out.exists()
    log = finish(args + ["--output-dir", out, "--resume"])
    assert f"resumed from {checkpoint} at step" in log  # continued, not restarted
    assert metrics(out) == metrics(reference)
    assert not checkpoint.parent.exists()  # the checkpoints go once the output is complete


def test_finetune_resumes_after_sigkill(tiny_teacher, tiny_probes, sst2_dir, tmp_path):
    search = tmp_path / "search"
    finish(["search", "--search-space", "tiny", "--teacher", tiny_teacher, "--probes", tiny_probes, "--task", "sst2",
            "--data-dir", sst2_dir, "--epochs", 1, "--min-steps", 0, "--batch-size", 32, "--max-length", 16,
            "--output-dir", search])
    args = ["finetune", "--arch", search / "arch.json", "--teacher", tiny_teacher, "--probes", tiny_probes,
            "--task", "sst2", "--data-dir", sst2_dir, "--epochs", 8, "--batch-size", 16, "--max-length", 16]
    check_resume(args, tmp_path / "student", tmp_path / "reference",
                 tmp_path / "student.partial" / "finetune.safetensors")


def test_distill_resumes_after_sigkill(tiny_teacher, sst2_dir, tmp_path):
    args = ["distill", "--student", "bilstm", "--method", "hinton", "--teacher", tiny_teacher, "--task", "sst2",
            "--data-dir", sst2_dir, "--epochs", 8, "--batch-size", 16, "--max-length", 16, "--embed-dim", 16,
            "--hidden", 16, "--fc", 16]
    check_resume(args, tmp_path / "student", tmp_path / "reference",
                 tmp_path / "student.partial" / "hinton.safetensors")


def test_teacher_resumes_after_sigkill(tiny_base, sst2_dir, tmp_path):
    args = ["teacher", "--model", tiny_base, "--task", "sst2", "--data-dir", sst2_dir, "--epochs", 6,
            "--batch-size", 8, "--max-length", 16, "--lr", "1e-3"]
    check_resume(args, tmp_path / "teacher", tmp_path / "reference",
                 tmp_path / "teacher.partial" / "teacher.safetensors")


def test_search_resumes_after_sigkill_to_the_same_arch(tiny_teacher, tiny_probes, sst2_dir, tmp_path):
    args = ["search", "--search-space", "tiny", "--teacher", tiny_teacher, "--probes", tiny_probes, "--task", "sst2",
            "--data-dir", sst2_dir, "--epochs", 6, "--min-steps", 0, "--batch-size", 16, "--max-length", 16,
            "--checkpoint-every", 3]
    finish(args + ["--output-dir", tmp_path / "reference"])
    kill_after(args + ["--output-dir", tmp_path / "s"], tmp_path / "s" / "checkpoint.safetensors")
    assert not (tmp_path / "s" / "arch.json").exists()
    assert "resumed from" in finish(args + ["--output-dir", tmp_path / "s", "--resume"])
    arch, reference = (json.loads((d / "arch.json").read_text()) for d in (tmp_path / "s", tmp_path / "reference"))
    assert arch == reference
