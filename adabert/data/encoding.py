"""Turning text into padded token-id tensors, and iterating over batches.

Teachers see a pair jointly (`[CLS] a [SEP] b [SEP]`, segment ids 0/1). Students embed each sentence of a pair
separately (`[CLS] a [SEP]` and `[CLS] b [SEP]`, positions restarting at 0 for b). Batches are padded to their
own longest sequence (dynamic padding); evaluation batches group similar lengths to waste less padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from adabert.core.runtime import autocast, log
from adabert.data.dataset import Dataset

CUT_SHARE = 0.01  # warn when at least this share of a split's examples fill max_length


@dataclass
class Encoded:
    """Token ids per example: `ids[s][i]` is the id list of segment s (0 or 1) of example i.

    For joint (teacher) encodings there is one segment and `types[i]` holds the segment ids.
    """

    ids: list[list[list[int]]]
    types: list[list[int]] | None = None

    def __len__(self) -> int:
        return len(self.ids[0])

    def lengths(self) -> np.ndarray:
        return np.array([max(len(seg[i]) for seg in self.ids) for i in range(len(self))])


def warn_if_cut(enc: Encoded, data: Dataset, max_length: int) -> None:
    """Warn (one line) when at least `CUT_SHARE` of the examples fill `max_length` tokens: the tokenizer cut their
    text there (or it is exactly that long), so the models never read the rest."""
    full = int((enc.lengths() >= max_length).sum()) if len(enc) else 0
    if full and full >= CUT_SHARE * len(enc):
        log.warning("%s (%s): %d of %d examples (%.1f%%) fill --max-length %d tokens and are cut there; a larger "
                    "--max-length lets the models read them whole", data.path, data.split, full, len(enc),
                    100 * full / len(enc), max_length)


def encode_joint(tokenizer, data: Dataset, max_length: int) -> Encoded:
    """`[CLS] a [SEP] (b [SEP])`, truncated to `max_length` (longest-first for pairs); `warn_if_cut`."""
    cols = list(zip(*data.texts))
    enc = tokenizer(*[list(c) for c in cols], truncation=True, max_length=max_length,
                    return_token_type_ids=True, return_attention_mask=False)
    out = Encoded([enc["input_ids"]], enc["token_type_ids"])
    warn_if_cut(out, data, max_length)
    return out


def encode_separate(tokenizer, data: Dataset, max_length: int) -> Encoded:
    """`[CLS] s [SEP]` for each sentence of an example, each truncated to `max_length`; `warn_if_cut`."""
    segs = []
    for col in zip(*data.texts):
        segs.append(tokenizer(list(col), truncation=True, max_length=max_length,
                              return_attention_mask=False)["input_ids"])
    out = Encoded(segs)
    warn_if_cut(out, data, max_length)
    return out


def pad(seqs: list[list[int]], pad_id: int = 0, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [B, T] and mask [B, T] (True at real tokens); T = `width`, or the longest sequence."""
    width = width or max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    lengths = torch.tensor([len(s) for s in seqs])
    return ids, torch.arange(width)[None, :] < lengths[:, None]


def batch_indices(lengths: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Index batches for inference: sorted by length, longest first, so that padding is small and memory peaks
    early."""
    order = np.argsort(-lengths, kind="stable")
    for start in range(0, len(lengths), batch_size):
        yield order[start: start + batch_size]


@torch.no_grad()
def batched_logits(forward: Callable[[np.ndarray], torch.Tensor], enc: Encoded, num_labels: int,
                   device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Logits [N, C] of `forward(rows)` ([B, C] for the rows of a batch) over every example of `enc`, in example
    order; batches sorted by length (little padding), each under the device's autocast."""
    out = torch.empty(len(enc), num_labels)
    for idx in batch_indices(enc.lengths(), batch_size):
        with autocast(device):
            out[idx] = forward(idx).float().cpu()
    return out


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, group_by_length: bool = True,
                  rows: np.ndarray | None = None, bucket_batches: int = 32) -> list[np.ndarray]:
    """One training epoch's batches of `rows` (default: every example), a function of (seed, epoch): each row once,
    in a random order. With `group_by_length` a batch holds rows of similar length: shuffle, sort by length within
    chunks of `bucket_batches` batches, cut into batches, shuffle the batches. Padding (and so time) per step
    drops several-fold on tasks whose lengths vary."""
    rows = np.arange(len(lengths)) if rows is None else rows
    generator = np.random.default_rng([seed, epoch])
    order = generator.permutation(rows)
    if not group_by_length:
        return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    batches = []
    chunk = batch_size * bucket_batches
    for start in range(0, len(order), chunk):
        part = order[start: start + chunk]
        part = part[np.argsort(-lengths[part], kind="stable")]
        batches += [part[i: i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in generator.permutation(len(batches))]


def student_batch(enc: Encoded, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(ids_a, mask_a, ids_b, mask_b), each [B, T]; both segments padded to the same T so that a pair's two
    sentences align position by position. For single sentences ids_b and mask_b are ids_a and mask_a."""
    width = max(len(seg[i]) for seg in enc.ids for i in idx)
    ids_a, mask_a = pad([enc.ids[0][i] for i in idx], width=width)
    if len(enc.ids) == 1:
        ids_b, mask_b = ids_a, mask_a
    else:
        ids_b, mask_b = pad([enc.ids[1][i] for i in idx], width=width)
    return tuple(to_device(t, device) for t in (ids_a, mask_a, ids_b, mask_b))


def joint_batch(enc: Encoded, idx: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
    """A BERT input dict for rows `idx` of a joint encoding: input_ids, attention_mask, token_type_ids [B, T]."""
    ids, mask = pad([enc.ids[0][i] for i in idx])
    types, _ = pad([enc.types[i] for i in idx])
    return {"input_ids": to_device(ids, device), "attention_mask": to_device(mask.long(), device),
            "token_type_ids": to_device(types, device)}


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> device copy of a batch tensor; to a GPU from pinned memory without blocking, so the copy overlaps
    the work already queued."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
