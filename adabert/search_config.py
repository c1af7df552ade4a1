"""Search hyper-parameters as a validated dataclass (kept free of heavy imports so the CLI can show its
defaults quickly)."""

from __future__ import annotations

from dataclasses import dataclass

from adabert.errors import AdabertError
from adabert.validation import require_fraction, require_non_negative, require_positive, require_positive_ints

COST_KINDS = ("params_flops", "latency")


@dataclass
class SearchConfig:
    """Search hyper-parameters. Defaults: DESIGN.md section 6, beta calibrated on SST-2 and MRPC
    (docs/benchmarks.md)."""

    epochs: int = 1
    batch_size: int = 128
    max_length: int = 64
    gamma: float = 0.8
    beta: float = 0.0
    temperature: float = 1.0
    tau_start: float = 1.0
    tau_end: float = 0.2
    mode: str = "hard"
    bilevel: bool = False
    lr: float = 1e-3
    weight_decay: float = 1e-4
    alpha_lr: float = 3e-3
    alpha_weight_decay: float = 1e-3
    alpha_warmup: float = 0.2
    share_cells: bool = False
    clip: float = 5.0
    evals_per_epoch: int = 4
    checkpoint_every: int = 200
    log_every: int = 10
    cost: str = "params_flops"
    train_limit: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        require_positive_ints(self, "epochs", "batch_size", "max_length", "evals_per_epoch", "checkpoint_every",
                              "log_every")
        require_fraction(self, "gamma", 0, 1, closed_high=True)
        require_fraction(self, "alpha_warmup", 0, 1)
        require_non_negative(self, "beta", "weight_decay", "alpha_weight_decay", "train_limit")
        require_positive(self, "temperature", "tau_start", "tau_end", "lr", "alpha_lr", "clip")
        if self.mode not in ("hard", "soft"):
            raise AdabertError(f"--mode: expected hard or soft, got {self.mode!r}")
        if self.cost not in COST_KINDS:
            raise AdabertError(f"--cost: expected one of {', '.join(COST_KINDS)}, got {self.cost!r}")
