"""Ops, supernet, Gumbel sampling, costs, budgets, the choice estimator and losses on hand-made tensors."""

import dataclasses
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from adabert.core.losses import depth_losses, efficiency_penalty, layer_map, probe_kd, probe_weights, soft_kd
from adabert.nas.arch import Arch
from adabert.nas import costs as cost_tables
from adabert.nas.costs import CostModel, interleaved_median_ms, measure_cost_model, rank_archs, readout_params
from adabert.nas.estimator import ChoiceEstimates
from adabert.nas.gumbel import gumbel_sample, tau_schedule
from adabert.nas.ops import OPS, build_op
from adabert.nas.search_space import load_search_space
from adabert.nas.supernet import DROPPED, Readout, Sample, Supernet


def _padded(x: torch.Tensor, lengths: list[int], extra: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
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


def test_attention_op_mixes_by_content_across_the_sentence_and_survives_empty_rows():
    torch.manual_seed(0)
    op = build_op("attn", 128)
    assert op.heads == 4 and sum(p.numel() for p in op.parameters()) == 2 * (128 * 128 // 4 + 128 // 4)
    x, mask, _, _ = _padded(torch.randn(2, 12, 128), [12, 9], extra=0)
    far = x.clone()
    far[:, 8] += 3.0  # a change 8 positions away from position 0: outside any window of the 3-7 wide ops
    assert not torch.allclose(op(x, mask)[:, 0], op(far, mask)[:, 0])
    empty = torch.zeros(1, 5, 128), torch.zeros(1, 5, dtype=torch.bool)
    assert torch.equal(op(*empty), torch.zeros(1, 5, 128))  # no real key: finite, then zeroed by the mask
    y = build_op("attn", 8)(x[..., :8], mask)  # a width below 32: one head
    assert torch.isfinite(y).all() and y.shape == (2, 12, 8)


def test_dilated_conv_is_a_real_dilation():
    op = build_op("dil_cnn3", 4)
    assert op.conv.dilation == (2,) and op.conv.kernel_size == (3,) and op.conv.padding == (2,)


def test_op_params_equal_module_counts():
    space = load_search_space("adabert")
    params = measure_cost_model(space, "params", num_labels=2, pair=False)
    flops = measure_cost_model(space, "flops", num_labels=2, pair=False)
    h = space.hidden_size
    for name, n in zip(space.ops, params.per_op):
        assert n == sum(p.numel() for p in build_op(name, h).parameters())
    k = space.ops.index("cnn7")
    assert params.per_op[k] == 7 * h * h + h
    assert flops.per_op[k] == 2 * space.cost_length * 7 * h * h
    assert flops.per_op[space.ops.index("dil_cnn7")] == flops.per_op[k]
    assert params.per_cell == space.intermediate_nodes + 2 * h + readout_params(h, 2, False)
    for pair in (False, True):  # the head of every cell: pairs add the alignment and the matching layer
        assert readout_params(h, 3, pair) == sum(p.numel() for p in Readout(h, 3, 0.1, pair).parameters())
    for align in (False, True):  # the linear pair readout: 4H -> C instead of 4H -> H -> C
        linear = readout_params(h, 3, True, align, linear=True)
        assert linear == sum(p.numel() for p in Readout(h, 3, 0.1, True, align, linear=True).parameters())
        assert readout_params(h, 3, True, align) - linear == 4 * h * h + h + h * 3 - 4 * h * 3
    pair = measure_cost_model(space, "flops", num_labels=2, pair=True)
    assert pair.per_op[k] == 2 * flops.per_op[k]  # a pair runs both sentences


def test_cost_of_an_arch_and_its_expectation():
    space = load_search_space("tiny")  # 2 intermediate nodes, 5 edges, ops cnn3 max_pool3 identity zero (+ ...)
    model = CostModel("params", space.ops, [float(10 * (i + 1)) for i in range(len(space.ops))], 7.0, 100.0)
    zero = space.ops.index("zero")
    model.per_op[zero] = 0.0
    arch = Arch(space, 2, [[(0, space.ops[0]), (1, space.ops[1])], [(0, space.ops[0]), (2, space.ops[0])]])
    assert model.arch_cost(arch) == 100 + 2 * (7 + 10 + 20 + 10 + 10)
    # Uniform logits: every non-zero op equally likely; node j keeps inputs_per_node of its n_j edges.
    alpha, depth = torch.zeros(space.num_edges, len(space.ops)), torch.zeros(space.max_cells)
    mean_op = sum(c for i, c in enumerate(model.per_op) if i != zero) / (len(space.ops) - 1)
    per_cell = sum(space.inputs_per_node * mean_op for _ in range(space.intermediate_nodes))
    exp_k = (space.max_cells + 1) / 2
    assert model.expected(space, alpha, depth).item() == pytest.approx(100 + exp_k * (7 + per_cell), rel=1e-5)


def test_budget_penalty_value_and_gradient():
    cost = torch.tensor(150.0, requires_grad=True)
    pen = efficiency_penalty(cost, target=100.0, max_cost=1000.0)
    pen.backward()
    assert pen.item() == pytest.approx(0.5) and cost.grad.item() == pytest.approx(0.01)
    cost = torch.tensor(80.0, requires_grad=True)
    pen = efficiency_penalty(cost, target=100.0, max_cost=1000.0)
    pen.backward()
    assert pen.item() == pytest.approx(0.2) and cost.grad.item() == pytest.approx(-0.01)
    cost = torch.tensor(250.0, requires_grad=True)
    pen = efficiency_penalty(cost, target=None, max_cost=1000.0)
    pen.backward()
    assert pen.item() == pytest.approx(0.25) and cost.grad.item() == pytest.approx(1e-3)


def test_budget_derivation_picks_the_most_probable_arch_within_the_budget():
    space = load_search_space("adabert")
    params = measure_cost_model(space, "params", num_labels=2, pair=False)
    cnn7, cnn3 = space.ops.index("cnn7"), space.ops.index("cnn3")
    alpha = torch.zeros(space.num_edges, len(space.ops))
    alpha[:, cnn7] = 3.0  # the logits want cnn7 everywhere
    depth = torch.zeros(space.max_cells)
    depth[0] = 2.0
    free = params.per_cell  # one cell of parameter-free ops
    for target in (free, 2 * (params.per_cell + 6 * params.per_op[cnn3]), 3e6):
        [(cell, k, ok)] = rank_archs(space, alpha, depth, params, 1, target, 0.1)
        cost = params.arch_cost(Arch(space, k, cell))
        assert ok and abs(cost / target - 1) <= 0.1, target
    [(cell, k, _)] = rank_archs(space, alpha, depth, params, 1, free, 0.1)
    assert k == 1 and all(op in ("max_pool3", "avg_pool3", "identity") for node in cell for _, op in node)
    [(cell, k, ok)] = rank_archs(space, alpha, depth, params, 3, 1e9, 0.1)  # unreachable: the closest only
    assert not ok and k == space.max_cells and all(op == "cnn7" for node in cell for _, op in node)


def _log_prob(space, alpha, depth, cell, k):
    """Score of rank_archs by hand: log p~ of every kept (edge, op) + log q[K]."""
    nonzero = [o for o in space.ops if o != "zero"]
    logp = torch.log_softmax(alpha[:, [space.ops.index(o) for o in nonzero]], -1)
    score = sum(float(logp[space.edges.index((i, n + 2)), nonzero.index(op)]) for n, node in enumerate(cell)
                for i, op in node)
    return score + float(torch.log_softmax(depth, -1)[k - 1])


def test_rank_archs_lists_the_n_most_probable_distinct_archs_best_first():
    space = load_search_space("tiny")
    params = measure_cost_model(space, "params", num_labels=2, pair=False)
    torch.manual_seed(0)
    alpha, depth = torch.randn(space.num_edges, len(space.ops)), torch.randn(space.max_cells)
    ranked = rank_archs(space, alpha, depth, params, 6)
    assert len(ranked) == 6 and all(ok for _, _, ok in ranked)
    scores = [_log_prob(space, alpha, depth, cell, k) for cell, k, _ in ranked]
    assert scores == sorted(scores, reverse=True)
    assert len({Arch(space, k, cell).genotype() for cell, k, _ in ranked}) == 6
    # exhaustive check on the tiny space: nothing outside the list scores above its last entry
    nonzero = [o for o in space.ops if o != "zero"]
    best_k = int(depth.argmax()) + 1
    all_scores = []
    for choice in itertools.product(*[[sorted(zip(src, ops)) for src in itertools.combinations(range(j), 2)
                                       for ops in itertools.product(nonzero, repeat=2)]
                                      for j in range(2, 2 + space.intermediate_nodes)]):
        all_scores.append(_log_prob(space, alpha, depth, list(choice), best_k))
    assert max(all_scores) == pytest.approx(scores[0])
    assert sorted(all_scores, reverse=True)[1] <= scores[1] + 1e-9
    target = params.arch_cost(Arch(space, ranked[0][1], ranked[0][0]))
    within = rank_archs(space, alpha, depth, params, 4, target, 0.1)
    assert within[0][:2] == ranked[0][:2]
    assert all(abs(params.arch_cost(Arch(space, k, cell)) / target - 1) <= 0.1 for cell, k, _ in within)


def test_depth_losses_read_every_depth_out():
    torch.manual_seed(0)
    heads = [torch.randn(4, 3) for _ in range(3)]
    y, t = torch.tensor([0, 1, 2, 1]), torch.randn(4, 3)
    losses = depth_losses(heads, y, t, gamma=0.25, temperature=2.0)
    for k in range(3):
        expected = 0.75 * F.cross_entropy(heads[k], y) + 0.25 * soft_kd(heads[k], t, 2.0).mean()
        assert losses[k].item() == pytest.approx(expected.item(), rel=1e-5)
    assert depth_losses(heads, y, None, gamma=0.0, temperature=1.0)[1].item() == pytest.approx(
        F.cross_entropy(heads[1], y).item(), rel=1e-5)


def test_gumbel_samples_follow_the_tempered_logits():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1]))
    counts = torch.bincount(torch.stack([gumbel_sample(logits, 1.0) for _ in range(4000)]), minlength=3)
    assert torch.allclose(counts / 4000, torch.tensor([0.7, 0.2, 0.1]), atol=0.03)
    counts = torch.bincount(torch.stack([gumbel_sample(logits, 0.5) for _ in range(4000)]), minlength=3)
    p = torch.softmax(logits / 0.5, -1)
    assert torch.allclose(counts / 4000, p, atol=0.03)
    assert gumbel_sample(torch.zeros(9, 10), 1.0).shape == (9,)


def test_estimator_by_hand_and_its_objective_gradient():
    est = ChoiceEstimates(num_edges=2, num_ops=3, max_cells=3, window=50)
    # Step 1: L = [1.0, 0.8] -> G2 = -0.2, D = [0, -0.2], level = mean(1.0, 1.0) = 1.0, no baseline yet: A = 0.
    assert est.update([0, 1], torch.tensor([1.0, 0.8]), uniform=True) == 0.0
    # Step 2: L = [1.2, 1.0, 0.5] -> G2 = mean(-0.2, -0.2), G3 = -0.5, D = [0, -0.2, -0.7];
    # level = mean(1.2, 1.2, 1.2) = 1.2, A = 1.2 - 1.0 = 0.2, credited to op 2 of edge 0 (edge 1 was dropped).
    assert est.update([2, DROPPED], torch.tensor([1.2, 1.0, 0.5]), uniform=True) == pytest.approx(0.2, rel=1e-5)
    assert est.op[0, 2].item() == pytest.approx(0.2, rel=1e-5) and est.op_n[1].tolist() == [0, 1, 0]
    assert est.depth_loss().tolist() == pytest.approx([0.0, -0.2, -0.7], rel=1e-5)
    s = est.noise()
    assert s == pytest.approx(math.sqrt(0.04 / 2), rel=1e-5)  # running mean of A^2 over the two steps
    alpha = torch.zeros(2, 3, requires_grad=True)
    depth = torch.zeros(3, requires_grad=True)
    est.objective(alpha, depth).backward()
    o = est.op / s
    p = torch.full((2, 3), 1 / 3)
    assert torch.allclose(alpha.grad, p * (o - (p * o).sum(-1, keepdim=True)), atol=1e-6)
    d = (est.depth_loss() - est.depth_loss().mean()) / s
    q = torch.full((3,), 1 / 3)
    assert torch.allclose(depth.grad, q * (d - (q * d).sum()), atol=1e-6)
    assert depth.grad[2] < 0 < depth.grad[0]  # the deepest depth has the lowest loss: its logit goes up


def test_paths_from_the_logits_are_compared_with_their_own_level_by_hand():
    est = ChoiceEstimates(num_edges=1, num_ops=2, max_cells=1, window=50)
    assert est.update([0], torch.tensor([1.0]), uniform=True) == 0.0
    assert est.update([0], torch.tensor([0.8]), uniform=False) == 0.0  # the first path drawn from the logits
    assert est.update([1], torch.tensor([1.1]), uniform=True) == pytest.approx(0.1)  # against 1.0, not 0.9
    assert est.update([0], torch.tensor([0.9]), uniform=False) == pytest.approx(0.1)  # against 0.8
    assert est.level.tolist() == pytest.approx([1.05, 0.85])


def test_a_checkpoint_with_one_level_resumes_with_it_for_both_ways_of_drawing():
    est = ChoiceEstimates(num_edges=1, num_ops=2, max_cells=1, window=50)
    old = {**est.state(), "level": torch.tensor(0.7), "level_n": torch.tensor(4.0)}
    est.load(old)
    assert est.level.tolist() == pytest.approx([0.7, 0.7]) and est.level_n.tolist() == [4.0, 4.0]
    assert est.update([1], torch.tensor([0.9]), uniform=False) == pytest.approx(0.2)


def _favoured_op_lead(one_level: bool, steps: int = 2000, seed: int = 0) -> float:
    """O[op 1] - O[op 0] on a simulated edge whose two ops are equally good, after a warm-up of uniform paths:
    paths drawn from the logits (70% of steps, op 0 on 9 in 10) have better other edges (loss 0.05 lower)."""
    g = torch.Generator().manual_seed(seed)
    est = ChoiceEstimates(1, 2, 1, window=50)
    for step in range(steps):
        uniform = step < 300 or float(torch.rand((), generator=g)) < 0.3
        op = int(torch.rand((), generator=g) < 0.5) if uniform else int(torch.rand((), generator=g) < 0.1)
        loss = 1.0 - (0.0 if uniform else 0.05) + 0.02 * torch.randn((), generator=g)
        est.update([op], loss.reshape(1), uniform=uniform or one_level)
    return float(est.op[0, 1] - est.op[0, 0])


def test_the_op_the_logits_favour_does_not_look_better_for_being_drawn_with_better_paths():
    leads = [_favoured_op_lead(one_level=False, seed=s) for s in range(3)]
    assert max(abs(x) for x in leads) < 0.01
    # one level for both ways of drawing: the favoured op 0 looks better by about half the 0.05 between the two
    # (op 1 is seen on uniform paths 2 times in 3, op 0 1 time in 5): 0.019-0.025 here
    assert min(_favoured_op_lead(one_level=True, seed=s) for s in range(3)) > 0.015


def _simulate_depth(true_loss: list[float], steps: int = 600, seed: int = 0) -> torch.Tensor:
    """The search's depth loop on simulated losses: every step observes L_1..L_Kmax = true_loss + a batch effect
    shared by all depths + noise, updates the estimates and, after a 30% warm-up, takes a plain gradient step
    on the depth logits (as the search does)."""
    g = torch.Generator().manual_seed(seed)
    kmax = len(true_loss)
    est = ChoiceEstimates(1, 2, kmax, window=50)
    depth = torch.zeros(kmax, requires_grad=True)
    opt = torch.optim.SGD([depth], lr=1.0)
    for step in range(steps):
        batch = 0.3 * torch.randn((), generator=g)
        losses = torch.tensor(true_loss) + batch + 0.05 * torch.randn(kmax, generator=g)
        est.update([int(torch.randint(0, 2, (), generator=g))], losses, uniform=True)
        if step >= 0.3 * steps:
            opt.zero_grad()
            est.objective(torch.zeros(1, 2), depth).backward()
            opt.step()
    return torch.softmax(depth.detach(), -1)


def test_depth_estimator_prefers_depth_when_deeper_is_better():
    q = _simulate_depth([0.60, 0.50, 0.45, 0.42, 0.41, 0.405])
    assert int(q.argmax()) + 1 > 1 and float(q[0]) < 0.05


def test_depth_estimator_does_not_drift_to_one_cell_when_depth_does_not_matter():
    for seed in range(3):
        q = _simulate_depth([0.5] * 6, seed=seed)
        assert float(q[0]) < 0.5 and float(q.max()) < 0.6, q
    q = _simulate_depth([0.40, 0.45, 0.50, 0.55, 0.60, 0.65])  # and shallower-is-better is found too
    assert int(q.argmax()) == 0


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


def _tiny_net(seed=0, labels=2):
    torch.manual_seed(seed)
    space = load_search_space("tiny")
    return Supernet(space, torch.randn(40, 12), torch.randn(32, 12), labels), space


def _batch(lengths, width, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 40, (len(lengths), width), generator=g)
    mask = torch.arange(width)[None] < torch.tensor(lengths)[:, None]
    return ids.masked_fill(~mask, 0), mask


def test_hard_mode_runs_only_the_sampled_ops():
    net, space = _tiny_net()
    calls = {}
    for c, cell in enumerate(net.cells):
        for e, edge in enumerate(cell.edges):
            for k, op in enumerate(edge):
                op.register_forward_hook(lambda m, i, o, key=(c, e, k): calls.__setitem__(key, calls.get(key, 0) + 1))
    ids, mask = _batch([5, 3], 6)
    torch.manual_seed(0)
    sample = Sample(gumbel_sample(net.alpha, 1.0).tolist(), 2)
    heads = net(ids, mask, ids, mask, sample)
    zero = space.ops.index("zero")
    expected = {(c, e, k): 1 for c in range(sample.depth) for e, k in enumerate(sample.op_index) if k != zero}
    assert calls == expected and len(heads) == sample.depth
    calls.clear()
    fixed = [0, DROPPED, 1, 2, DROPPED]
    net(ids, mask, ids, mask, Sample(fixed, depth=1))
    assert calls == {(0, 0, 0): 1, (0, 2, 1): 1, (0, 3, 2): 1}


def test_supernet_outputs_ignore_extra_padding_for_pairs():
    torch.manual_seed(0)
    net = Supernet(load_search_space("tiny"), torch.randn(40, 12), torch.randn(32, 12), 2, pair=True)
    net.eval()
    ids_a, mask_a = _batch([6, 2, 4], 6, seed=1)
    ids_b, mask_b = _batch([3, 6, 1], 6, seed=2)
    pad = lambda t: torch.cat([t, torch.zeros(t.shape[0], 4, dtype=t.dtype)], 1)  # noqa: E731
    sample = Sample([0, 1, 2, 3, 0], depth=3)
    heads = net(ids_a, mask_a, ids_b, mask_b, sample)
    heads_w = net(pad(ids_a), pad(mask_a), pad(ids_b), pad(mask_b), sample)
    assert len(heads) == 3 and heads[0].shape == (3, 2)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(heads, heads_w))
    swapped = net(ids_b, mask_b, ids_a, mask_a, sample)  # the readout sees which sentence is which
    assert not torch.allclose(heads[-1], swapped[-1])


@pytest.mark.parametrize("pair", [False, True])
def test_dropout_off_equals_eval_mode_for_every_op(pair):
    """Searcher.estimate_losses switches only dropout (Supernet.set_dropout): no other layer may read the mode."""
    space = load_search_space("adabert")
    assert space.dropout > 0
    torch.manual_seed(0)
    net = Supernet(space, torch.randn(40, 12), torch.randn(32, 12), 2, pair=pair)
    ids, mask = _batch([6, 2, 4], 6, seed=1)
    for op in range(len(space.ops)):
        sample = Sample([op] * space.num_edges, depth=2)
        net.train()
        net.set_dropout(False)
        fast = net(ids, mask, ids, mask, sample)
        net.set_dropout(True)
        assert not torch.equal(net(ids, mask, ids, mask, sample)[-1], fast[-1])  # dropout is back on
        net.eval()
        assert all(torch.equal(a, b) for a, b in zip(fast, net(ids, mask, ids, mask, sample))), space.ops[op]


def test_interleaved_timing_keeps_the_order_of_two_ops_when_the_machine_gets_busy(monkeypatch):
    """Two ops of 2 and 1 ms on a clock that every call after the 40th slows by 10 ms: timed in turn, both see
    the load alike (12 against 11 ms); timed one after the other, the first would read 2 ms and the second 11."""
    clock, calls = [0.0], [0]

    def work(ms: float):
        def fn() -> None:
            calls[0] += 1
            clock[0] += (ms + (10.0 if calls[0] > 40 else 0.0)) / 1e3
        return fn

    monkeypatch.setattr(cost_tables.time, "perf_counter", lambda: clock[0])
    slow, fast = interleaved_median_ms([work(2.0), work(1.0)], torch.device("cpu"), rounds=30, warmup=5)
    assert calls[0] == 70 and slow == pytest.approx(12.0) and fast == pytest.approx(11.0)


def test_latency_cost_table():
    space = load_search_space("tiny")
    costs = measure_cost_model(space, "latency_ms", num_labels=2, pair=False)
    assert len(costs.per_op) == len(space.ops) and all(t >= 0 for t in costs.per_op)
    assert costs.per_cell > 0 and costs.fixed > 0
    conv, zero = space.ops.index("cnn3"), space.ops.index("zero")
    assert costs.per_op[conv] > costs.per_op[zero] == 0
    no_zero = dataclasses.replace(space, ops=tuple(o for o in space.ops if o != "zero"))
    costs = measure_cost_model(no_zero, "latency_ms", num_labels=2, pair=False)  # its cell overhead: edges dropped
    assert all(t > 0 for t in costs.per_op) and costs.per_cell > 0 and costs.fixed > 0
