"""The teacher: loading any Hugging Face BERT-family checkpoint (hub id or folder), fine-tuning it on a task,
and running it to get logits and per-layer hidden states."""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from adabert.core import distributed
from adabert.core.checkpoint import load_checkpoint, read_record, save_checkpoint
from adabert.core.errors import AdabertError
from adabert.core.fileio import (atomic_dir, meta_matches, model_fingerprint, option_defaults, read_json, write_json,
                                 write_meta)
from adabert.core.heads import init_regression_heads
from adabert.core.runtime import autocast, log, progress, set_seed, warn_if_emulated_bf16
from adabert.core.schedule import epochs_to_reach
from adabert.core.trainer import Losses, Resume, Trainee, Trainer, partial_dir, remove_partial
from adabert.data.dataset import Dataset, TaskData
from adabert.data.encoding import Encoded, batch_indices, encode_joint, epoch_batches, joint_batch
from adabert.data.metrics import task_metrics
from adabert.data.tasks import TaskSpec
from adabert.teacher.config import TeacherConfig

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_model_source(source: str) -> str:
    """Check that `source` is a model folder (with config.json) or looks like a hub id; return it as a string.

    An existing path must be a folder holding `config.json`; anything else that is not shaped like
    `name` or `org/name` is reported as a missing folder.
    """
    path = Path(source)
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise AdabertError(f"{source}: not a model folder (expected a folder with config.json and weights, "
                               "as written by save_pretrained)")
        return str(path)
    if source.startswith((".", "/", "~")) or not _HUB_ID.match(source):
        raise AdabertError(f"{source}: no such model folder")
    return source


def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    src = resolve_model_source(source)
    try:
        return AutoTokenizer.from_pretrained(src)
    except (OSError, ValueError) as e:
        raise AdabertError(f"{source}: cannot load a tokenizer ({str(e).splitlines()[0]})") from None


def load_classifier(source: str, task: TaskSpec | None = None) -> nn.Module:
    """A sequence classifier from a folder or hub id, in float32.

    With `task`, the classification head is sized for it (and re-initialised if the checkpoint had another
    shape); without it, the checkpoint must already be a fine-tuned classifier.
    """
    from transformers import AutoModelForSequenceClassification

    src = resolve_model_source(source)
    kwargs: dict = {"dtype": torch.float32}
    if task is not None:
        kwargs.update(num_labels=task.num_labels, ignore_mismatched_sizes=True,
                      problem_type="regression" if task.is_regression else "single_label_classification")
        if not task.is_regression:
            kwargs.update(id2label=dict(enumerate(task.names)), label2id={n: i for i, n in enumerate(task.names)})
    try:
        model = AutoModelForSequenceClassification.from_pretrained(src, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise AdabertError(f"{source}: cannot load a BERT-family model ({str(e).splitlines()[0]})") from None
    return model


def for_inference(model: nn.Module, device: torch.device, bf16: bool = False) -> nn.Module:
    """The loaded teacher, on `device` and in eval mode, with its weights cast to bfloat16 when `bf16` and the
    device is a CPU (on a CUDA device every teacher pass already runs under bf16 autocast).

    CPU autocast cannot run these models (layer norm refuses a bf16 input beside float32 weights), so the whole
    model is cast: a CPU with AMX or AVX-512 bf16 runs it several-fold faster (docs/benchmarks.md); logits move by
    a few hundredths. A CPU without native bf16 emulates it, slower than float32: warned."""
    model = model.to(device).eval()
    if bf16 and device.type == "cpu":
        warn_if_emulated_bf16("the teacher passes")
        model = model.to(torch.bfloat16)
    return model


def check_teacher_for_task(model: nn.Module, source: str, task: TaskSpec) -> None:
    """A fine-tuned teacher must have the task's number of outputs."""
    if model.config.num_labels != task.num_labels:
        raise AdabertError(f"{source}: teacher has {model.config.num_labels} outputs but task {task.name} needs "
                           f"{task.num_labels}; fine-tune it for this task with `adabert teacher`")


def teacher_tables(teacher: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The word [V, D] and position [P, D] tables of a Hugging Face BERT-family model; row p of the position table
    is the one the teacher adds at the p-th token.

    RoBERTa-style tables (a position embedding with a padding index, as in RoBERTa, XLM-R, CamemBERT) number real
    positions from padding_idx + 1, so their first padding_idx + 1 rows are skipped. A teacher with relative
    positions only (DeBERTa-v2/v3: `position_biased_input` false) has no table: the positions are zeros [P, D],
    so the student, like the teacher, gets no absolute position, with P = `max_position_embeddings`."""
    word = teacher.get_input_embeddings().weight.detach()
    base = getattr(teacher, teacher.base_model_prefix, teacher)
    table = getattr(getattr(base, "embeddings", None), "position_embeddings", None)
    if table is None:
        return word, word.new_zeros(teacher.config.max_position_embeddings, word.shape[1])
    skip = 0 if getattr(table, "padding_idx", None) is None else table.padding_idx + 1
    return word, table.weight.detach()[skip:]


@torch.no_grad()
def teacher_outputs(model: nn.Module, enc: Encoded, device: torch.device, batch_size: int = 128,
                    hidden: bool = False, desc: str = "teacher", cache: Path | None = None,
                    fingerprint: dict | None = None, save_every_s: float = 60.0, save_cost_ratio: float = 20.0,
                    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the teacher over every example (length-sorted batches, returned in the original order).

    Returns logits [N, C] (float32) and, with hidden=True, sentence vectors per layer [N, L+1, D] (float16):
    layer 0 is the masked mean of the embedding output, layers 1..L the [CLS] state. With `reduce`, each batch's
    vectors [B, L+1, D] (float16) go through it and what it returns is kept instead (e.g. probe logits
    [B, L+1, C]: a few bytes an example where the vectors take 5 KB).

    With `cache` (a checkpoint file), the outputs computed so far are written there atomically, and a later call
    with the same `fingerprint` continues after the batches it holds, so a killed pass over a large training set
    does not start over. The batches are a fixed function of the encoding, so the continued result equals an
    uninterrupted one. A cache of other inputs is ignored. Saves come at most every max(`save_every_s`,
    `save_cost_ratio` x the last save's duration) seconds: the file holds all N rows (5 GB of features for a
    million augmented sentences), so a fixed interval would spend much of a large pass rewriting it.
    """
    model.eval()
    n = len(enc)
    batches = list(batch_indices(enc.lengths(), batch_size))
    logits = torch.empty(n, model.config.num_labels)
    feats = None
    done = 0
    key = json.loads(json.dumps({**(fingerprint or {}), "examples": n, "batch_size": batch_size, "hidden": hidden,
                                "reduced": reduce is not None}))
    if cache is not None and cache.is_file():
        try:
            if read_record(cache, f"{desc} cache").get("fingerprint") == key:
                tensors, record = load_checkpoint(cache, f"{desc} cache")
                logits, feats, done = tensors["logits"], tensors.get("feats"), int(record["batches"])
                log.info("%s: continuing after %d of %d batches cached in %s", desc, done, len(batches), cache)
        except (AdabertError, KeyError, TypeError, ValueError) as e:  # a cache, not an input: recompute
            log.warning("%s: ignoring the unreadable cache %s (%s)", desc, cache, str(e).splitlines()[0])
    saved_at, gap = time.time(), save_every_s
    for b in progress(range(done, len(batches)), desc=desc, initial=done, total=len(batches)):
        idx = batches[b]
        inputs = joint_batch(enc, idx, device)
        with autocast(device):
            out = model(**inputs, output_hidden_states=hidden)
        logits[idx] = out.logits.float().cpu()
        if hidden:
            states = out.hidden_states
            m = inputs["attention_mask"].unsqueeze(-1).float()
            layer0 = (states[0].float() * m).sum(1) / m.sum(1)
            vecs = torch.stack([layer0] + [s[:, 0].float() for s in states[1:]], dim=1).half().cpu()
            kept = vecs if reduce is None else reduce(vecs)
            if feats is None:
                feats = torch.empty(n, *kept.shape[1:], dtype=kept.dtype)
            feats[idx] = kept
        if (cache is not None and b + 1 < len(batches) and time.time() - saved_at >= gap
                and distributed.is_main()):
            start = time.time()
            save_checkpoint(cache, {"logits": logits, **({"feats": feats} if feats is not None else {})},
                            {"fingerprint": key, "batches": b + 1})
            saved_at = time.time()
            gap = max(save_every_s, save_cost_ratio * (saved_at - start))
    return logits, feats


def evaluate_teacher(model: nn.Module, tokenizer, data: Dataset, max_length: int, device: torch.device,
                     batch_size: int = 128) -> dict[str, float]:
    logits, _ = teacher_outputs(model, encode_joint(tokenizer, data, max_length), device, batch_size,
                                desc=f"eval {data.split}")
    return task_metrics(data.task, logits.numpy(), data.labels)


def finetune_teacher(source: str, data: TaskData, cfg: TeacherConfig, output_dir: Path, device: torch.device,
                     force: bool = False, resume: Resume = False) -> dict:
    """Fine-tune `source` on the task; select the epoch on the held-out slice; save the best to `output_dir`.

    Writes a save_pretrained folder (config, safetensors weights, tokenizer), `metrics.json` (held-out per
    epoch, dev once at the end) and `meta.json`. Skips the work when `meta.json` already matches. Trains through
    `core.trainer` (a checkpoint per epoch in OUT.partial; `resume` continues it).
    """
    output_dir = Path(output_dir)
    inputs = {"data": data.fingerprint, "base_model": model_source_fingerprint(source)}
    config = {**asdict(cfg), "task": data.task.describe()}
    if not force and meta_matches(output_dir, "teacher", inputs, config, defaults=option_defaults(cfg)):
        log.info("teacher: %s is up to date (fingerprints match); skipping", output_dir)
        return json_metrics(output_dir)
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(source)
    model = load_classifier(source, data.task)
    init_regression_heads(model, data)
    model.to(device)
    task = data.task
    enc = encode_joint(tokenizer, data.fit, cfg.max_length)
    holdout_enc = encode_joint(tokenizer, data.holdout, cfg.max_length)
    labels = torch.tensor(data.fit.labels)
    steps_per_epoch = math.ceil(len(enc) / cfg.batch_size)
    epochs = epochs_to_reach("teacher", cfg.epochs, cfg.min_steps, steps_per_epoch)
    total = steps_per_epoch * epochs
    decay = [p for n, p in model.named_parameters() if not any(k in n for k in ("bias", "LayerNorm", "norm"))]
    no_decay = [p for n, p in model.named_parameters() if any(k in n for k in ("bias", "LayerNorm", "norm"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    warm = int(cfg.warmup * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warm) if s < warm else max(0.0, (total - s) / max(1, total - warm)))

    def batches(epoch: int) -> list[np.ndarray]:
        return epoch_batches(enc.lengths(), cfg.batch_size, cfg.seed, epoch, cfg.group_by_length)

    def loss(idx: np.ndarray) -> Losses:
        with autocast(device):
            out = model(**joint_batch(enc, idx, device), labels=labels[idx].to(device))
        return [out.loss], {"loss": out.loss}

    def evaluate(m: nn.Module) -> dict[str, float]:
        logits, _ = teacher_outputs(m, holdout_enc, device, desc="held-out")
        return task_metrics(task, logits.numpy(), data.holdout.labels)

    t0 = time.time()
    result = Trainer("teacher", [Trainee(model, opt, sched)], epochs, batches, loss, evaluate, task.main_metric,
                     1, cfg.clip, partial_dir(output_dir) / "teacher.safetensors",
                     {"inputs": inputs, "config": config}, defaults=option_defaults(cfg)).fit(resume)
    history = result.history
    dev = evaluate_teacher(model, tokenizer, data.dev, cfg.max_length, device)
    log.info("teacher dev: %s", _fmt(dev))
    metrics = {"dev": dev, "history": history, "best_epoch": int(np.argmax(
        [h["holdout"][task.main_metric] for h in history])) + 1, "train_seconds": time.time() - t0,
        "train_examples": len(enc), "holdout_examples": len(holdout_enc)}
    if distributed.is_main():  # under torchrun, rank 0 writes
        with atomic_dir(output_dir) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json(tmp / "metrics.json", metrics)
            write_meta(tmp, "teacher", inputs, config)
        remove_partial(output_dir)
    return metrics


def json_metrics(folder: Path) -> dict:
    return read_json(Path(folder) / "metrics.json", "metrics file")


def _fmt(m: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in m.items())


def model_source_fingerprint(source: str) -> str:
    """Fingerprint of a model folder (config and weights), or the hub id."""
    src = resolve_model_source(source)
    return model_fingerprint(Path(src)) if os.path.isdir(src) else f"hub:{src}"
