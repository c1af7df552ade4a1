"""Ops, supernet, Gumbel sampling, costs and losses on hand-made tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from adabert.costs import measure_op_costs
from adabert.gumbel import gumbel_softmax, tau_schedule
from adabert.losses import efficiency_loss, layer_map, probe_kd, probe_weights, search_loss, soft_kd
from adabert.ops import OPS, build_op
from adabert.search_space import load_search_space
from adabert.supernet import DROPPED, Supernet


def _padded(x: torch.Tensor, lengths: list[int], extra: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [B, T, H] -> (x zeroed at pads, mask) at width T and at width T + extra (garbage beyond the mask)."""
    b, t, h = x.shape
    mask = torch.arange(t)[None] < torch.tensor(lengths)[:, None]
    x = x * mask[..., None]
    wide = torch.cat([x, torch.zeros(b, extra, h)], 1)
    wmask = torch.cat([mask, torch.zeros(b, extra, dtype=torch.bool)], 1)
    return x, mask, wide, wmask


@pytest.mark.parametrize("name", list(OPS))
def test_ops_keep_shape_and_ignore_padding(name):
    torch.manual_seed(0)
    op = build_op(name, 8).eval()
    x, mask, wide, wmask = _padded(torch.randn(3, 6, 8), [6, 4, 1], extra=5)
    y, yw = op(x, mask), op(wide, wmask)
    assert y.shape == x.shape and yw.shape == wide.shape
    assert torch.allclose(y, yw[:, :6], atol=1e-6)
    assert torch.all(y[~mask] == 0) and torch.all(yw[~wmask] == 0)


def test_dilated_conv_is_a_real_dilation():
    op = build_op("dil_cnn3", 4)
    assert op.conv.dilation == (2,) and op.conv.kernel_size == (3,) and op.conv.padding == (2,)


def test_op_params_equal_module_counts():
    space = load_search_space("adabert")
    costs = measure_op_costs(space)
    h = space.hidden_size
    for name, params in zip(space.ops, costs.params):
        assert params == sum(p.numel() for p in build_op(name, h).parameters())
    k = space.ops.index("cnn7")
    assert costs.params[k] == 7 * h * h + h
    assert costs.flops[k] == 2 * space.cost_length * 7 * h * h
    assert costs.flops[space.ops.index("dil_cnn7")] == costs.flops[k]
    assert costs.normalised[k] == pytest.approx(1.0)
    assert costs.normalised[space.ops.index("zero")] == 0 and costs.normalised[space.ops.index("max_pool3")] == 0


def test_gumbel_hard_is_one_hot_with_soft_gradient():
    logits = torch.randn(9, 10, requires_grad=True)
    w, idx = gumbel_softmax(logits, tau=0.5, hard=True)
    assert torch.equal(w.detach(), F.one_hot(idx, 10).float())
    (w * torch.randn(9, 10)).sum().backward()
    assert logits.grad is not None and torch.all(logits.grad.abs().sum(-1) > 0)
    w_soft, _ = gumbel_softmax(logits, tau=1.0, hard=False)
    assert torch.allclose(w_soft.sum(-1), torch.ones(9))


def test_gumbel_samples_follow_the_logits():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1]))
    counts = torch.bincount(torch.stack([gumbel_softmax(logits, 1.0)[1] for _ in range(4000)]), minlength=3)
    assert torch.allclose(counts / 4000, torch.tensor([0.7, 0.2, 0.1]), atol=0.03)


def test_tau_schedule_anneals_exponentially():
    assert tau_schedule(0, 101, 1.0, 0.2) == pytest.approx(1.0)
    assert tau_schedule(100, 101, 1.0, 0.2) == pytest.approx(0.2)
    assert tau_schedule(50, 101, 1.0, 0.2) == pytest.approx(math.sqrt(0.2))


def test_layer_map():
    assert [layer_map(k, 3, 6) for k in (1, 2, 3)] == [2, 4, 6]
    assert [layer_map(k, 4, 6) for k in (1, 2, 3, 4)] == [2, 3, 5, 6]
    assert [layer_map(k, 8, 6) for k in range(1, 9)] == [1, 2, 2, 3, 4, 5, 5, 6]
    assert layer_map(1, 1, 12) == 12


def test_soft_kd_is_t_squared_kl():
    s, t = torch.tensor([[1.0, 2.0, 0.5]]), torch.tensor([[0.2, 1.5, 1.0]])
    T = 2.0
    p, q = torch.softmax(t / T, -1), torch.softmax(s / T, -1)
    assert soft_kd(s, t, T).item() == pytest.approx((T * T * (p * (p / q).log()).sum()).item(), rel=1e-5)
    assert soft_kd(t, t, T).item() == pytest.approx(0.0, abs=1e-6)


def test_probe_kd_weights_and_layer_matching():
    torch.manual_seed(0)
    probes = torch.randn(4, 7, 2)  # L = 6
    y = torch.tensor([0, 1, 1, 0])
    heads = [torch.randn(4, 2) for _ in range(3)]
    layers = [2, 4, 6]
    teacher = probes[:, layers]
    ce = torch.stack([F.cross_entropy(teacher[:, i], y, reduction="none") for i in range(3)], 1)
    w = torch.softmax(-ce, 1)
    assert torch.allclose(probe_weights(teacher, y), w, atol=1e-6)
    expected = sum(w[:, i] * soft_kd(heads[i], teacher[:, i], 1.0) for i in range(3)).mean()
    assert probe_kd(heads, probes, y, 1.0).item() == pytest.approx(expected.item(), rel=1e-5)


def test_efficiency_loss_formula():
    alpha = torch.zeros(9, 10)
    cost = torch.linspace(0, 1, 10)
    depth = torch.zeros(8)
    loss, d = efficiency_loss(alpha, depth, cost)
    assert d["expected_depth"] == pytest.approx(4.5) and d["cell_cost"] == pytest.approx(0.5)
    assert loss.item() == pytest.approx(4.5 / 8 * 0.5)


def _tiny_net(seed=0, labels=2):
    torch.manual_seed(seed)
    space = load_search_space("tiny")
    return Supernet(space, torch.randn(40, 12), torch.randn(32, 12), labels), space


def _batch(lengths, width, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 40, (len(lengths), width), generator=g)
    mask = torch.arange(width)[None] < torch.tensor(lengths)[:, None]
    return ids.masked_fill(~mask, 0), mask


def test_gradients_reach_every_alpha_and_depth_logit():
    net, space = _tiny_net()
    ids, mask = _batch([7, 5, 3, 6], 8)
    y = torch.tensor([0, 1, 0, 1])
    net.train()
    torch.manual_seed(3)
    sample = net.sample(tau=1.0, hard=True)
    logits, heads = net(ids, mask, ids, mask, sample)
    loss, parts = search_loss(logits, heads, y, torch.randn(4, 4, 2), net.alpha, net.depth_logits,
                              measure_op_costs(space).normalised, gamma=0.5, beta=1.0, temperature=1.0)
    loss.backward()
    assert torch.all(net.alpha.grad != 0) and torch.all(net.depth_logits.grad != 0)
    assert set(parts) >= {"ce", "kd", "efficiency", "total"}
    # Without the efficiency term, the task loss alone reaches alpha (soft mode: every edge) and depth.
    net.zero_grad()
    logits, heads = net(ids, mask, ids, mask, net.sample(tau=1.0, hard=False))
    F.cross_entropy(logits, y).backward()
    assert torch.all(net.alpha.grad.abs().sum(-1) > 0) and torch.all(net.depth_logits.grad != 0)


def test_hard_mode_runs_only_the_sampled_ops():
    net, space = _tiny_net()
    calls = {}
    for c, cell in enumerate(net.cells):
        for e, edge in enumerate(cell.edges):
            for k, op in enumerate(edge):
                op.register_forward_hook(lambda m, i, o, key=(c, e, k): calls.__setitem__(key, calls.get(key, 0) + 1))
    ids, mask = _batch([5, 3], 6)
    torch.manual_seed(0)
    sample = net.sample(tau=1.0, hard=True)
    _, heads = net(ids, mask, ids, mask, sample)
    zero = space.ops.index("zero")
    expected = {(c, e, k): 1 for c in range(sample.depth) for e, k in enumerate(sample.op_index) if k != zero}
    assert calls == expected and len(heads) == sample.depth
    calls.clear()
    fixed = [0, DROPPED, 1, 2, DROPPED]
    net(ids, mask, ids, mask, net.fixed(fixed, depth=1))
    assert calls == {(0, 0, 0): 1, (0, 2, 1): 1, (0, 3, 2): 1}


def test_supernet_outputs_ignore_extra_padding_for_pairs():
    net, _ = _tiny_net()
    net.eval()
    ids_a, mask_a = _batch([6, 2, 4], 6, seed=1)
    ids_b, mask_b = _batch([3, 6, 1], 6, seed=2)
    pad = lambda t: torch.cat([t, torch.zeros(t.shape[0], 4, dtype=t.dtype)], 1)  # noqa: E731
    sample = net.fixed([0, 1, 2, 3, 0], depth=3)
    logits, heads = net(ids_a, mask_a, ids_b, mask_b, sample)
    logits_w, heads_w = net(pad(ids_a), pad(mask_a), pad(ids_b), pad(mask_b), sample)
    assert torch.allclose(logits, logits_w, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(heads, heads_w))


def test_latency_cost_table():
    space = load_search_space("tiny")
    costs = measure_op_costs(space, kind="latency")
    assert costs.latency_ms is not None and len(costs.latency_ms) == len(space.ops)
    assert all(t >= 0 for t in costs.latency_ms)
    assert float(costs.normalised.max()) == pytest.approx(1.0)
    conv, zero = space.ops.index("cnn3"), space.ops.index("zero")
    assert costs.latency_ms[conv] > costs.latency_ms[zero]
