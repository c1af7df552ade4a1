"""Numerical guards: a NaN or infinite loss term or gradient stops a run before the bad step is applied.

Every training loop calls `check_terms` on the terms of its loss before `backward`, and `clip_checked` instead
of `clip_grad_norm_` after it. Either raises `NonFiniteError` naming the stage, the step and the term (or the
first parameter whose gradient went bad); the CLI prints that one line and exits with `EXIT_NONFINITE`. Nothing
of the bad step is written: stage folders are written atomically at the end, and the search's periodic
checkpoint stays at its last good step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

EXIT_NONFINITE = 3


class NonFiniteError(Exception):
    """A loss term or gradient became NaN or infinite (not a problem with the user's files: exit code 3)."""


def check_terms(where: str, **terms: torch.Tensor | float) -> None:
    """Raise `NonFiniteError` for the first term that is not finite everywhere; `where` is e.g. 'search step 12'."""
    for name, value in terms.items():
        v = torch.as_tensor(value).detach().float()
        if not torch.isfinite(v).all():
            shown = "nan" if torch.isnan(v).any() else "inf"
            raise NonFiniteError(f"{where}: loss term {name!r} is {shown}; stopped before applying the step")


def all_finite(x: torch.Tensor, chunk: int = 1 << 22) -> bool:
    """True when every value of `x` is finite. Checked `chunk` values at a time: `torch.isfinite` on a whole
    half-precision tensor of gigabytes (cached teacher targets) works on a float copy of all of it at once."""
    return all(bool(torch.isfinite(part).all()) for part in x.reshape(-1).split(chunk))


def clip_checked(named: Iterable[tuple[str, nn.Parameter]], clip: float, where: str) -> float:
    """Clip the gradients of `named` parameters to total norm `clip`; raise `NonFiniteError` naming the first
    parameter whose gradient is NaN or infinite. Returns the norm before clipping."""
    named = [(n, p) for n, p in named if p.grad is not None]
    params = [p for _, p in named]
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if not math.isfinite(float(norm)):  # name the culprit before clipping spreads the NaN to every gradient
        bad = next((n for n, p in named if not torch.isfinite(p.grad).all()), "?")
        raise NonFiniteError(f"{where}: the gradient of {bad!r} is not finite; stopped before applying the step")
    torch.nn.utils.clip_grads_with_norm_(params, clip, norm)
    return float(norm)
