"""Crash-safe resume: each long stage, run as a real subprocess, is killed with SIGKILL once its first checkpoint
exists, resumed with --resume, and must end exactly where an uninterrupted run ends; and, in process, the trainer's
timed checkpoints between evaluation points."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import subprocess_env, tiny_arch

from adabert.core.errors import AdabertError
from adabert.core.trainer import Trainee, Trainer
from adabert.nas.arch import save_arch

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")


def adabert(args: list, timeout: float = 300) -> subprocess.Popen:
    env = subprocess_env()
    return subprocess.Popen([sys.executable, "-m", "adabert", *map(str, args), "--threads", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait(proc: subprocess.Popen) -> str:
    """Wait for the stage to end; it must succeed. Its log (stderr)."""
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return err


def finish(args: list) -> str:
    """Run the stage to the end; its log (stderr)."""
    return wait(adabert(args))


def kill_after(args: list, checkpoint: Path) -> None:
    """Start the stage; SIGKILL it as soon as `checkpoint` exists (it must not have finished by then). The caller's
    uninterrupted reference run may go on beside it: each stage runs on one thread, so the two share two cores."""
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
    uninterrupted = adabert(args + ["--output-dir", reference])
    kill_after(args + ["--output-dir", out], checkpoint)
    wait(uninterrupted)
    assert checkpoint.is_file() and not out.exists()
    log = finish(args + ["--output-dir", out, "--resume"])
    assert f"resumed from {checkpoint} at step" in log  # continued, not restarted
    assert metrics(out) == metrics(reference)
    assert not checkpoint.parent.exists()  # the checkpoints go once the output is complete


def test_finetune_resumes_after_sigkill(tiny_teacher, tiny_probes, sst2_dir, tmp_path):
    save_arch(tiny_arch(), tmp_path / "arch.json")
    args = ["finetune", "--arch", tmp_path / "arch.json", "--teacher", tiny_teacher, "--probes", tiny_probes,
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
            "--min-steps", 0, "--batch-size", 8, "--max-length", 16, "--lr", "1e-3"]
    check_resume(args, tmp_path / "teacher", tmp_path / "reference",
                 tmp_path / "teacher.partial" / "teacher.safetensors")


def search_killed_and_resumed(args: list, out: Path) -> tuple[dict, dict]:
    """A tiny search (`args` added) run through; the same killed at its first checkpoint and resumed: both
    arch.json files (resumed, reference)."""
    args = ["search", *args, "--search-space", "tiny", "--task", "sst2", "--epochs", 6, "--min-steps", 0,
            "--batch-size", 16, "--max-length", 16, "--checkpoint-every", 3, "--select-steps", 24]
    uninterrupted = adabert(args + ["--output-dir", out / "reference"])
    kill_after(args + ["--output-dir", out / "s"], out / "s" / "checkpoint.safetensors")
    wait(uninterrupted)
    assert not (out / "s" / "arch.json").exists()
    assert "resumed from" in finish(args + ["--output-dir", out / "s", "--resume"])
    return tuple(json.loads((out / d / "arch.json").read_text()) for d in ("s", "reference"))


def test_search_resumes_after_sigkill_to_the_same_arch(tiny_teacher, tiny_probes, sst2_dir, tmp_path):
    arch, reference = search_killed_and_resumed(["--teacher", tiny_teacher, "--probes", tiny_probes, "--data-dir",
                                                 sst2_dir], tmp_path)
    assert arch == reference


def _toy_trainer(checkpoint: Path, crash_at: int | None = None, seconds: float | None = 0.0,
                 fingerprint: dict | None = None, defaults: dict | None = None):
    """A linear regression trained for 2 epochs of 10 steps, evaluated once per epoch; `crash_at` raises inside
    that (0-based) step, as a kill would stop it; `seconds` = 0 checkpoints after every step."""
    torch.manual_seed(0)
    x, w = torch.randn(40, 3), torch.tensor([1.0, -2.0, 0.5])
    y = x @ w + 0.1 * torch.randn(40)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    calls = iter(range(10**6))

    def batches(epoch: int):
        g = np.random.default_rng(epoch)
        return [g.permutation(40)[i:i + 4] for i in range(0, 40, 4)]

    def loss(rows):
        if next(calls) == crash_at:
            raise KeyboardInterrupt("killed")
        noise = 0.01 * torch.randn(len(rows))  # uses the RNG: a resume must restore its state
        return [((model(x[rows]).squeeze(1) + noise - y[rows]) ** 2).mean()], {}

    def evaluate(m):
        return {"neg_mse": -float(((m(x).squeeze(1) - y) ** 2).mean())}

    return model, Trainer("toy", [Trainee(model, opt)], 2, batches, loss, evaluate, "neg_mse", 1, 10.0, checkpoint,
                          fingerprint, checkpoint_seconds=seconds, defaults=defaults)


def test_a_kill_between_evaluations_resumes_from_the_timed_checkpoint(tmp_path):
    """Evaluations 10 steps apart; killed in step 15 with checkpoints due by time after every step, the resumed
    run starts at step 15 and ends with the uninterrupted run's weights and history (mean losses included)."""
    ref_model, ref = _toy_trainer(tmp_path / "ref.safetensors")
    ref_result = ref.fit()
    ckpt = tmp_path / "run.safetensors"
    _, crashed = _toy_trainer(ckpt, crash_at=14)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    model, resumed = _toy_trainer(ckpt)
    resumed.start(resume=True)
    assert resumed.step == 14  # the last step before the kill, not the evaluation at step 10
    result = resumed.fit(resume=True)
    assert result.history == ref_result.history
    for a, b in zip(model.state_dict().values(), ref_model.state_dict().values()):
        assert (a == b).all()


def test_no_timed_checkpoint_before_its_time(tmp_path):
    """With an hour between timed checkpoints, a run killed in step 15 has only the evaluation at step 10."""
    ckpt = tmp_path / "run.safetensors"
    _, crashed = _toy_trainer(ckpt, crash_at=14, seconds=3600.0)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    _, resumed = _toy_trainer(ckpt)
    resumed.start(resume=True)
    assert resumed.step == 10


def test_a_checkpoint_from_before_an_option_was_added_resumes_while_the_option_holds_its_default(tmp_path):
    """A package upgrade that adds an option must not strand a half-finished run: the old checkpoint (its config
    without the option) resumes while the option holds its default, and is refused once it does not, or when an
    old setting or an input differs."""
    ckpt = tmp_path / "run.safetensors"
    old = {"inputs": {"data": "abc"}, "config": {"lr": 0.05, "task": "toy"}}
    _, crashed = _toy_trainer(ckpt, crash_at=14, fingerprint=old)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    defaults = {"lr": 0.001, "bf16": False}
    _, upgraded = _toy_trainer(ckpt, fingerprint={**old, "config": {**old["config"], "bf16": False}},
                               defaults=defaults)
    upgraded.start(resume=True)
    assert upgraded.step == 14
    refused = [{**old, "config": {**old["config"], "bf16": True}},  # the new option away from its default
               {**old, "config": {"lr": 0.1, "task": "toy", "bf16": False}},  # an old setting changed
               {"inputs": {"data": "abd"}, "config": {**old["config"], "bf16": False}}]  # other data
    for fingerprint in refused:
        _, other = _toy_trainer(ckpt, fingerprint=fingerprint, defaults=defaults)
        with pytest.raises(AdabertError, match="other inputs or settings"):
            other.start(resume=True)


def test_starting_afresh_offers_resume_only_for_a_checkpoint_it_could_resume(tmp_path, adabert_log):
    ckpt = tmp_path / "run.safetensors"
    old = {"inputs": {"data": "abc"}, "config": {"lr": 0.05}}
    _, crashed = _toy_trainer(ckpt, crash_at=14, fingerprint=old)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    for fingerprint, advice in ((old, "use --resume to continue"), ({**old, "inputs": {"data": "abd"}},
                                                                    "was made with other inputs or settings")):
        adabert_log.clear()
        _, fresh = _toy_trainer(ckpt, fingerprint=fingerprint)
        fresh.start(resume=False)
        assert fresh.step == 0 and advice in adabert_log.text


def test_automatic_resume_continues_a_checkpoint_it_can_and_replaces_one_it_cannot(tmp_path, adabert_log):
    """What `adabert study` and `pipeline` rely on when a rerun meets an interrupted run of other settings (a study
    row given another architecture): "auto" starts afresh where --resume (True) refuses."""
    ckpt = tmp_path / "run.safetensors"
    old = {"inputs": {"arch": "K=1"}, "config": {"lr": 0.05}}
    _, crashed = _toy_trainer(ckpt, crash_at=14, fingerprint=old)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    _, same = _toy_trainer(ckpt, fingerprint=old)
    same.start(resume="auto")
    assert same.step == 14
    other = {**old, "inputs": {"arch": "K=2"}}
    with pytest.raises(AdabertError, match="was made with other inputs or settings"):
        _toy_trainer(ckpt, fingerprint=other)[1].start(resume=True)
    adabert_log.clear()
    _, fresh = _toy_trainer(ckpt, fingerprint=other)
    fresh.start(resume="auto")
    assert fresh.step == 0 and "starting afresh (the checkpoint in" in adabert_log.text
