"""Student input embeddings: the teacher's word and position tables projected to the student width.

    e(t, p) = LayerNorm(W word[t] + W pos[p] + b)       word [V, D], pos [P, D], W [H, D]

During search the teacher tables are frozen buffers and only the projection trains. `materialise()` folds the
projection into small tables (word [V, H], pos [P, H]) so that the saved student never carries the teacher's
wide embeddings.
"""

from __future__ import annotations

import torch
from torch import nn

from adabert.core.errors import AdabertError


class ProjectedEmbedding(nn.Module):
    def __init__(self, word: torch.Tensor, pos: torch.Tensor, hidden: int, dropout: float) -> None:
        super().__init__()
        self.register_buffer("word", word.detach().float().clone(), persistent=False)
        self.register_buffer("pos", pos.detach().float().clone(), persistent=False)
        self.proj = nn.Linear(word.shape[1], hidden)
        self.norm = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)

    @property
    def max_positions(self) -> int:
        return self.pos.shape[0]

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids, mask [B, T] -> [B, T, H], zero at padded positions."""
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.proj(self.word[ids] + self.pos[positions])
        return self.drop(self.norm(x)) * mask.unsqueeze(-1).to(x.dtype)

    @torch.no_grad()
    def materialise(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(word [V, H], pos [P, H]) with W and b folded in: word[t] + pos[p] = W word[t] + W pos[p] + b."""
        return self.word @ self.proj.weight.T + self.proj.bias, self.pos @ self.proj.weight.T


class SharedRowEmbedding(nn.Embedding):
    """An embedding whose `num_ids` token ids share `num_rows` rows: e(t) = weight[rows[t]] (rows [num_ids] int64,
    a buffer). What `adabert prune-vocab` leaves: the rows of the word pieces a task uses, and every other piece
    pointing at its nearest kept row. The tokenizer and the ids stay those of the teacher."""

    def __init__(self, num_ids: int, num_rows: int, dim: int) -> None:
        super().__init__(num_rows, dim)
        self.register_buffer("rows", torch.zeros(num_ids, dtype=torch.long))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(self.rows[ids])


def shared_rows(cfg: dict, source) -> int | None:
    """The `embedding_rows` field of a saved student's config (None: an unpruned table), checked."""
    rows = cfg.get("embedding_rows")
    if rows is not None and (not isinstance(rows, int) or isinstance(rows, bool)
                             or not 1 <= rows <= cfg.get("vocab_size", 0)):
        raise AdabertError(f"{source}: field 'embedding_rows' must be an integer in 1..vocab_size, got {rows!r}")
    return rows


def check_rows(table: nn.Embedding, source) -> None:
    """A loaded `SharedRowEmbedding` must point every id at one of its rows."""
    if isinstance(table, SharedRowEmbedding) and len(table.rows) and (
            int(table.rows.min()) < 0 or int(table.rows.max()) >= table.num_embeddings):
        raise AdabertError(f"{source}: the shared-row index points outside the {table.num_embeddings} rows")


def word_table(vocab: int, dim: int, rows: int | None = None) -> nn.Embedding:
    """A [vocab, dim] word table, or a `SharedRowEmbedding` with `rows` rows (a pruned vocabulary)."""
    return nn.Embedding(vocab, dim) if rows is None else SharedRowEmbedding(vocab, rows, dim)


class TableEmbedding(nn.Module):
    """The materialised form used by saved students: LayerNorm(word[t] + pos[p])."""

    def __init__(self, vocab: int, positions: int, hidden: int, dropout: float, rows: int | None = None) -> None:
        super().__init__()
        self.word = word_table(vocab, hidden, rows)
        self.pos = nn.Embedding(positions, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)

    @property
    def max_positions(self) -> int:
        return self.pos.num_embeddings

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.word(ids) + self.pos(positions)
        return self.drop(self.norm(x)) * mask.unsqueeze(-1).to(x.dtype)

    @staticmethod
    def from_projected(src: ProjectedEmbedding) -> "TableEmbedding":
        word, pos = src.materialise()
        out = TableEmbedding(word.shape[0], pos.shape[0], word.shape[1], src.drop.p)
        out.word.weight.data.copy_(word)
        out.pos.weight.data.copy_(pos)
        out.norm.load_state_dict(src.norm.state_dict())
        return out
