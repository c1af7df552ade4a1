"""One loader for every student folder the tool saves, one inference signature for all of them, and the one
writer of a finished folder (`write_student_folder`, used by finetune and distill; `finished_student` reads it).

`load_student(folder)` dispatches on config.json:
- `"model_type": "adabert-student"`: the searched student (`adabert finetune`, `adabert distill --student adabert`);
- `"model_type": "adabert-bilstm"`: the BiLSTM of `adabert distill --student bilstm`;
- a Hugging Face config carrying an `"adabert"` section: the layer-subset transformer of
  `adabert distill --student transformer`.

Every kind comes back as a `LoadedStudent` whose `module` maps the exported inputs to logits [B, C]:
- encoding 'separate' (each sentence `[CLS] s [SEP]`): (input_ids, attention_mask) for single sentences,
  plus (input_ids_b, attention_mask_b) for pairs;
- encoding 'joint' (the teacher's pair format `[CLS] a [SEP] b [SEP]`): (input_ids, attention_mask,
  token_type_ids).
All ids and masks are int64 [B, T]. evaluate, predict, export and bench go through this module only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from adabert.core import distributed
from adabert.core.errors import AdabertError
from adabert.core.fileio import atomic_dir, member, meta_matches, read_json, write_json, write_meta
from adabert.core.runtime import log
from adabert.core.validation import config_int
from adabert.core.trainer import remove_partial
from adabert.data.encoding import Encoded, pad, student_batch
from adabert.students.card import write_card
from adabert.data.tasks import TaskSpec
from adabert.students.baselines import BiLSTMStudent
from adabert.students.student import Student

KINDS = ("adabert", "bilstm", "transformer")


class SeparateInputs(nn.Module):
    """(input_ids, attention_mask[, input_ids_b, attention_mask_b]) -> logits, for students called as
    model(ids_a, bool mask_a, ids_b, bool mask_b) (a single sentence feeds both inputs)."""

    def __init__(self, model: nn.Module, pair: bool) -> None:
        super().__init__()
        self.model = model.eval()
        self.pair = pair

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, input_ids_b: torch.Tensor | None = None,
                attention_mask_b: torch.Tensor | None = None) -> torch.Tensor:
        mask = attention_mask > 0
        if not self.pair:
            return self.model(input_ids, mask, input_ids, mask)
        return self.model(input_ids, mask, input_ids_b, attention_mask_b > 0)


class _BiLSTMCall(nn.Module):
    """The BiLSTM as model(ids_a, mask_a, ids_b, mask_b) -> logits, through its exportable unpacked path."""

    def __init__(self, model: BiLSTMStudent) -> None:
        super().__init__()
        self.bilstm = model

    def forward(self, ids_a: torch.Tensor, mask_a: torch.Tensor, ids_b: torch.Tensor,
                mask_b: torch.Tensor) -> torch.Tensor:
        return self.bilstm.logits(ids_a, mask_a, ids_b, mask_b)


class JointInputs(nn.Module):
    """(input_ids, attention_mask, token_type_ids) -> logits of a Hugging Face sequence classifier."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits


@dataclass
class LoadedStudent:
    """A saved student ready for inference: `module(*inputs)` -> logits [B, C] (see the module docstring)."""

    module: nn.Module
    kind: str
    encoding: str
    task: TaskSpec
    vocab_size: int
    max_length: int
    config: dict
    positions: int | None = None  # the longest input it can read (rows of its position table); None: any

    @property
    def input_names(self) -> list[str]:
        if self.encoding == "joint":
            return ["input_ids", "attention_mask", "token_type_ids"]
        return ["input_ids", "attention_mask"] + (["input_ids_b", "attention_mask_b"] if self.task.is_pair else [])

    def inputs(self, enc: Encoded, idx: np.ndarray | list[int], device: torch.device) -> tuple[torch.Tensor, ...]:
        """The module's inputs for rows `idx` of an encoding made with `self.encoding`."""
        if self.encoding == "joint":
            ids, mask = pad([enc.ids[0][i] for i in idx])
            types, _ = pad([enc.types[i] for i in idx])
            return ids.to(device), mask.long().to(device), types.to(device)
        ids_a, mask_a, ids_b, mask_b = student_batch(enc, idx, device)
        single = (ids_a, mask_a.long())
        return single + ((ids_b, mask_b.long()) if self.task.is_pair else ())

    def random_inputs(self, batch: int, length: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Random ids with ragged lengths (the first row full) and their masks, in the module's signature."""
        g = torch.Generator().manual_seed(seed)
        n = 2 if self.encoding == "separate" and self.task.is_pair else 1
        out: list[torch.Tensor] = []
        for _ in range(n):
            ids = torch.randint(1, self.vocab_size, (batch, length), generator=g)
            lengths = torch.randint(1, length + 1, (batch,), generator=g)
            lengths[0] = length
            mask = (torch.arange(length)[None] < lengths[:, None]).long()
            out += [ids * mask, mask]
        if self.encoding == "joint":
            out.append(torch.zeros_like(out[0]))
        return tuple(out)


def load_student_tokenizer(folder: Path):
    """The tokenizer saved beside a student. An empty transformers config is passed: a searched or BiLSTM student's
    config.json is ours, and transformers would read it and warn that its model type is not one it knows."""
    from transformers import AutoTokenizer, PretrainedConfig

    try:
        return AutoTokenizer.from_pretrained(str(folder), config=PretrainedConfig())
    except Exception as e:  # noqa: BLE001 (tokenizers raises bare Exceptions on tampered files)
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise AdabertError(f"{folder}: cannot load the student's tokenizer ({first})") from None


def load_student(folder: Path) -> LoadedStudent:
    """Load any student folder the tool saves (see the module docstring); one-line errors for anything else."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AdabertError(f"{folder}: no such student folder")
    path = member(folder, "config.json", "student config")
    cfg = read_json(path, "student config", expect=dict)
    model_type = cfg.get("model_type")
    if model_type == "adabert-student":
        student, cfg = Student.from_pretrained(folder)
        kind, encoding, module = "adabert", "separate", SeparateInputs(student, bool(cfg["pair"]))
        task_desc, vocab, positions = cfg["task"], cfg["vocab_size"], cfg["max_position_embeddings"]
    elif model_type == "adabert-bilstm":
        bilstm, cfg = BiLSTMStudent.from_pretrained(folder)
        kind, encoding, module = "bilstm", "separate", SeparateInputs(_BiLSTMCall(bilstm), bool(cfg["pair"]))
        task_desc, vocab, positions = cfg.get("task"), config_int(cfg, "vocab_size", path), None
    elif isinstance(cfg.get("adabert"), dict):
        from adabert.teacher.model import load_classifier, teacher_tables

        model = load_classifier(str(folder))
        kind, encoding, module = "transformer", "joint", JointInputs(model)
        task_desc, vocab = cfg["adabert"].get("task"), config_int(cfg, "vocab_size", path)
        positions = teacher_tables(model)[1].shape[0]
    else:
        raise AdabertError(f"{path}: not a student saved by adabert (field 'model_type' is {model_type!r}; "
                           "expected 'adabert-student', 'adabert-bilstm' or a transformer with an 'adabert' section)")
    task = TaskSpec.from_description(task_desc, f"{path}: field 'task'")
    extra = cfg.get("adabert", cfg) if kind == "transformer" else cfg
    max_length = extra.get("max_length", 128)
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
        raise AdabertError(f"{path}: field 'max_length' must be an integer >= 2")
    return LoadedStudent(module.eval(), kind, encoding, task, vocab, max_length, cfg, positions)


def finished_student(folder: Path, stage: str, inputs: dict[str, str], config: dict, defaults: dict) -> bool:
    """True when `folder` holds a finished `stage` run of these inputs and config (`core.fileio.meta_matches`)
    whose student this version still loads. A folder written before a change to the student (or damaged since)
    matches by its fingerprints but does not load: it is reported and trained again, instead of being handed on."""
    if not meta_matches(folder, stage, inputs, config, defaults=defaults):
        return False
    try:
        load_student(folder)
    except AdabertError as e:
        log.warning("%s: %s matches these inputs but its student does not load (%s); training again", stage,
                    folder, e)
        return False
    log.info("%s: %s is up to date (fingerprints match); skipping", stage, folder)
    return True


def write_student_folder(output_dir: Path, stage: str, save: Callable[[Path], None], tokenizer, teacher: str,
                         metrics: dict, inputs: dict[str, str], config: dict) -> None:
    """Write a finished `stage` run's student folder in one rename (rank 0 only under torchrun): `save(tmp)` writes
    the weights and config.json, then the tokenizer, metrics.json, the model card and meta.json (what
    `finished_student` checks); OUT.partial, the run's checkpoints, goes after."""
    if not distributed.is_main():
        return
    with atomic_dir(output_dir) as tmp:
        save(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "metrics.json", metrics)
        write_card(tmp, teacher, name=output_dir.name)
        write_meta(tmp, stage, inputs, config)
    remove_partial(output_dir)
