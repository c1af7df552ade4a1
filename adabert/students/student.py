"""The derived student: only the K kept cells and, in each, only the kept edges of arch.json.

    ids [B, T] -> embeddings [B, T, H] -> K derived cells -> readout (masked mean pool -> linear) -> logits [B, C]

Pairs run siamese: both sentences through the same cells, compared by the readout (`supernet.Readout`: aligned
word by word, then pooled and matched); in a space with `pair_inputs: cross` the first cell reads the other
sentence aligned to each word and the readout only matches the pooled vectors.

Every cell has a head (so that a K-cell student can be distilled layer-wise from teacher probes); inference
runs the last one only. A saved student is a folder users recognise: `config.json`, `model.safetensors` (embedding
tables materialised at width H), tokenizer files and `metrics.json`; `Student.from_pretrained` loads it back.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from adabert import __version__
from adabert.core.errors import AdabertError
from adabert.core.fileio import load_state, member, read_json, save_tensors, write_json
from adabert.core.validation import config_int
from adabert.data.tasks import TaskSpec
from adabert.nas.arch import Arch, validate_arch_json
from adabert.nas.embedding import ProjectedEmbedding, SharedRowEmbedding, TableEmbedding, check_rows, shared_rows
from adabert.nas.ops import build_op
from adabert.nas.supernet import Readout, cell_inputs, cell_output

CONFIG = "config.json"
WEIGHTS = "model.safetensors"


class DerivedCell(nn.Module):
    """Intermediate node n + 2 = mean of its kept inputs' ops; the output combines the intermediate nodes as in
    the supernet (`cell_output`). A node's mask is the union of its inputs' masks."""

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        h = arch.space.hidden_size
        self.inputs = [[i for i, _ in node] for node in arch.cell]
        self.ops = nn.ModuleList(nn.ModuleList(build_op(op, h) for _, op in node) for node in arch.cell)
        self.node_logits = nn.Parameter(torch.zeros(len(arch.cell)))
        self.norm = nn.LayerNorm(h)

    def forward(self, s0: torch.Tensor, m0: torch.Tensor, s1: torch.Tensor,
                m1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states, masks = [s0, s1], [m0, m1]
        for inputs, ops in zip(self.inputs, self.ops):
            y = torch.zeros_like(s1)
            m = torch.zeros_like(m1)
            for i, op in zip(inputs, ops):
                y = y + op(states[i], masks[i])
                m = m | masks[i]
            states.append(y / len(inputs))
            masks.append(m)
        return cell_output(states[2:], masks[2:], self.node_logits, s1, self.norm)


class Student(nn.Module):
    def __init__(self, arch: Arch, embed: nn.Module, num_labels: int, pair: bool = False,
                 align: bool = True) -> None:
        super().__init__()
        self.arch = arch
        self.num_labels = num_labels
        self.pair = pair
        self.align = pair and align
        self.embed = embed
        self.cells = nn.ModuleList(DerivedCell(arch) for _ in range(arch.num_cells))
        self.heads = nn.ModuleList(Readout(arch.space.hidden_size, num_labels, arch.space.dropout, pair, align,
                                           arch.space.pair_readout == "linear") for _ in range(arch.num_cells))

    @staticmethod
    def from_teacher_tables(arch: Arch, word: torch.Tensor, pos: torch.Tensor, num_labels: int,
                            pair: bool = False) -> "Student":
        """A fresh student over the teacher's frozen tables with a trainable projection (for training)."""
        embed = ProjectedEmbedding(word, pos, arch.space.hidden_size, arch.space.dropout)
        return Student(arch, embed, num_labels, pair, arch.space.pair_inputs == "siamese")

    def forward_all(self, ids_a: torch.Tensor, mask_a: torch.Tensor, ids_b: torch.Tensor,
                    mask_b: torch.Tensor, pooled: list[torch.Tensor] | None = None,
                    last_only: bool = False) -> list[torch.Tensor]:
        """Head logits of every cell: K tensors [B, C] (with `last_only`, only the last cell's: one tensor). For
        single sentences pass ids_b = ids_a (ignored). With a list `pooled`, each computed head's sentence vector
        [B, H] is appended to it."""
        s0, m0, s1, m1 = cell_inputs(self.embed, self.pair, self.arch.space.pair_inputs == "cross", ids_a, mask_a,
                                     ids_b, mask_b)
        heads = []
        for k, (cell, head) in enumerate(zip(self.cells, self.heads)):
            out, mask = cell(s0, m0, s1, m1)
            if not last_only or k == len(self.cells) - 1:
                h = head.pooled(out, mask)
                if pooled is not None:
                    pooled.append(h)
                heads.append(head.out(head.drop(h)))
            s0, m0, s1, m1 = s1, m1, out, mask
        return heads

    def forward(self, ids_a: torch.Tensor, mask_a: torch.Tensor, ids_b: torch.Tensor,
                mask_b: torch.Tensor) -> torch.Tensor:
        """logits [B, C] of the last cell's head. The other heads (there for layer-wise KD in training) are not
        run: a pair head aligns the two sentences and costs about a cell, and the cost model counts one head."""
        return self.forward_all(ids_a, mask_a, ids_b, mask_b, last_only=True)[0]

    def materialised(self) -> "Student":
        """A copy whose embedding is the small table form (what is saved and deployed)."""
        if isinstance(self.embed, TableEmbedding):
            return self
        out = Student(self.arch, TableEmbedding.from_projected(self.embed), self.num_labels, self.pair, self.align)
        own = {k: v for k, v in self.state_dict().items() if not k.startswith("embed.")}
        out.load_state_dict({**out.state_dict(), **own})
        return out

    def save_pretrained(self, folder: Path, task: TaskSpec, extra: dict | None = None) -> None:
        """Write config.json and model.safetensors (the materialised form) into `folder`."""
        folder = Path(folder)
        m = self.materialised()
        word = m.embed.word
        shared = {"embedding_rows": word.num_embeddings} if isinstance(word, SharedRowEmbedding) else {}
        config = {"model_type": "adabert-student", "adabert_version": __version__,
                  "vocab_size": word.rows.numel() if shared else word.num_embeddings, **shared,
                  "max_position_embeddings": m.embed.max_positions,
                  "hidden_size": self.arch.space.hidden_size, "num_labels": self.num_labels, "pair": self.pair,
                  "align_pairs": self.align,
                  "task": task.describe(), "id2label": {str(i): n for i, n in enumerate(task.names)},
                  "arch": self.arch.to_json(), **(extra or {})}
        save_tensors(folder / WEIGHTS, m.state_dict())
        write_json(folder / CONFIG, config)

    @staticmethod
    def from_pretrained(folder: Path) -> tuple["Student", dict]:
        """Load a saved student folder; returns (model in eval mode, its config)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise AdabertError(f"{folder}: no such student folder")
        cfg = read_json(member(folder, CONFIG, "student config"), "student config", expect=dict)
        if cfg.get("model_type") != "adabert-student":
            raise AdabertError(f"{folder / CONFIG}: not an adabert student (field 'model_type' must be "
                               "'adabert-student')")
        for key in ("vocab_size", "max_position_embeddings", "num_labels", "pair", "arch", "task"):
            if key not in cfg:
                raise AdabertError(f"{folder / CONFIG}: missing field {key!r}")
        for key in ("vocab_size", "max_position_embeddings", "num_labels"):
            config_int(cfg, key, folder / CONFIG)
        if not isinstance(cfg["pair"], bool):
            raise AdabertError(f"{folder / CONFIG}: field 'pair' must be true or false, got {cfg['pair']!r}")
        align = cfg.get("align_pairs", False)  # students saved before pairs were aligned have no such field
        if not isinstance(align, bool):
            raise AdabertError(f"{folder / CONFIG}: field 'align_pairs' must be true or false, got {align!r}")
        task = TaskSpec.from_description(cfg["task"], f"{folder / CONFIG}: field 'task'")
        if task.num_labels != cfg["num_labels"] or task.is_pair != cfg["pair"]:
            raise AdabertError(f"{folder / CONFIG}: field 'task' does not match 'num_labels' and 'pair'")
        arch = validate_arch_json(cfg["arch"], f"{folder / CONFIG}: arch")
        rows = shared_rows(cfg, folder / CONFIG)
        embed = TableEmbedding(cfg["vocab_size"], cfg["max_position_embeddings"], arch.space.hidden_size,
                               arch.space.dropout, rows)
        model = Student(arch, embed, cfg["num_labels"], bool(cfg["pair"]), align)
        load_state(model, member(folder, WEIGHTS, "student weights"), folder / CONFIG)
        check_rows(model.embed.word, folder / WEIGHTS)
        return model.eval(), cfg


def inherit_search_weights(student: Student, checkpoint: dict[str, torch.Tensor]) -> int:
    """Copy the supernet's weights of the kept ops, node logits, heads and embedding projection into `student`.

    checkpoint: supernet state dict (keys as in `Supernet.state_dict()`). Returns the number of tensors copied.
    """
    arch = student.arch
    edges = arch.space.edges
    shared = not any(key.startswith("cells.1.") for key in checkpoint)  # a search with shared cell weights
    mapping: dict[str, str] = {}
    for k in range(arch.num_cells):
        src = 0 if shared else k
        for n, node in enumerate(arch.cell):
            for slot, (i, op) in enumerate(node):
                e, o = edges.index((i, n + 2)), arch.space.ops.index(op)
                mapping[f"cells.{k}.ops.{n}.{slot}."] = f"cells.{src}.edges.{e}.{o}."
        mapping[f"cells.{k}.node_logits"] = f"cells.{src}.node_logits"
        mapping[f"cells.{k}.norm."] = f"cells.{src}.norm."
        mapping[f"heads.{k}."] = f"heads.{k}."
    mapping["embed."] = "embed."
    own = student.state_dict()
    copied = 0
    for key in own:
        for dst, src in mapping.items():
            if key.startswith(dst) and (src + key[len(dst):] if dst.endswith(".") else src) in checkpoint:
                value = checkpoint[src + key[len(dst):] if dst.endswith(".") else src]
                if value.shape == own[key].shape:
                    own[key] = value.clone()
                    copied += 1
                break
    student.load_state_dict(own)
    return copied
