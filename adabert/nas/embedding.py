"""Student input embeddings: the teacher's word and position tables projected to the student width.

    e(t, p) = LayerNorm(W word[t] + W pos[p] + b)       word [V, D], pos [P, D], W [H, D]

During search the teacher tables are frozen buffers and only the projection trains. `materialise()` folds the
projection into small tables (word [V, H], pos [P, H]) so that the saved student never carries the teacher's
wide embeddings.
"""

from __future__ import annotations

import torch
from torch import nn


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


class TableEmbedding(nn.Module):
    """The materialised form used by saved students: LayerNorm(word[t] + pos[p])."""

    def __init__(self, vocab: int, positions: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab, hidden)
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


def teacher_tables(teacher: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The word [V, D] and position [P, D] tables of a Hugging Face BERT-family model."""
    emb = teacher.get_input_embeddings().weight
    base = getattr(teacher, teacher.base_model_prefix, teacher)
    pos = base.embeddings.position_embeddings.weight
    return emb.detach(), pos.detach()
