"""Search hyper-parameters as a validated dataclass (kept free of heavy imports so the CLI can show its
defaults quickly)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from adabert.core.errors import AdabertError
from adabert.core.options import option
from adabert.core.validation import require_fraction, require_non_negative, require_positive, require_positive_ints
from adabert.students.config import TRAIN_BF16_HELP

CostUnit = Literal["params", "flops", "latency_ms"]
COST_UNITS = get_args(CostUnit)
SELECTION_FIELDS = ("select_top", "select_steps", "move_steps")  # settings applied after the supernet is trained
RUN_FIELDS = ("restarts",)  # settings of the whole run, not of one search (`adabert.nas.restarts`)


@dataclass
class SearchConfig:
    """Search hyper-parameters (docs/design-notes.md argues the defaults).

    min_steps: small tasks get more epochs, so that every choice is observed often enough to be compared.
    warmup: share of the steps with uniformly sampled paths and fixed architecture logits (the supernet's
    weights train fairly before choices are compared); then paths are uniform with probability `explore`, else
    drawn from softmax(alpha / tau) with tau annealed from tau_start to tau_end, and the logits follow
    `adabert.nas.estimator`. estimate_fraction: share of the fit split kept from the weights to measure choices on.
    selection_fraction: F > 0 widens the held-out slice the whole search holds out (`TaskData.widened`: cut as the
    stage's slice, at F of the training rows) so that the selection tells its candidates and moves apart on more
    rows (paired s.e. of a move's lead on SST-2: 0.76-0.81 on 685 held-out sentences, 0.47-0.62 on 1,752); the stages
    before and after the search keep theirs.
    beta: weight of the efficiency term. Without a target it is beta * E[cost] / (cost of the dearest student);
    with one target (target_params, target_flops or target_latency_ms; 0 = none) it is
    beta * |E[cost] / target - 1|, and the written architecture is the most probable one within
    target * (1 +- budget_tolerance).
    select_top: the search ends by finetuning N architectures (the derived one and N - 1 distinct draws from the
    final distribution, within the budget) for `select_steps` steps each on the fit split, each starting from
    the supernet's weights of its ops, and writes the one with the best held-out score (`adabert.nas.select`),
    or, when beta prices cost without a target, the cheapest of that best and the candidates it does not lead by
    2 paired standard errors; 1 writes the derived one without finetuning.
    move_steps: N > 0 then finetunes the pick and each of its input moves (`arch.input_moves`: the same ops, one
    edge reading another node, so the same cost) N steps each from the supernet's weights and writes the best on
    held-out (ties: the pick). A short finetune cannot tell such cells apart while a full one can (docs/results.md,
    forty-first session), hence a step count of its own.
    The select_* and move_steps settings do not change the supernet: a finished search resumed with other values
    reuses it.
    restarts: N > 1 runs N searches with seeds seed .. seed + N - 1 (each as with --restarts 1, in OUT/seed-S) and
    writes the pick with the best selection score among them (`adabert.nas.restarts`), or, when beta prices cost,
    the cheapest of the picks that best does not lead by 2 paired standard errors.
    """

    _argument_group_name = "search"

    epochs: int = option(1, "epochs over the weight rows")
    min_steps: int = option(600, "small tasks run more epochs to reach this many steps")
    batch_size: int = option(128, "examples per step")
    max_length: int = option(64, "max tokens per sentence")
    gamma: float = option(0.8, "KD weight: (1 - gamma) CE + gamma KD")
    beta: float = option(1.0, "efficiency weight (loss estimates are in units of one step's noise)")
    temperature: float = option(1.0, "KD softmax temperature T")
    tau_start: float = option(1.0, "sampling temperature after the warm-up")
    tau_end: float = option(0.2, "sampling temperature at the end")
    lr: float = option(1e-3, "AdamW learning rate of the weights")
    weight_decay: float = option(1e-4, "AdamW weight decay of the weights")
    alpha_lr: float = option(1.0, "Adam lr of the architecture logits")
    warmup: float = option(0.3, "share of the steps with uniform paths and frozen architecture logits")
    explore: float = option(0.3, "after the warm-up, share of the steps that still train a uniformly drawn path")
    estimate_fraction: float = option(0.2, "share of the training rows kept from the weights to measure the "
                                           "choices on")
    selection_fraction: float = option(0.0, "compare the selection's candidates and moves on a held-out slice cut "
                                            "as the stage's is, at this share of the training rows (within "
                                            "--holdout-max); its rows leave the search's training too (0: the "
                                            "stage's held-out slice)")
    estimate_window: int = option(50, "observations averaged by each choice's running loss estimate")
    share_cells: bool = option(False, "one set of cell weights for every depth during search (trains each op "
                                      "more often)")
    clip: float = option(5.0, "gradient-norm clip")
    evals: int = option(8, "held-out evaluations of the derived arch over the run (logged, not used to select)")
    checkpoint_every: int = option(200, "steps between checkpoints")
    log_every: int = option(10, "steps between TensorBoard points")
    cost: CostUnit = option("params", "cost unit of the efficiency term when no target is given")
    target_params: float = option(0.0, "budget: parameters of the cells and readouts (all but the embedding "
                                       "table); 0: none")
    target_flops: float = option(0.0, "budget: FLOPs per example at the space's cost_length; 0: none")
    target_latency_ms: float = option(0.0, "budget: batch-1 latency on this device at the space's cost_length "
                                           "(per-op lookup table); 0: none")
    budget_tolerance: float = option(0.1, "the written architecture costs target * (1 +- this)")
    select_top: int = option(4, "finetune the derived architecture and N - 1 draws from the final distribution "
                                "briefly; write the best on held-out, or, when --beta prices cost (no target), the "
                                "cheapest that held-out does not tell from the best (1: the derived one, no "
                                "finetune)")
    select_steps: int = option(400, "finetune steps of each --select-top candidate, starting from the supernet's "
                                    "weights")
    move_steps: int = option(0, "then finetune the selection's pick and each of its input moves (the same ops, one "
                                "edge reading another node: the same cost) N steps from the supernet's weights and "
                                "write the best on held-out (0: off)")
    restarts: int = option(1, "run N searches with seeds SEED .. SEED + N - 1 and write the pick with the best "
                              "selection score of all, or, when --beta prices cost, the cheapest pick held-out does "
                              "not tell from it (N times the time; needs --select-top >= 2)")
    train_limit: int = option(0, "use only the first N training examples (0: all)")
    bf16: bool = option(False, TRAIN_BF16_HELP)
    seed: int = option(0, "random seed")

    def __post_init__(self) -> None:
        require_positive_ints(self, "epochs", "batch_size", "max_length", "evals", "checkpoint_every",
                              "log_every", "estimate_window", "select_top", "select_steps", "restarts")
        require_non_negative(self, "min_steps", "move_steps")
        require_fraction(self, "gamma", 0, 1, closed_high=True)
        require_fraction(self, "warmup", 0, 1)
        require_fraction(self, "explore", 0, 1, closed_high=True)
        require_fraction(self, "estimate_fraction", 0, 1)
        require_fraction(self, "selection_fraction", 0, 1)
        require_fraction(self, "budget_tolerance", 0, 1)
        require_non_negative(self, "beta", "weight_decay", "train_limit", "target_params", "target_flops",
                             "target_latency_ms")
        require_positive(self, "temperature", "tau_start", "tau_end", "lr", "alpha_lr", "clip")
        if self.cost not in COST_UNITS:
            raise AdabertError(f"--cost: expected one of {', '.join(COST_UNITS)}, got {self.cost!r}")
        if self.restarts > 1 and self.select_top < 2:
            raise AdabertError("--restarts: the searches are compared by their selection's finetuned held-out "
                               "score; give --select-top 2 or more")
        if len(self.targets()) > 1:
            raise AdabertError("--target-params, --target-flops, --target-latency-ms: give at most one budget")

    def targets(self) -> dict[str, float]:
        return {unit: v for unit, v in (("params", self.target_params), ("flops", self.target_flops),
                                        ("latency_ms", self.target_latency_ms)) if v > 0}

    def budget(self) -> tuple[str, float | None]:
        """(cost unit, target or None)."""
        t = self.targets()
        return next(iter(t.items())) if t else (self.cost, None)

    def prices_cost(self) -> bool:
        """True when the efficiency term is a price (beta > 0, no target): the selection then writes the cheapest
        architecture held-out does not tell from its best."""
        return self.beta > 0 and not self.targets()
