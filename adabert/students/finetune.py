"""`adabert finetune --arch arch.json`: build the derived student, train it with KD, select on the held-out
slice, report dev once, and save a student folder.

    L = (1 - gamma) * CE(logits, y) + gamma * L_KD(per-cell heads, teacher probe logits)
        + feature_kd * L_F(per-cell sentence vectors, teacher sentence vectors)      (when gamma > 0)
L_F: `losses.feature_kd`, its targets `teacher.features`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from adabert.core.checkpoint import unprefixed
from adabert.core.errors import AdabertError
from adabert.core.fileio import hash_tensors, load_tensors, option_defaults, read_json
from adabert.core.heads import init_regression_heads
from adabert.core.losses import feature_kd, hard_loss, probe_kd, soft_kd
from adabert.core.runtime import autocast, log, set_seed, warn_if_emulated_bf16
from adabert.core.schedule import cosine_decay
from adabert.core.trainer import Losses, Resume, Trainee, Trainer, partial_dir
from adabert.data.encoding import Encoded, batched_logits, epoch_batches, student_batch
from adabert.data.metrics import class_report, describe_dev, task_metrics, teacher_agreement
from adabert.nas.arch import load_arch
from adabert.students.config import FinetuneConfig
from adabert.students.load import finished_student, write_student_folder
from adabert.students.student import Student, inherit_search_weights
from adabert.teacher.bundle import TaskBundle


@torch.no_grad()
def student_logits(model: Student, enc: Encoded, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Logits [N, C] in example order (length-sorted batches)."""
    model.eval()
    return batched_logits(lambda rows: model(*student_batch(enc, rows, device)), enc, model.num_labels, device,
                          batch_size)


class JoinedRows:
    """The rows of `first` [N1, ...] then `second` [N2, ...], indexed as their concatenation without building it
    (the augmented sentence vectors alone can be gigabytes)."""

    def __init__(self, first: torch.Tensor, second: torch.Tensor) -> None:
        self.first, self.second = first, second
        self.shape = torch.Size([len(first) + len(second), *first.shape[1:]])

    def __getitem__(self, rows: np.ndarray) -> torch.Tensor:
        rows = torch.as_tensor(rows, dtype=torch.long)
        n = len(self.first)
        out = torch.empty((len(rows), *self.first.shape[1:]),
                          dtype=torch.promote_types(self.first.dtype, self.second.dtype))
        head = rows < n
        out[head] = self.first[rows[head]]
        out[~head] = self.second[rows[~head] - n]
        return out


def feature_kd_targets(bundle: TaskBundle, train_idx: np.ndarray) -> torch.Tensor | JoinedRows:
    """Sentence-vector KD targets [N, L+1, r] of the training rows (fit split, then the augmented text)."""
    features = bundle.probes.features
    if features is None:
        raise AdabertError(f"--feature-kd: {bundle.probes_dir} holds no teacher sentence vectors (made "
                           "without --feature-dims); rerun `adabert probes --feature-dims -1`, or pass --feature-kd 0")
    features = features[train_idx]
    augmented = bundle.augmented
    if augmented is None:
        return features
    if augmented.features is None or augmented.features.shape[1:] != features.shape[1:]:
        raise AdabertError(f"--feature-kd: {bundle.augment_dir} holds no teacher sentence vectors matching "
                           f"{bundle.probes_dir}; rerun `adabert augment --probes {bundle.probes_dir}`, or "
                           "pass --feature-kd 0")
    return JoinedRows(features, augmented.features)


def finetune_student(arch_path: Path, bundle: TaskBundle, cfg: FinetuneConfig, output_dir: Path,
                     device: torch.device, force: bool = False, resume: Resume = False,
                     supernet: Path | None = None) -> dict:
    """With augmented text in the bundle (`adabert augment`), it joins the training set, labelled with the
    teacher's predictions and distilled from the cached teacher or probe logits on it. Trains through
    `core.trainer` (checkpoints in OUT.partial; `resume` continues them). With `cfg.inherit` the student starts
    from the search checkpoint `supernet` (default: checkpoint.safetensors beside arch.json)."""
    output_dir = Path(output_dir)
    arch = load_arch(Path(arch_path))
    data, task = bundle.data, bundle.task
    inputs = {**bundle.inputs(), "arch": arch.genotype() + "|" + arch.space.hash}
    inherited = None
    if cfg.inherit:
        supernet = Path(supernet) if supernet is not None else Path(arch_path).parent / "checkpoint.safetensors"
        inherited = unprefixed("model0", load_tensors(supernet, "search checkpoint"))  # the trainer's first model
        inputs["supernet"] = hash_tensors(inherited)
    if bundle.augment_dir is not None:
        inputs["augment"] = bundle.folder_fingerprint(bundle.augment_dir)
    config = {**asdict(cfg), "task": task.describe()}
    if not force and finished_student(output_dir, "finetune", inputs, config, option_defaults(cfg)):
        return read_json(output_dir / "metrics.json", "student metrics")
    probes = bundle.require_probes("with --gamma > 0 (KD targets)") if cfg.gamma > 0 else None
    augmented = bundle.augmented
    if augmented is not None and probes is not None and cfg.kd_target == "probes" and augmented.probes is None:
        raise AdabertError(f"{bundle.augment_dir}: holds no probe logits for --kd-target probes; rerun "
                           "`adabert augment` with --probes, or use --kd-target teacher")
    word, pos = bundle.tables
    if cfg.bf16 and device.type == "cpu":
        warn_if_emulated_bf16("the student's training steps")
    set_seed(cfg.seed)
    model = Student.from_teacher_tables(arch, word, pos, task.num_labels, task.is_pair)
    init_regression_heads(model, data)
    if inherited is not None:
        log.info("finetune: inherited %d tensors from %s", inherit_search_weights(model, inherited), supernet)
    if cfg.embeddings == "table":
        model = model.materialised()  # train the small [V, H] table itself rather than the projection
    model.to(device)
    train_idx = bundle.fit_rows(cfg.train_limit)
    fit = bundle.split("fit", cfg.train_limit, augmented=True)
    kd_train = None
    if probes is not None:
        kd_train = (probes.train if cfg.kd_target == "probes" else probes.teacher_train)[train_idx]
    if augmented is not None:
        if kd_train is not None:
            kd_train = torch.cat([kd_train, augmented.probes if cfg.kd_target == "probes" else augmented.teacher])
        log.info("finetune: %d training examples + %d augmented", len(train_idx), len(augmented.data))
    enc = bundle.encoded("fit", cfg.max_length, cfg.train_limit, augmented=True)
    holdout_enc = bundle.encoded("holdout", cfg.max_length)
    dev_enc = bundle.encoded("dev", cfg.max_length)
    labels = torch.as_tensor(fit.labels)
    feats = feature_kd_targets(bundle, train_idx) if cfg.feature_kd > 0 and probes is not None else None
    projs = None
    if feats is not None:  # trained with the student (Trainee.extra), not saved
        projs = nn.ModuleList(nn.Linear(head.out.in_features, feats.shape[-1]) for head in model.heads).to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad]
                            + (list(projs.parameters()) if projs is not None else []), lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    per_epoch = math.ceil(len(enc) / cfg.batch_size)

    def epoch_order(epoch: int) -> list[np.ndarray]:
        return epoch_batches(enc.lengths(), cfg.batch_size, cfg.seed, epoch, cfg.group_by_length)

    if cfg.steps:  # one pass of exactly `steps` batches, taken from as many epochs as needed
        epochs, total = 1, cfg.steps

        def batches(epoch: int) -> list[np.ndarray]:
            return [b for e in range(-(-cfg.steps // per_epoch)) for b in epoch_order(e)][: cfg.steps]
    else:
        epochs, total, batches = cfg.epochs, per_epoch * cfg.epochs, epoch_order
    sched = cosine_decay(opt, total)

    # the other cells' heads serve only probe KD and feature KD: without those they are not run
    last_only = projs is None and (kd_train is None or cfg.kd_target == "teacher")

    def loss(rows: np.ndarray) -> Losses:
        y = labels[rows].to(device)
        pooled = [] if projs is not None else None
        with autocast(device, cpu=cfg.bf16):
            heads = model.forward_all(*student_batch(enc, rows, device), pooled=pooled, last_only=last_only)
        heads = [h.float() for h in heads]
        ce = hard_loss(heads[-1], y)
        terms = {"CE" if not task.is_regression else "MSE": ce}
        total = (1 - cfg.gamma) * ce
        if kd_train is not None:
            target = kd_train[rows].to(device)
            terms["KD"] = (probe_kd(heads, target, y, cfg.temperature) if cfg.kd_target == "probes"
                           else soft_kd(heads[-1], target, cfg.temperature).mean())
            total = total + cfg.gamma * terms["KD"]
        if projs is not None:
            terms["feature KD"] = feature_kd([u.float() for u in pooled], feats[rows].to(device).float(), projs)
            total = total + cfg.feature_kd * terms["feature KD"]
        return [total], terms

    def evaluate(m: Student) -> dict[str, float]:
        return task_metrics(task, student_logits(m, holdout_enc, device).numpy(), data.holdout.labels)

    t0 = time.time()
    trainer = Trainer("finetune", [Trainee(model, opt, sched, projs)], epochs, batches, loss, evaluate,
                      task.main_metric, cfg.evals_per_epoch, cfg.clip, partial_dir(output_dir) / "finetune.safetensors",
                      {"inputs": inputs, "config": config}, defaults=option_defaults(cfg))
    result = trainer.fit(resume)
    history, best = result.history, result.best_score
    seconds = time.time() - t0
    dev_logits = student_logits(model, dev_enc, device).numpy()
    dev = task_metrics(task, dev_logits, data.dev.labels)
    report = class_report(task, dev_logits, data.dev.labels) if not task.is_regression else {}
    saved = model.cpu().materialised()
    metrics = {"dev": dev, "dev_report": report, "history": history, "train_seconds": seconds,
               "params": sum(p.numel() for p in saved.parameters()), "genotype": arch.genotype(),
               "best_holdout": best, "train_examples": len(fit)}
    if bundle.probes is not None:
        metrics["dev_teacher_agreement"] = teacher_agreement(task, dev_logits, bundle.probes.teacher_dev.numpy())
    log.info("finetune dev: %s", describe_dev(task, metrics))
    write_student_folder(output_dir, "finetune",
                         lambda tmp: saved.save_pretrained(tmp, task, {"max_length": cfg.max_length}),
                         bundle.tokenizer, bundle.teacher, metrics, inputs, config)
    return metrics
