"""`adabert distill`: classic distillation methods (the seed notes' baselines) for any student.

Every method minimises, per batch, with (w_CE, w_KD) = `losses.kd_weights(alpha, kd_beta)`:
    none        CE(s, y)
    hinton      w_CE CE(s, y) + w_KD T^2 KL(softmax(t/T) || softmax(s/T))           (Hinton et al., 2015)
    mse         w_CE CE(s, y) + w_KD ||s - t||^2                                    (Tang et al., 2019)
    probe       w_CE CE(s, y) + w_KD probe_kd(student layer heads, teacher probes)  (seed 003)
    fitnets     hinton + feature_weight * mean_k FitNets(student layer k, teacher layer m(k))
    attention   hinton + feature_weight * mean_k KL(teacher attention m(k) || student attention k)
    nst         hinton + feature_weight * mean_k MMD^2(student layer k, teacher layer m(k))
    relational  hinton + feature_weight * RKD(student sentence vectors, teacher [CLS] vectors)
    born-again  generation 1 learns from the teacher (hinton), generation g from generation g-1, same student
    mutual      two students (seeds s, s+1) learn together: w_CE CE + w_KD T^2 KL(other || self), no teacher
s, t: student and teacher logits; m(k) = `losses.layer_map`. The teacher's logits come from the probes folder
(cached) or one teacher pass; the intermediate methods run the frozen teacher alongside the student. With an
augment folder, the augmented text joins the training set with the teacher's outputs as targets.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from adabert.core.errors import AdabertError
from adabert.core.fileio import hash_files, option_defaults, read_json
from adabert.core.heads import init_regression_heads
from adabert.core.losses import hard_loss, hinton_kd, kd_weights, layer_map, mse_logits, probe_kd, soft_kd
from adabert.core.runtime import autocast, log, set_seed
from adabert.core.schedule import cosine_decay
from adabert.core.trainer import Losses, Resume, Trainee, Trainer, partial_dir
from adabert.data.encoding import Encoded, batched_logits, encode_joint, encode_separate, epoch_batches
from adabert.data.metrics import class_report, describe_dev, task_metrics, teacher_agreement
from adabert.distill.config import DistillConfig
from adabert.distill.feature_losses import attention_kl, fitnets, nst_mmd, relational
from adabert.nas.arch import load_arch
from adabert.students.baselines import BiLSTMStudent, LayerSubsetTransformer, SearchedStudent, StudentOutput, make_batch
from adabert.students.load import finished_student, write_student_folder
from adabert.students.student import Student
from adabert.teacher.bundle import Split, TaskBundle
from adabert.teacher.model import teacher_outputs

FEATURE_METHODS = ("fitnets", "attention", "nst", "relational")
TOKEN_METHODS = ("fitnets", "attention", "nst")
STUDENT_CLASSES = {"bilstm": BiLSTMStudent, "transformer": LayerSubsetTransformer, "adabert": SearchedStudent}


@dataclass
class TrainSet:
    """What one training run iterates over: student inputs, labels, per-example teacher targets [N, C] and
    probe logits [N, L+1, C] (None when the method needs none), and the teacher-format inputs for the methods
    that run the teacher alongside."""

    enc: Encoded
    labels: torch.Tensor
    targets: torch.Tensor | None
    probes: torch.Tensor | None
    teacher_enc: Encoded | None


class Distiller:
    """Builds students, prepares the data once, and runs the configured method."""

    def __init__(self, bundle: TaskBundle, cfg: DistillConfig, device: torch.device, arch_path: Path | None = None,
                 checkpoints: Path | None = None, fingerprint: dict | None = None, resume: Resume = False):
        """checkpoints: folder of the training checkpoints (one per run of `fit`), made with `fingerprint`;
        `resume` continues them."""
        self.bundle, self.data, self.cfg, self.device = bundle, bundle.data, cfg, device
        self.checkpoints, self.fingerprint, self.resume = checkpoints, fingerprint, resume
        self.task = bundle.task
        if cfg.student == "adabert" and arch_path is None:
            raise AdabertError("--arch: required with --student adabert (the arch.json of `adabert search`)")
        if cfg.method == "probe":
            bundle.require_probes("by --method probe")
        if cfg.method in TOKEN_METHODS and cfg.student != "transformer" and self.task.is_pair:
            raise AdabertError(f"--method {cfg.method}: matches token states, which align with the teacher's only "
                               "for single sentences with this student; use --student transformer for pairs")
        self.arch = load_arch(Path(arch_path)) if arch_path is not None else None
        self.teacher = bundle.classifier
        if cfg.method == "attention":
            self.teacher.set_attn_implementation("eager")
        self.probes = bundle.probes
        self.augmented = bundle.augmented
        if self.augmented is not None and cfg.method == "probe" and self.augmented.probes is None:
            raise AdabertError(f"{bundle.augment_dir}: holds no probe logits for --method probe; rerun "
                               "`adabert augment` with --probes")

    # ---- students and data -------------------------------------------------------------------------------
    def new_student(self, seed: int) -> nn.Module:
        set_seed(seed)
        cfg = self.cfg
        if cfg.student == "bilstm":
            word, _ = self.bundle.tables
            model = BiLSTMStudent(word.shape[0], cfg.embed_dim, cfg.hidden, cfg.fc, self.task.num_labels,
                                  self.task.is_pair, cfg.dropout, teacher_word=word)
            init_regression_heads(model, self.data)
            return model
        if cfg.student == "transformer":
            model = LayerSubsetTransformer(self.teacher, cfg.layers).requires_grad_(True)
            init_regression_heads(model.layer_heads, self.data)  # the final head is the teacher's, trained
            if cfg.method == "attention":
                model.use_eager_attention()
            return model
        word, pos = self.bundle.tables
        model = Student.from_teacher_tables(self.arch, word, pos, self.task.num_labels, self.task.is_pair)
        init_regression_heads(model, self.data)
        return SearchedStudent(model)

    def encoded(self, which: Split, encoding: str, augmented: bool = False) -> Encoded:
        """A split in the student's `encoding` ('separate' or 'joint', the teacher's), from the bundle."""
        return self.bundle.encoded(which, self.cfg.max_length, augmented=augmented, joint=encoding == "joint")

    def train_set(self, encoding: str) -> TrainSet:
        """The fit split, plus the augmented text when given, with the targets the method needs."""
        cfg, data = self.cfg, self.data
        targets = probes = None
        if cfg.method not in ("none", "mutual", *FEATURE_METHODS):  # feature methods run the teacher per batch
            if self.probes is not None:
                targets = self.probes.teacher_train[data.train_idx]
            else:
                targets, _ = teacher_outputs(self.teacher.to(self.device), self.encoded("fit", "joint"), self.device,
                                             desc="teacher logits")
            if cfg.method == "probe":
                probes = self.probes.train[data.train_idx]
        ds = self.bundle.split("fit", augmented=True)
        if self.augmented is not None:
            aug = self.augmented
            if targets is not None:
                targets = torch.cat([targets, aug.teacher])
            if probes is not None:
                probes = torch.cat([probes, aug.probes])
        teacher_enc = self.encoded("fit", "joint", augmented=True) if cfg.method in FEATURE_METHODS else None
        return TrainSet(self.encoded("fit", encoding, augmented=True), torch.as_tensor(ds.labels), targets, probes,
                        teacher_enc)

    # ---- training ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, model: nn.Module, enc: Encoded, batch_size: int = 256) -> torch.Tensor:
        """Logits [N, C] in example order."""
        model.eval()
        return batched_logits(lambda rows: model(make_batch(model.encoding, enc, rows, self.device)).logits, enc,
                              self.task.num_labels, self.device, batch_size)

    def feature_loss(self, out: StudentOutput, rows: np.ndarray, ts: TrainSet,
                     projs: nn.ModuleList | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(teacher logits [B, C], the method's intermediate term) with the teacher run on the same rows."""
        method = self.cfg.method
        with torch.no_grad():
            t = self.teacher(**make_batch("joint", ts.teacher_enc, rows, self.device), output_hidden_states=True,
                             output_attentions=method == "attention")
        layers = len(t.hidden_states) - 1
        k_all = len(out.states)
        if method == "relational":
            return t.logits, relational(out.pooled.float(), t.hidden_states[-1][:, 0].float())
        terms = []
        for k in range(1, k_all + 1):
            m = layer_map(k, k_all, layers)
            s = out.states[k - 1].float()
            if method == "attention":
                terms.append(attention_kl(out.attentions[k - 1], t.attentions[max(m, 1) - 1], out.mask))
                continue
            th = t.hidden_states[m].float()
            if th.shape[1] != s.shape[1]:
                raise AdabertError(f"--method {method}: student and teacher token sequences differ in length "
                                   f"({s.shape[1]} vs {th.shape[1]})")
            terms.append(fitnets(s, th, out.mask, projs[k - 1]) if method == "fitnets" else nst_mmd(s, th, out.mask))
        return t.logits, torch.stack(terms).mean()

    def batch_loss(self, out: StudentOutput, rows: np.ndarray, ts: TrainSet, targets: torch.Tensor | None,
                   projs: nn.ModuleList | None) -> torch.Tensor:
        cfg = self.cfg
        y = ts.labels[rows].to(self.device)
        method = cfg.method
        logits = out.logits.float()
        if method == "none":
            return hard_loss(logits, y)
        w_ce, w_kd = kd_weights(cfg.alpha, cfg.kd_beta)
        if method in FEATURE_METHODS:
            t_logits, feat = self.feature_loss(out, rows, ts, projs)
            return hinton_kd(logits, t_logits.float(), y, cfg.temperature, cfg.alpha, cfg.kd_beta) \
                + cfg.feature_weight * feat
        t = targets[rows].to(self.device)
        if method == "mse":
            return w_ce * hard_loss(logits, y) + w_kd * mse_logits(logits, t)
        if method == "probe":
            return w_ce * hard_loss(logits, y) + w_kd * probe_kd([h.float() for h in out.heads],
                                                                 ts.probes[rows].to(self.device), y, cfg.temperature)
        return hinton_kd(logits, t, y, cfg.temperature, cfg.alpha, cfg.kd_beta)

    def projections(self, model: nn.Module) -> nn.ModuleList | None:
        """FitNets regressors, one per student layer (trained with the student, not saved)."""
        if self.cfg.method != "fitnets":
            return None
        two = (encode_joint if model.encoding == "joint" else encode_separate)(
            self.bundle.tokenizer, self.data.fit.subset(np.arange(2)), self.cfg.max_length)
        probe = model(make_batch(model.encoding, two, np.arange(2), self.device))
        width = self.teacher.config.hidden_size
        return nn.ModuleList(nn.Linear(s.shape[-1], width) for s in probe.states).to(self.device)

    def fit(self, models: list[nn.Module], ts: TrainSet, targets: torch.Tensor | None, desc: str
            ) -> tuple[nn.Module, list[dict], float]:
        """Train `models` (one, or two for mutual learning) for cfg.epochs through `core.trainer`; returns the
        best (held-out) model with its best state loaded, the history and the best held-out score."""
        cfg, task = self.cfg, self.task
        for m in models:
            m.to(self.device)
        self.teacher.to(self.device)
        projs = [self.projections(m) for m in models]
        steps = math.ceil(len(ts.enc) / cfg.batch_size) * cfg.epochs
        trainees = []
        for m, pj in zip(models, projs):
            opt = torch.optim.AdamW([p for p in list(m.parameters()) + (list(pj.parameters()) if pj else [])
                                     if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
            trainees.append(Trainee(m, opt, cosine_decay(opt, steps), pj))
        holdout_enc = self.encoded("holdout", models[0].encoding)

        def batches(epoch: int) -> list[np.ndarray]:
            return epoch_batches(ts.enc.lengths(), cfg.batch_size, cfg.seed, epoch, cfg.group_by_length)

        def loss(rows: np.ndarray) -> Losses:
            with autocast(self.device):
                outs = [m(make_batch(m.encoding, ts.enc, rows, self.device)) for m in models]
            if len(models) == 2:  # mutual learning: each learns from the other's current predictions
                y = ts.labels[rows].to(self.device)
                w_ce, w_kd = kd_weights(cfg.alpha, cfg.kd_beta)
                losses = [w_ce * hard_loss(o.logits.float(), y) + w_kd * soft_kd(
                    o.logits.float(), other.logits.float().detach(), cfg.temperature).mean()
                    for o, other in ((outs[0], outs[1]), (outs[1], outs[0]))]
            else:
                losses = [self.batch_loss(outs[0], rows, ts, targets, projs[0])]
            return losses, {f"loss of student {i + 1}": v for i, v in enumerate(losses)}

        def evaluate(m: nn.Module) -> dict[str, float]:
            return task_metrics(task, self.logits(m, holdout_enc).numpy(), self.data.holdout.labels)

        checkpoint = (self.checkpoints / f"{desc.replace(' ', '-')}.safetensors" if self.checkpoints is not None
                      else None)
        result = Trainer(desc, trainees, cfg.epochs, batches, loss, evaluate, task.main_metric, cfg.evals_per_epoch,
                         cfg.clip, checkpoint, self.fingerprint, defaults=option_defaults(cfg)).fit(self.resume)
        return models[result.best_index], result.history, result.best_score

    def run(self) -> tuple[nn.Module, dict]:
        """Train with the configured method; returns (best student, metrics with dev figures)."""
        cfg = self.cfg
        t0 = time.time()
        encoding = STUDENT_CLASSES[cfg.student].encoding
        ts = self.train_set(encoding)
        dev_enc = self.encoded("dev", encoding)
        generations = []
        if cfg.method == "mutual":
            model, history, best = self.fit([self.new_student(cfg.seed), self.new_student(cfg.seed + 1)], ts, None,
                                            "mutual")
        elif cfg.method == "born-again":
            targets = ts.targets
            for g in range(1, cfg.generations + 1):
                model, history, best = self.fit([self.new_student(cfg.seed + g - 1)], ts, targets,
                                                f"generation {g}")
                dev = task_metrics(self.task, self.logits(model, dev_enc).numpy(), self.data.dev.labels)
                generations.append({"generation": g, "best_holdout": best, "dev": dev})
                log.info("born-again generation %d dev: %s", g, ", ".join(f"{k} {v:.2f}" for k, v in dev.items()))
                targets = self.logits(model, ts.enc)
        else:
            model, history, best = self.fit([self.new_student(cfg.seed)], ts, ts.targets, cfg.method)
        seconds = time.time() - t0
        dev_logits = self.logits(model, dev_enc).numpy()
        metrics = {"dev": task_metrics(self.task, dev_logits, self.data.dev.labels),
                   "dev_report": class_report(self.task, dev_logits, self.data.dev.labels)
                   if not self.task.is_regression else {},
                   "history": history, "best_holdout": best, "train_seconds": seconds,
                   "train_examples": len(ts.enc), "student": cfg.student, "method": cfg.method,
                   "params": deployable_params(model)}
        if generations:
            metrics["generations"] = generations
        if self.bundle.probes is not None:
            metrics["dev_teacher_agreement"] = teacher_agreement(self.task, dev_logits,
                                                                 self.bundle.probes.teacher_dev.numpy())
        return model, metrics


def deployable_params(model: nn.Module) -> int:
    """Parameters of the model as saved: the BiLSTM's and the searched student's embedding tables
    materialised, the transformer without its training-only layer heads."""
    if isinstance(model, BiLSTMStudent):
        model = model.deployable()
    elif isinstance(model, SearchedStudent):
        model = model.student.materialised()
    elif isinstance(model, LayerSubsetTransformer):
        model = model.model
    return sum(p.numel() for p in model.parameters())


def run_distill(bundle: TaskBundle, cfg: DistillConfig, output_dir: Path, device: torch.device,
                arch_path: Path | None = None, force: bool = False, resume: Resume = False) -> dict:
    """Train a student with `cfg.method`, report dev once, save a student folder; skipped when up to date.
    Checkpoints go to OUT.partial; `resume` continues them."""
    output_dir = Path(output_dir)
    inputs = {**bundle.inputs(), "probes": bundle.folder_fingerprint(bundle.probes_dir),
              "augment": bundle.folder_fingerprint(bundle.augment_dir),
              "arch": hash_files([Path(arch_path)]) if arch_path is not None else ""}
    config = {**asdict(cfg), "task": bundle.task.describe()}
    if not force and finished_student(output_dir, "distill", inputs, config, option_defaults(cfg)):
        return read_json(output_dir / "metrics.json", "distill metrics")
    distiller = Distiller(bundle, cfg, device, arch_path, partial_dir(output_dir),
                          {"inputs": inputs, "config": config}, resume)
    model, metrics = distiller.run()
    log.info("distill %s/%s dev: %s", cfg.student, cfg.method, describe_dev(bundle.task, metrics))
    extra = {"max_length": cfg.max_length, "method": cfg.method}
    write_student_folder(output_dir, "distill", lambda tmp: model.cpu().save(tmp, bundle.task, extra),
                         bundle.tokenizer, bundle.teacher, metrics, inputs, config)
    return metrics

