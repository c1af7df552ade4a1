"""Students for classic distillation, behind one interface so that every method applies to every student.

- `BiLSTMStudent` (Tang et al., 2019): word embeddings initialised from the teacher's table through a learned
  projection, a one-layer BiLSTM, the final forward and backward states concatenated (h [B, 2H]), then
  ReLU MLP -> logits. For pairs a siamese encoder (shared weights) and features [h1, h2, h1*h2, |h1-h2|].
- `LayerSubsetTransformer`: a copy of the teacher keeping `num_layers` of its L layers (evenly spaced from the
  bottom, DistilBERT-style: i * L // k), its embeddings, pooler and classifier; linear heads on the [CLS]
  state of the lower layers give per-layer logits for probe KD.
- `SearchedStudent`: the AdaBERT student of an arch.json, exposing its cells' states.

`forward(batch)` returns a `StudentOutput`. Batches are built by `make_batch` from the student's `encoding`:
'separate' (each sentence `[CLS] s [SEP]`, like the AdaBERT student) or 'joint' (the teacher's pair format).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from adabert import __version__
from adabert.core.errors import AdabertError
from adabert.core.fileio import load_state, read_json, save_tensors, write_json
from adabert.data.encoding import Encoded, joint_batch, student_batch
from adabert.data.tasks import TaskSpec
from adabert.nas.embedding import check_rows, shared_rows, word_table
from adabert.nas.supernet import masked_mean
from adabert.students.student import Student

CONFIG, WEIGHTS = "config.json", "model.safetensors"


@dataclass
class StudentOutput:
    """logits [B, C]; heads: per-layer logits, the last being `logits`; states: per-layer token states
    [B, T, D] aligned with `mask` [B, T]; pooled: the sentence vector [B, D] the classifier sees;
    attentions: per-layer [B, heads, T, T] (transformers, when asked)."""

    logits: torch.Tensor
    heads: list[torch.Tensor]
    states: list[torch.Tensor]
    mask: torch.Tensor
    pooled: torch.Tensor
    attentions: list[torch.Tensor] | None = None


def make_batch(encoding: str, enc: Encoded, idx: np.ndarray, device: torch.device):
    """The model inputs for rows `idx`: (ids_a, mask_a, ids_b, mask_b) for 'separate', a BERT input dict
    (input_ids, attention_mask, token_type_ids) for 'joint'."""
    return student_batch(enc, idx, device) if encoding == "separate" else joint_batch(enc, idx, device)


class BiLSTMStudent(nn.Module):
    encoding = "separate"

    def __init__(self, vocab_size: int, embed_dim: int, hidden: int, fc: int, num_labels: int, pair: bool,
                 dropout: float = 0.1, teacher_word: torch.Tensor | None = None,
                 embedding_rows: int | None = None) -> None:
        super().__init__()
        self.hparams = {"vocab_size": vocab_size, "embed_dim": embed_dim, "hidden": hidden, "fc": fc,
                        "num_labels": num_labels, "pair": pair, "dropout": dropout}
        self.num_labels = num_labels
        self.pair = pair
        if teacher_word is not None:  # training form: frozen teacher table, learned projection
            self.register_buffer("teacher_word", teacher_word.detach().float().clone(), persistent=False)
            self.proj = nn.Linear(teacher_word.shape[1], embed_dim)
            self.embed = None
        else:
            self.embed = word_table(vocab_size, embed_dim, embedding_rows)
        self.lstm = nn.LSTM(embed_dim, hidden, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(dropout)
        features = 2 * hidden * (4 if pair else 1)
        self.mlp = nn.Sequential(nn.Linear(features, fc), nn.ReLU(), nn.Dropout(dropout), nn.Linear(fc, num_labels))

    def _words(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(ids) if self.embed is not None else self.proj(self.teacher_word[ids])

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids, mask [B, T] -> (token states [B, T, 2H], final states [B, 2H] = [h_fwd(last real), h_bwd(first)])."""
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.drop(self._words(ids)), lengths, batch_first=True,
                                                   enforce_sorted=False)
        out, (h, _) = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        return out, torch.cat([h[0], h[1]], -1)

    def final_states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The final states [B, 2H] of `encode`, computed without packing (which neither torch.export nor ONNX
        can trace): the forward direction's output at each row's last real token on the left-aligned batch, and
        the backward direction's output at its first real token on the same rows right-aligned (the backward pass
        then starts at the last real token, so that state has seen exactly the real tokens, as when packed)."""
        t = ids.shape[1]
        lengths = mask.long().sum(1).clamp_min(1)
        h = self.lstm.hidden_size
        out_left, _ = self.lstm(self._words(ids))
        # right-aligned copy; what stands in front of the real tokens only reaches the backward pass after them
        shift = (torch.arange(t, device=ids.device)[None] - (t - lengths)[:, None]).clamp_min(0)
        out_right, _ = self.lstm(self._words(ids.gather(1, shift)))
        fwd = out_left.gather(1, (lengths - 1)[:, None, None].expand(-1, 1, 2 * h))[:, 0, :h]
        bwd = out_right.gather(1, (t - lengths)[:, None, None].expand(-1, 1, 2 * h))[:, 0, h:]
        return torch.cat([fwd, bwd], -1)

    def logits(self, ids_a: torch.Tensor, mask_a: torch.Tensor, ids_b: torch.Tensor,
               mask_b: torch.Tensor) -> torch.Tensor:
        """Inference logits [B, C] through `final_states` (exportable; equal to `forward(...).logits`)."""
        h = self.final_states(ids_a, mask_a)
        if self.pair:
            h2 = self.final_states(ids_b, mask_b)
            h = torch.cat([h, h2, h * h2, (h - h2).abs()], -1)
        return self.mlp(self.drop(h))

    def forward(self, batch) -> StudentOutput:
        ids_a, mask_a, ids_b, mask_b = batch
        states, h = self.encode(ids_a, mask_a)
        feats = h
        if self.pair:
            _, h2 = self.encode(ids_b, mask_b)
            feats = torch.cat([h, h2, h * h2, (h - h2).abs()], -1)
        logits = self.mlp(self.drop(feats))
        return StudentOutput(logits, [logits], [states], mask_a, h)

    def deployable(self) -> "BiLSTMStudent":
        """A copy whose embedding is a [V, E] table (the projection folded in); what is saved."""
        if self.embed is not None:
            return self
        out = BiLSTMStudent(**self.hparams)
        with torch.no_grad():
            out.embed.weight.copy_(self.proj(self.teacher_word))
        own = {k: v for k, v in self.state_dict().items() if not k.startswith("proj.")}
        out.load_state_dict({**out.state_dict(), **own})
        return out

    def save(self, folder: Path, task: TaskSpec, extra: dict) -> None:
        m = self.deployable()
        save_tensors(Path(folder) / WEIGHTS, m.state_dict())
        write_json(Path(folder) / CONFIG, {"model_type": "adabert-bilstm", "adabert_version": __version__,
                                           **self.hparams, "task": task.describe(),
                                           "id2label": {str(i): n for i, n in enumerate(task.names)}, **extra})

    @staticmethod
    def from_pretrained(folder: Path) -> tuple["BiLSTMStudent", dict]:
        folder = Path(folder)
        cfg = read_json(folder / CONFIG, "student config")
        if not isinstance(cfg, dict) or cfg.get("model_type") != "adabert-bilstm":
            raise AdabertError(f"{folder / CONFIG}: not a BiLSTM student (field 'model_type' must be "
                               "'adabert-bilstm')")
        keys = ("vocab_size", "embed_dim", "hidden", "fc", "num_labels", "pair", "dropout")
        missing = [k for k in keys if k not in cfg]
        if missing:
            raise AdabertError(f"{folder / CONFIG}: missing field {missing[0]!r}")
        model = BiLSTMStudent(**{k: cfg[k] for k in keys}, embedding_rows=shared_rows(cfg, folder / CONFIG))
        load_state(model, folder / WEIGHTS, folder / CONFIG)
        check_rows(model.embed, folder / WEIGHTS)
        return model.eval(), cfg


def teacher_layer_subset(num_layers: int, teacher_layers: int) -> list[int]:
    """0-based teacher layers kept by a k-layer student: i * L // k for i = 0..k-1 (DistilBERT-style)."""
    if not 1 <= num_layers <= teacher_layers:
        raise AdabertError(f"--layers: expected 1..{teacher_layers} (the teacher's depth), got {num_layers}")
    return [i * teacher_layers // num_layers for i in range(num_layers)]


def layer_list(model: nn.Module) -> tuple[nn.Module, str]:
    """(owner, attribute) of the teacher's per-layer `nn.ModuleList`: the list of `num_hidden_layers` modules
    (`encoder.layer` in BERT, RoBERTa, ELECTRA, DeBERTa; `transformer.layer` in DistilBERT). A teacher that shares
    one layer across depth (ALBERT) has none: an error."""
    depth = model.config.num_hidden_layers
    for owner in model.modules():
        for name, child in owner.named_children():
            if isinstance(child, nn.ModuleList) and len(child) == depth and name in ("layer", "layers"):
                return owner, name
    raise AdabertError(f"--student transformer: a teacher of type {model.config.model_type} has no list of its {depth} "
                       "layers to keep some of (it shares them across depth); use --student bilstm or adabert")


class LayerSubsetTransformer(nn.Module):
    encoding = "joint"

    def __init__(self, teacher: nn.Module, num_layers: int) -> None:
        super().__init__()
        model = copy.deepcopy(teacher)
        owner, name = layer_list(model)
        layers = getattr(owner, name)
        keep = teacher_layer_subset(num_layers, len(layers))
        setattr(owner, name, nn.ModuleList(layers[i] for i in keep))
        model.config.num_hidden_layers = num_layers
        self.kept_layers = keep
        self.model = model
        self.num_labels = model.config.num_labels
        hidden = model.config.hidden_size
        self.layer_heads = nn.ModuleList(nn.Linear(hidden, self.num_labels) for _ in range(num_layers - 1))
        self.want_attentions = False

    def use_eager_attention(self) -> None:
        """Attention maps are only returned by the eager implementation."""
        self.model.set_attn_implementation("eager")
        self.want_attentions = True

    def forward(self, batch) -> StudentOutput:
        out = self.model(**batch, output_hidden_states=True, output_attentions=self.want_attentions)
        states = list(out.hidden_states[1:])
        heads = [h(s[:, 0]) for h, s in zip(self.layer_heads, states[:-1])] + [out.logits]
        return StudentOutput(out.logits, heads, states, batch["attention_mask"].bool(), states[-1][:, 0],
                             list(out.attentions) if self.want_attentions else None)

    def save(self, folder: Path, task: TaskSpec, extra: dict) -> None:
        """A standard Hugging Face folder (the per-layer probe heads are training-only and not saved)."""
        self.model.save_pretrained(folder)
        cfg = read_json(Path(folder) / CONFIG, "student config")
        write_json(Path(folder) / CONFIG, {**cfg, "adabert": {"task": task.describe(),
                                                              "kept_teacher_layers": self.kept_layers, **extra}})


class SearchedStudent(nn.Module):
    """The AdaBERT student of an arch.json; its cells' outputs are the token states."""

    encoding = "separate"

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.student = student
        self.num_labels = student.num_labels
        self._states: list[tuple[torch.Tensor, torch.Tensor]] = []
        for cell in student.cells:
            cell.register_forward_hook(lambda _m, _i, out: self._states.append(out))

    def forward(self, batch) -> StudentOutput:
        self._states = []
        heads = self.student.forward_all(*batch)
        states = [s for s, _ in self._states]
        mask = self._states[-1][1]
        return StudentOutput(heads[-1], heads, states, mask, masked_mean(states[-1], mask))

    def save(self, folder: Path, task: TaskSpec, extra: dict) -> None:
        self.student.cpu().save_pretrained(folder, task, extra)
