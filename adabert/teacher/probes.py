"""Linear classifier probes on a frozen teacher (Alain & Bengio), and the cached probe logits.

With the teacher frozen, its sentence vector at every layer l = 0..L is computed once ([CLS] state for layers
1..L, masked mean of the embedding output for layer 0). One linear classifier per layer is trained on those
vectors with cross entropy (MSE for regression). Their logits on every train and dev example, `[N, L+1, C]`,
are the teacher's layer-wise knowledge that students distil from. The same vectors, reduced to their top
principal components (`teacher.features`), are cached as the targets of sentence-vector KD.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adabert.core.errors import AdabertError
from adabert.core.fileio import (META, atomic_dir, load_tensors, member, meta_matches, option_defaults, read_json,
                                 save_tensors, write_json, write_meta)
from adabert.core.guards import all_finite
from adabert.core.runtime import log, set_seed
from adabert.core.trainer import Losses, Trainee, Trainer, partial_dir, remove_partial
from adabert.data.dataset import TaskData
from adabert.data.encoding import encode_joint
from adabert.data.metrics import task_metrics
from adabert.data.tasks import TaskSpec
from adabert.teacher.config import ProbeConfig
from adabert.teacher.features import feature_targets, fit_feature_maps
from adabert.teacher.model import (check_teacher_for_task, for_inference, load_classifier, load_tokenizer,
                                   model_source_fingerprint, teacher_outputs)


def probe_logits(feats: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """logits[n, l] = feats[n, l] @ weight[l] + bias[l]: feats [N, L+1, D], weight [L+1, D, C] -> [N, L+1, C]."""
    out = [torch.einsum("nld,ldc->nlc", feats[i: i + chunk].float(), weight) + bias
           for i in range(0, len(feats), chunk)]
    return torch.cat(out) if out else feats.new_zeros(0, *bias.shape, dtype=torch.float32)


class LayerProbe(nn.Module):
    """The linear probe of one teacher layer on standardised features: logits = ((x - mu) / sd) W + b,
    x [B, D] -> [B, C]. Standardising conditions Adam; `folded()` gives the equivalent probe on raw features."""

    def __init__(self, layer: int, mu: torch.Tensor, sd: torch.Tensor, num_labels: int, bias: float) -> None:
        super().__init__()
        self.layer = layer
        self.register_buffer("mu", mu.clone())
        self.register_buffer("sd", sd.clone())
        self.linear = nn.Linear(mu.shape[0], num_labels)
        nn.init.zeros_(self.linear.weight)
        nn.init.constant_(self.linear.bias, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x.float() - self.mu) / self.sd)

    @torch.no_grad()
    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight [D, C], bias [C]) acting on raw features."""
        w = self.linear.weight.T / self.sd[:, None]
        return w, self.linear.bias - self.mu @ w


def _probe_loss(logits: torch.Tensor, y: torch.Tensor, task: TaskSpec) -> torch.Tensor:
    """logits [B, C], y [B]: cross entropy, or MSE on the score for regression."""
    return F.mse_loss(logits[:, 0], y) if task.is_regression else F.cross_entropy(logits, y)


def train_probes(task: TaskSpec, feats: torch.Tensor, labels: np.ndarray, holdout_feats: torch.Tensor,
                 holdout_labels: np.ndarray, cfg: ProbeConfig) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Train the L+1 probes side by side through `core.trainer` (one model each, Adam, constant learning rate);
    each keeps the epoch with its best held-out task metric.

    feats [N, L+1, D] (any float dtype), labels [N]. Returns (weight [L+1, D, C], bias [L+1, C]) acting on raw
    features, and the best held-out metric per layer.
    """
    set_seed(cfg.seed)
    n, layers, _ = feats.shape
    mu = torch.stack([feats[i: i + 4096].float().sum(0) for i in range(0, n, 4096)]).sum(0) / n
    var = torch.stack([((feats[i: i + 4096].float() - mu) ** 2).sum(0) for i in range(0, n, 4096)]).sum(0) / n
    sd = var.sqrt().clamp_min(1e-6)
    bias = float(np.mean(labels)) if task.is_regression else 0.0  # regression starts at the mean score
    trainees = []
    for layer in range(layers):
        probe = LayerProbe(layer, mu[layer], sd[layer], task.num_labels, bias)
        opt = torch.optim.Adam(probe.parameters(), lr=cfg.lr)
        trainees.append(Trainee(probe, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)))
    y = torch.as_tensor(labels)

    def batches(epoch: int) -> list[np.ndarray]:
        order = np.random.default_rng([cfg.seed, epoch]).permutation(n)
        return [order[i: i + cfg.batch_size] for i in range(0, n, cfg.batch_size)]

    def loss(rows: np.ndarray) -> Losses:
        x = feats[rows]
        losses = [_probe_loss(t.model(x[:, t.model.layer]), y[rows], task) for t in trainees]
        return losses, {f"loss of the layer {i} probe": v for i, v in enumerate(losses)}

    def evaluate(probe: LayerProbe) -> dict[str, float]:
        return task_metrics(task, probe(holdout_feats[:, probe.layer]).numpy(), holdout_labels)

    result = Trainer("probes", trainees, cfg.epochs, batches, loss, evaluate, task.main_metric, 1, math.inf,
                     log_evals=False).fit()  # the stage prints one table of every layer at the end
    weights, biases = zip(*(t.model.folded() for t in trainees))
    return torch.stack(weights), torch.stack(biases), result.best_scores


@dataclass
class ProbeLogits:
    """Cached teacher knowledge for one task: probe logits [N, L+1, C] and teacher logits [N, C] for the full
    train split (in file order) and the dev split, plus the probes' per-layer held-out metric."""

    train: torch.Tensor
    dev: torch.Tensor
    teacher_train: torch.Tensor
    teacher_dev: torch.Tensor
    layer_metric: list[float]
    features: torch.Tensor | None = None  # sentence-vector KD targets [N, L+1, r] of the train split

    @property
    def num_layers(self) -> int:
        """L: teacher layers (the probe logits hold L+1 entries, layer 0 being the embeddings)."""
        return self.train.shape[1] - 1


def run_probes(teacher: str, data: TaskData, cfg: ProbeConfig, output_dir: Path, device: torch.device,
               force: bool = False) -> dict:
    """Compute teacher features once, train the probes, cache logits for every example; skip if up to date.

    If `output_dir` holds probes for another teacher or data, they are recomputed (logged), never mixed.
    """
    output_dir = Path(output_dir)
    inputs = {"data": data.fingerprint, "teacher": model_source_fingerprint(teacher)}
    config = {**asdict(cfg), "task": data.task.describe()}
    if not force and meta_matches(output_dir, "probes", inputs, config, defaults=option_defaults(cfg)):
        log.info("probes: %s is up to date (fingerprints match); skipping", output_dir)
        return read_json(output_dir / "metrics.json", "probe metrics")
    if (output_dir / META).is_file():
        log.info("probes: %s holds probes for other inputs or settings; recomputing", output_dir)
    task = data.task
    tokenizer = load_tokenizer(teacher)
    model = for_inference(load_classifier(teacher), device, cfg.bf16)
    check_teacher_for_task(model, teacher, task)
    t0 = time.time()
    partial, key = partial_dir(output_dir), {"inputs": inputs, "max_length": cfg.max_length}  # a killed pass resumes
    train_logits, train_feats = teacher_outputs(model, encode_joint(tokenizer, data.train, cfg.max_length), device,
                                                hidden=True, desc="teacher features (train)",
                                                cache=partial / "features-train.safetensors", fingerprint=key)
    dev_logits, dev_feats = teacher_outputs(model, encode_joint(tokenizer, data.dev, cfg.max_length), device,
                                            hidden=True, desc="teacher features (dev)",
                                            cache=partial / "features-dev.safetensors", fingerprint=key)
    t_feats = time.time() - t0
    log.info("probes: teacher features for %d + %d examples in %.0fs", len(data.train), len(data.dev), t_feats)
    weight, bias, holdout = train_probes(task, train_feats[data.train_idx], data.train.labels[data.train_idx],
                                         train_feats[data.holdout_idx], data.train.labels[data.holdout_idx], cfg)
    logits_train = probe_logits(train_feats, weight, bias)
    logits_dev = probe_logits(dev_feats, weight, bias)
    dev_np = logits_dev.numpy()
    layers = [{"layer": layer, "holdout": holdout[layer], "dev": task_metrics(task, dev_np[:, layer], data.dev.labels)}
              for layer in range(weight.shape[0])]
    maps, targets = {}, {}
    if cfg.feature_dims:
        dims = train_feats.shape[-1] if cfg.feature_dims == -1 else cfg.feature_dims
        maps = fit_feature_maps(train_feats[data.train_idx], dims)
        targets = {"features_train": feature_targets(train_feats, maps)}
    teacher_dev = task_metrics(task, dev_logits.numpy(), data.dev.labels)
    metrics = {"layers": layers, "teacher_dev": teacher_dev, "feature_seconds": t_feats,
               "total_seconds": time.time() - t0, "train_examples": len(data.train), "dev_examples": len(data.dev)}
    with atomic_dir(output_dir) as tmp:
        save_tensors(tmp / "probes.safetensors", {"weight": weight, "bias": bias, **maps})
        save_tensors(tmp / "logits.safetensors", {"train": logits_train, "dev": logits_dev,
                                                  "teacher_train": train_logits, "teacher_dev": dev_logits,
                                                  **targets})
        write_json(tmp / "metrics.json", metrics)
        write_meta(tmp, "probes", inputs, config)
    remove_partial(output_dir)
    return metrics


def format_probe_table(metrics: dict, metric: str) -> str:
    """The per-layer table: layer, held-out and dev task metric, with the teacher's own dev figure."""
    lines = [f"{'layer':>5}  {'held-out':>8}  {'dev ' + metric:>12}"]
    for row in metrics["layers"]:
        lines.append(f"{row['layer']:>5}  {row['holdout']:8.2f}  {row['dev'][metric]:12.2f}")
    lines.append(f"{'teacher':>5}  {'':>8}  {metrics['teacher_dev'][metric]:12.2f}")
    return "\n".join(lines)


def load_probe_logits(folder: Path, data: TaskData, teacher: str | None = None) -> ProbeLogits:
    """Load cached probe logits, refusing ones computed for other data (or, if given, another teacher)."""
    folder = Path(folder)
    meta = read_json(member(folder, META, "probes meta file"), "probes meta file", expect=dict)
    inputs = meta.get("inputs")
    if not isinstance(inputs, dict):
        raise AdabertError(f"{folder / META}: field 'inputs' must be an object of fingerprints")
    if meta.get("stage") != "probes":
        raise AdabertError(f"{folder}: not a probes folder (meta.json stage is {meta.get('stage')!r})")
    if inputs.get("data") != data.fingerprint:
        raise AdabertError(f"{folder}: probe logits were computed for other data or split settings "
                           f"(fingerprint {inputs.get('data')} != {data.fingerprint}); rerun `adabert probes`")
    if teacher is not None and inputs.get("teacher") != model_source_fingerprint(teacher):
        raise AdabertError(f"{folder}: probe logits were computed for another teacher than {teacher}; "
                           "rerun `adabert probes`")
    path = member(folder, "logits.safetensors", "probe logits")
    t = load_tensors(path, "probe logits")
    c = data.task.num_labels
    layers = t["train"].shape[1] if "train" in t and t["train"].dim() == 3 else None
    expected = {"train": (len(data.train), layers, c), "dev": (len(data.dev), layers, c),
                "teacher_train": (len(data.train), c), "teacher_dev": (len(data.dev), c)}
    for key, shape in expected.items():
        if key not in t or tuple(t[key].shape) != shape or not t[key].is_floating_point():
            raise AdabertError(f"{path}: {key!r} must be a float tensor of shape {list(shape)}, got "
                               + (f"{t[key].dtype} {list(t[key].shape)}" if key in t else "nothing"))
        if not all_finite(t[key]):
            raise AdabertError(f"{path}: {key!r} holds NaN or infinite values; rerun `adabert probes`")
    m = read_json(member(folder, "metrics.json", "probe metrics"), "probe metrics", expect=dict)
    rows = m.get("layers")
    if (not isinstance(rows, list) or len(rows) != layers
            or not all(isinstance(r, dict) and isinstance(r.get("holdout"), (int, float)) for r in rows)):
        raise AdabertError(f"{folder / 'metrics.json'}: field 'layers' must list {layers} objects with a numeric "
                           "'holdout'")
    features = t.get("features_train")
    if features is not None and (features.dim() != 3 or features.shape[:2] != (len(data.train), layers)
                                 or not all_finite(features)):
        raise AdabertError(f"{path}: 'features_train' must be finite, of shape [{len(data.train)}, {layers}, r], "
                           f"got {list(features.shape)}; rerun `adabert probes`")
    return ProbeLogits(t["train"], t["dev"], t["teacher_train"], t["teacher_dev"], [r["holdout"] for r in rows],
                       features)
