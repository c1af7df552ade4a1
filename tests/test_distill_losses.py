"""Each distillation loss against its formula, computed by hand on tiny tensors."""

import math

import pytest
import torch
from torch import nn

from adabert.core.losses import hinton_kd, kd_weights, mse_logits
from adabert.distill.feature_losses import attention_kl, fitnets, nst_mmd, relational


def _softmax(xs):
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def test_kd_weights_both_spellings():
    assert kd_weights(0.3) == (0.3, pytest.approx(0.7))   # seed 000: alpha*CE + (1-alpha)*KD
    assert kd_weights(0.3, 2.0) == (0.3, 2.0)              # seed 002: alpha*CE + beta*KD


@pytest.mark.parametrize("beta", [None, 2.0])
def test_hinton_kd_by_hand(beta):
    s, t, T, alpha = [1.0, 0.0], [0.0, 1.0], 2.0, 0.3
    ce = -math.log(_softmax(s)[0])
    ps, pt = _softmax([x / T for x in s]), _softmax([x / T for x in t])
    kl = sum(p * (math.log(p) - math.log(q)) for p, q in zip(pt, ps))
    w_kd = 1 - alpha if beta is None else beta
    expected = alpha * ce + w_kd * T * T * kl
    got = hinton_kd(torch.tensor([s]), torch.tensor([t]), torch.tensor([0]), T, alpha, beta)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_mse_logits_by_hand():
    s = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    t = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert float(mse_logits(s, t)) == pytest.approx(((1 + 4) + (1 + 1)) / 2)


def test_fitnets_by_hand_ignores_padding():
    proj = nn.Linear(2, 3)
    with torch.no_grad():
        proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        proj.bias.zero_()
    s = torch.tensor([[[1.0, 2.0], [5.0, 5.0]]])        # second token is padding
    t = torch.tensor([[[0.0, 2.0, 3.0], [9.0, 9.0, 9.0]]])
    mask = torch.tensor([[True, False]])
    # W s = [1, 2, 3]; ||[1, 2, 3] - [0, 2, 3]||^2 / 3 = 1 / 3
    assert float(fitnets(s, t, mask, proj).detach()) == pytest.approx(1 / 3)


def test_attention_kl_by_hand():
    a_t = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])    # [B=1, heads=1, T=2, T=2]
    a_s = torch.tensor([[[[0.25, 0.75], [0.5, 0.5]]]])
    mask = torch.tensor([[True, True]])
    row0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    row1 = 1.0 * math.log(1.0 / 0.5)
    assert float(attention_kl(a_s, a_t, mask)) == pytest.approx((row0 + row1) / 2, rel=1e-5)
    # two student heads averaging to a_s give the same value
    two = torch.cat([a_s - 0.1 * torch.tensor([1.0, -1.0]), a_s + 0.1 * torch.tensor([1.0, -1.0])], 1)
    assert float(attention_kl(two, a_t, mask)) == pytest.approx((row0 + row1) / 2, rel=1e-5)


def test_nst_mmd_by_hand():
    mask = torch.tensor([[True, True]])
    s = torch.tensor([[[3.0], [0.0]]])   # one neuron firing on token 0 -> f = [1, 0]
    t = torch.tensor([[[0.0], [2.0]]])   # one neuron firing on token 1 -> g = [0, 1]
    # k(f,f) = 1, k(g,g) = 1, k(f,g) = 0  -> MMD^2 = 2
    assert float(nst_mmd(s, t, mask)) == pytest.approx(2.0)
    wide = torch.cat([s, 2 * s], -1)     # widths may differ; same normalised patterns -> 0
    assert float(nst_mmd(wide, s, mask)) == pytest.approx(0.0, abs=1e-6)


def test_relational_by_hand():
    s = torch.tensor([[0.0], [1.0], [2.0]])
    t = torch.tensor([[0.0], [1.0], [3.0]])
    # psi_D(s) = [1, 2, 1] / (4/3) -> [.75, 1.5, .75]; psi_D(t) = [1, 3, 2] / 2 -> [.5, 1.5, 1]
    # Huber (|d| < 1): 0.5 d^2; four off-diagonal entries differ by .25 -> 4 * 0.5 * .0625 / 9 entries
    assert float(relational(s, t, angle_weight=0.0)) == pytest.approx(4 * 0.5 * 0.0625 / 9, rel=1e-5)
    x = torch.randn(5, 4)
    assert float(relational(3 * x, x)) == pytest.approx(0.0, abs=1e-5)   # scale-invariant
    assert float(relational(x, torch.randn(5, 7))) > 0                      # widths may differ
