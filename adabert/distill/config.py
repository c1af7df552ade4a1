"""The options of `adabert distill` (kept free of heavy imports, so that `adabert distill --help` is fast)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from adabert.core.errors import AdabertError
from adabert.core.options import option
from adabert.core.validation import require_fraction, require_non_negative, require_positive, require_positive_ints

StudentKind = Literal["bilstm", "transformer", "adabert"]
Method = Literal["none", "hinton", "mse", "probe", "fitnets", "attention", "nst", "relational", "born-again", "mutual"]
STUDENTS = get_args(StudentKind)
METHODS = get_args(Method)
DEFAULT_LR = {"bilstm": 1e-3, "transformer": 5e-5, "adabert": 2e-3}


@dataclass
class DistillConfig:
    """alpha: weight of CE; the KD weight is 1 - alpha, or kd_beta when given (see `losses.kd_weights`).
    lr: AdamW learning rate, by default 1e-3 (BiLSTM), 5e-5 (transformer), 2e-3 (searched student)."""

    _argument_group_name = "distillation"

    student: StudentKind = option("bilstm", "bilstm (siamese for pairs), transformer (--layers of the "
                                            "teacher's), adabert (--arch)")
    method: Method = option("hinton", "distillation method (see above)")
    epochs: int = option(3, "training epochs")
    batch_size: int = option(50, "examples per step")
    lr: float | None = option(None, "AdamW learning rate (default: 1e-3 bilstm, 5e-5 transformer, "
                                       "2e-3 adabert)")
    weight_decay: float = option(0.0, "AdamW weight decay")
    max_length: int = option(128, "max tokens per example (a pair read jointly by the teacher or a transformer "
                                  "student is about twice a sentence's length)")
    alpha: float = option(0.5, "weight of the hard-label CE")
    kd_beta: float | None = option(None, "weight of the KD term (default: 1 - alpha)")
    temperature: float = option(1.0, "KD softmax temperature T")
    feature_weight: float = option(1.0, "weight of the intermediate-matching term")
    generations: int = option(2, "born-again generations")
    layers: int = option(2, "transformer: teacher layers kept")
    embed_dim: int = option(300, "bilstm: word embedding size")
    hidden: int = option(150, "bilstm: hidden size per direction")
    fc: int = option(200, "bilstm: classifier hidden size")
    dropout: float = option(0.1, "dropout")
    clip: float = option(5.0, "gradient-norm clip")
    evals_per_epoch: int = option(2, "held-out evaluations per epoch (the best one is kept)")
    group_by_length: bool = option(True, "batch examples of similar length (several-fold less padding on tasks "
                                         "whose lengths vary); false: plain random batches")
    seed: int = option(0, "random seed")

    def __post_init__(self) -> None:
        if self.student not in STUDENTS:
            raise AdabertError(f"--student: expected one of {', '.join(STUDENTS)}, got {self.student!r}")
        if self.method not in METHODS:
            raise AdabertError(f"--method: expected one of {', '.join(METHODS)}, got {self.method!r}")
        require_positive_ints(self, "epochs", "batch_size", "max_length", "generations", "layers", "embed_dim",
                              "hidden", "fc", "evals_per_epoch")
        require_fraction(self, "alpha", 0, 1, closed_high=True)
        require_fraction(self, "dropout", 0, 1)
        require_positive(self, "temperature", "clip")
        require_non_negative(self, "weight_decay", "feature_weight")
        if self.kd_beta is not None:
            require_non_negative(self, "kd_beta")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.student]
        require_positive(self, "lr")
        if self.method == "attention" and self.student != "transformer":
            raise AdabertError("--method attention: needs attention maps; use --student transformer")
        if self.method == "relational" and self.batch_size < 3:
            raise AdabertError("--batch-size: relational KD compares samples within a batch; expected at least 3")
