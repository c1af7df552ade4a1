"""Search hyper-parameters as a validated dataclass (kept free of heavy imports so the CLI can show its
defaults quickly)."""

from __future__ import annotations

from dataclasses import dataclass

from adabert.core.errors import AdabertError
from adabert.core.validation import require_fraction, require_non_negative, require_positive, require_positive_ints

COST_UNITS = ("params", "flops", "latency_ms")


@dataclass
class SearchConfig:
    """Search hyper-parameters (docs/design-notes.md argues the defaults).

    min_steps: small tasks get more epochs, so that every choice is observed often enough to be compared.
    warmup: share of the steps with uniformly sampled paths and fixed architecture logits (the supernet's
    weights train fairly before choices are compared); then paths are uniform with probability `explore`, else
    drawn from softmax(alpha / tau) with tau annealed from tau_start to tau_end, and the logits follow
    `adabert.nas.estimator`. estimate_fraction: share of the fit split kept from the weights to measure choices on.
    beta: weight of the efficiency term. Without a target it is beta * E[cost] / (cost of the dearest student);
    with one target (target_params, target_flops or target_latency_ms; 0 = none) it is
    beta * |E[cost] / target - 1|, and the written architecture is the most probable one within
    target * (1 +- budget_tolerance).
    """

    epochs: int = 1
    min_steps: int = 600
    batch_size: int = 128
    max_length: int = 64
    gamma: float = 0.8
    beta: float = 1.0
    temperature: float = 1.0
    tau_start: float = 1.0
    tau_end: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 1e-4
    alpha_lr: float = 1.0
    warmup: float = 0.3
    explore: float = 0.3
    estimate_fraction: float = 0.2
    estimate_window: int = 50
    share_cells: bool = False
    clip: float = 5.0
    evals: int = 8
    checkpoint_every: int = 200
    log_every: int = 10
    cost: str = "params"
    target_params: float = 0.0
    target_flops: float = 0.0
    target_latency_ms: float = 0.0
    budget_tolerance: float = 0.1
    train_limit: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        require_positive_ints(self, "epochs", "batch_size", "max_length", "evals", "checkpoint_every",
                              "log_every", "estimate_window")
        require_non_negative(self, "min_steps")
        require_fraction(self, "gamma", 0, 1, closed_high=True)
        require_fraction(self, "warmup", 0, 1)
        require_fraction(self, "explore", 0, 1, closed_high=True)
        require_fraction(self, "estimate_fraction", 0, 1)
        require_fraction(self, "budget_tolerance", 0, 1)
        require_non_negative(self, "beta", "weight_decay", "train_limit", "target_params", "target_flops",
                             "target_latency_ms")
        require_positive(self, "temperature", "tau_start", "tau_end", "lr", "alpha_lr", "clip")
        if self.cost not in COST_UNITS:
            raise AdabertError(f"--cost: expected one of {', '.join(COST_UNITS)}, got {self.cost!r}")
        if len(self.targets()) > 1:
            raise AdabertError("--target-params, --target-flops, --target-latency-ms: give at most one budget")

    def epochs_for(self, steps_per_epoch: int) -> int:
        """The epochs run: `epochs`, raised to reach `min_steps`."""
        return max(self.epochs, -(-self.min_steps // steps_per_epoch))

    def targets(self) -> dict[str, float]:
        return {unit: v for unit, v in (("params", self.target_params), ("flops", self.target_flops),
                                        ("latency_ms", self.target_latency_ms)) if v > 0}

    def budget(self) -> tuple[str, float | None]:
        """(cost unit, target or None)."""
        t = self.targets()
        return next(iter(t.items())) if t else (self.cost, None)
