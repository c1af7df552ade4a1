"""Regression heads start at the mean of the training scores.

A freshly initialised head predicts about 0. On a score task whose labels sit far from 0 (STS-B: 0 to 5, mean
about 2.7) the MSE is first dominated by that offset, and at fine-tuning learning rates an Adam step moves a bias
by about lr, so a model spends hundreds to thousands of steps learning one number before it learns anything
about the sentences (a tiny pair-regression task measured it: the teacher's dev Pearson stayed negative after 4
epochs). Starting every new regression head's bias at the mean of the training scores removes that phase; the
weights keep their usual initialisation. Classification heads are left alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
from torch import nn

if TYPE_CHECKING:  # core sits below data: the type only
    from adabert.data.dataset import TaskData


def regression_start(data: TaskData) -> float | None:
    """The mean score of the fit split for regression tasks, None for classification."""
    if not data.task.is_regression:
        return None
    return float(np.mean(data.train.labels[data.train_idx])) if len(data.train_idx) else 0.0


def init_regression_heads(modules: nn.Module | Iterable[nn.Module], data: TaskData) -> int:
    """Set the bias of every one-output `nn.Linear` in `modules` (a regression model's heads) to the mean score.

    Returns how many heads were set (0 for classification tasks)."""
    start = regression_start(data)
    if start is None:
        return 0
    roots = [modules] if isinstance(modules, nn.Module) else list(modules)
    heads = [m for r in roots for m in r.modules() if isinstance(m, nn.Linear) and m.out_features == 1]
    for h in heads:
        if h.bias is not None:
            nn.init.constant_(h.bias, start)
    return len(heads)
