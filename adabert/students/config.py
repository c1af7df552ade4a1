"""The options of `adabert finetune` (kept free of heavy imports, so that `adabert finetune --help` is fast)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from adabert.core.errors import AdabertError
from adabert.core.options import option
from adabert.core.validation import require_fraction, require_non_negative, require_positive, require_positive_ints

TRAIN_BF16_HELP = ("train the student under bfloat16 autocast on the CPU too (on a CUDA GPU it always is): with AMX, "
                   "1.5-1.6x faster steps on batches of 64 x 32 tokens, 1.2x on SST-2's short sentences; weights "
                   "and evaluation on the CPU stay float32")


@dataclass
class FinetuneConfig:
    """embeddings: 'projected' trains a projection of the frozen teacher tables; 'table' materialises the
    projection first and trains the small [V, H] table itself (more capacity, more to overfit).
    kd_target: 'probes' matches every cell's head to its teacher probe layer (`losses.probe_kd`); 'teacher'
    matches the last head to the teacher's own logits (Hinton KD, `losses.soft_kd`)."""

    _argument_group_name = "training"

    epochs: int = option(5, "training epochs")
    steps: int = option(0, "train exactly N steps instead (0: --epochs epochs); the batches run over as many "
                           "epochs as that takes and the learning rate decays over the N steps")
    batch_size: int = option(64, "examples per step")
    max_length: int = option(64, "max tokens per sentence")
    lr: float = option(2e-3, "AdamW learning rate (cosine decay)")
    weight_decay: float = option(1e-4, "AdamW weight decay")
    gamma: float = option(0.8, "KD weight: (1 - gamma) CE + gamma KD; 0 trains on gold labels only")
    temperature: float = option(1.0, "KD softmax temperature T")
    clip: float = option(5.0, "gradient-norm clip")
    inherit: bool = option(False, "start from the search's supernet weights")
    embeddings: Literal["projected", "table"] = option(
        "projected", "train a projection of the frozen teacher tables, or the materialised [V, H] table")
    kd_target: Literal["probes", "teacher"] = option(
        "probes", "probes: each cell's head matches its teacher probe layer; teacher: the last head matches the "
                  "teacher's logits (Hinton KD)")
    evals_per_epoch: int = option(2, "held-out evaluations per epoch (the best one is kept)")
    train_limit: int = option(0, "use only the first N training examples (0: all)")
    group_by_length: bool = option(True, "batch examples of similar length (several-fold less padding on tasks "
                                         "whose lengths vary); false: plain random batches")
    bf16: bool = option(False, TRAIN_BF16_HELP)
    feature_kd: float = option(0.0, "weight of sentence-vector KD: each cell's sentence vector, through a "
                                    "learned linear map, regresses the teacher's (standardised) at the matched "
                                    "layer, cached by `adabert probes --feature-dims -1`; 0: off; needs --gamma > 0")
    seed: int = option(0, "random seed")

    def __post_init__(self) -> None:
        require_positive_ints(self, "epochs", "batch_size", "max_length", "evals_per_epoch")
        require_non_negative(self, "steps", "feature_kd")
        if self.train_limit < 0:
            raise AdabertError(f"--train-limit: expected a non-negative integer, got {self.train_limit}")
        require_fraction(self, "gamma", 0, 1, closed_high=True)
        require_positive(self, "lr", "temperature", "clip")
        if self.embeddings not in ("projected", "table"):
            raise AdabertError(f"--embeddings: expected projected or table, got {self.embeddings!r}")
        if self.kd_target not in ("probes", "teacher"):
            raise AdabertError(f"--kd-target: expected probes or teacher, got {self.kd_target!r}")
