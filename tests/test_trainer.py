"""The one training loop's averaged weights: the formula, what is evaluated, and what is selected."""

import numpy as np
import pytest
import torch
from torch import nn

from adabert.core.trainer import Trainee, Trainer


def scalar_trainer(average: float, target: float, steps: int) -> Trainer:
    """One weight w, from w_0 = 0, trained by SGD (lr 0.3) on (w - 1)^2, so that w_t = 1 - 0.4^t; evaluated after
    every step with score -|w - target|."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.3)

    def loss(rows: np.ndarray):
        value = (model.weight - 1.0).pow(2).sum()
        return [value], {"loss": value}

    return Trainer("toy", [Trainee(model, opt, average=average)], 1, lambda e: [np.arange(1)] * steps, loss,
                   lambda m: {"score": -abs(float(m.weight) - target)}, "score", steps, clip=1e9)


def test_averaged_weights_are_the_mean_of_the_iterates_then_a_moving_average():
    trainer = scalar_trainer(0.4, 1.0, steps=10)
    result = trainer.fit()
    w = [1 - 0.4 ** t for t in range(1, 11)]
    a, expected = 0.0, []
    for t, wt in enumerate(w, start=1):
        d = min(1 - 1 / (0.4 * 10), (t - 1) / t)  # the horizon, 4 steps (d = 0.75), is reached at t = 4
        a = d * a + (1 - d) * wt
        expected.append(a)
    assert expected[2] == pytest.approx(sum(w[:3]) / 3)  # the plain mean until the horizon
    assert expected[5] == pytest.approx(0.75 * expected[4] + 0.25 * w[5])
    assert [h["holdout_averaged"]["score"] for h in result.history] == pytest.approx(
        [-abs(x - 1) for x in expected], abs=1e-6)
    assert [h["holdout"]["score"] for h in result.history] == pytest.approx([-abs(x - 1) for x in w], abs=1e-6)
    # the trained weights reach 1 before their average does: the held-out score keeps them
    assert result.best_views[0]["weights"] > result.best_views[0]["averaged"]
    assert trainer.trainees[0].model.weight.detach().item() == pytest.approx(w[-1], abs=1e-6)


def test_the_held_out_score_can_pick_the_averaged_weights():
    # target 0.8: the running mean of 0.6, 0.84, 0.936 (0.792) comes closer than any iterate (0.84)
    trainer = scalar_trainer(1.0, 0.8, steps=10)
    result = trainer.fit()
    views = result.best_views[0]
    assert views["averaged"] == pytest.approx(-0.008, abs=1e-6) and views["weights"] == pytest.approx(-0.04, abs=1e-6)
    assert result.best_score == views["averaged"]
    assert trainer.trainees[0].model.weight.detach().item() == pytest.approx(0.792, abs=1e-6)  # the averaged state, loaded


def test_without_averaging_only_the_trained_weights_are_scored():
    result = scalar_trainer(0.0, 1.0, steps=4).fit()
    assert result.best_views == [{"weights": pytest.approx(-0.4 ** 4, abs=1e-6)}]
    assert all("holdout_averaged" not in h for h in result.history)
