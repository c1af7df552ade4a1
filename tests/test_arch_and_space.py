import json

import pytest
import torch
from conftest import run_cli

from adabert.core.errors import AdabertError
from adabert.nas.arch import Arch, derive, input_moves, load_arch, save_arch
from adabert.nas.search_space import load_search_space


@pytest.fixture()
def arch_file(tmp_path):
    space = load_search_space("adabert")
    torch.manual_seed(0)
    alpha = torch.randn(space.num_edges, len(space.ops))
    depth = torch.tensor([0.0, 3.0, 1.0, 0, 0, 0, 0, 0])
    arch = derive(space, alpha, depth, {"task": {"name": "sst2"}})
    save_arch(arch, tmp_path / "arch.json")
    return tmp_path / "arch.json", arch, space


def test_derive_keeps_top_edges_and_best_nonzero_op():
    space = load_search_space("tiny")  # edges: 0->2, 1->2, 0->3, 1->3, 2->3 ; ops cnn3 dil_cnn3 max_pool3 identity zero
    alpha = torch.full((5, 5), -5.0)
    alpha[:, 4] = 10.0  # zero is most probable everywhere: derivation must still pick non-zero ops
    alpha[0, 1] = 2.0
    alpha[1, 0] = 1.0
    alpha[2, 2] = 0.5
    alpha[3, 3] = 3.0
    alpha[4, 0] = 1.0
    arch = derive(space, alpha, torch.tensor([0.0, 5.0, 0.0]))
    assert arch.num_cells == 2
    assert arch.cell == [[(0, "dil_cnn3"), (1, "cnn3")], [(1, "identity"), (2, "cnn3")]]
    assert arch.op_index() == [1, 0, -1, 3, 0]


def test_input_moves_change_one_edge_input_and_nothing_else():
    space = load_search_space("tiny")  # 2 intermediate nodes of 2 inputs
    arch = Arch(space, 2, [[(0, "cnn3"), (1, "max_pool3")], [(1, "identity"), (2, "cnn3")]])
    # node 2 reads both of its possible inputs; each of node 3's edges can move to node 0, the one it does not read
    assert [a.genotype() for a in input_moves(arch)] == [
        "K=2 | n2 <- cnn3(0) + max_pool3(1) | n3 <- identity(0) + cnn3(2)",
        "K=2 | n2 <- cnn3(0) + max_pool3(1) | n3 <- cnn3(0) + identity(1)"]
    deep = Arch(load_search_space("adabert"), 1, [[(0, "cnn3"), (1, "avg_pool3")], [(0, "max_pool3"), (2, "cnn5")],
                                                 [(1, "identity"), (3, "dil_cnn3")]])
    moved = input_moves(deep)
    assert len(moved) == 0 + 2 * 1 + 2 * 2 and len({a.genotype() for a in moved}) == len(moved)
    for a in moved:  # one (input, op) of one node changed its input; the ops, K and so the cost stay
        assert a.num_cells == 1 and [sorted(op for _, op in node) for node in a.cell] == [
            sorted(op for _, op in node) for node in deep.cell]
        assert sum(set(a.cell[n]) != set(deep.cell[n]) for n in range(3)) == 1
        assert all(len({i for i, _ in node}) == len(node) and all(i < n + 2 for i, _ in node)
                   for n, node in enumerate(a.cell))
    # one sentence, K = 1: nodes 0 and 1 are both the embedding, so 0 <-> 1 moves are no moves and a move to
    # either is one move
    alike = [a.cell[1:] for a in input_moves(deep, same_inputs=True)]  # node 2 reads 0 and 1: it has no moves
    assert alike == [[[(0, "max_pool3"), (1, "cnn5")], [(1, "identity"), (3, "dil_cnn3")]],
                     [[(0, "max_pool3"), (2, "cnn5")], [(2, "identity"), (3, "dil_cnn3")]],
                     [[(0, "max_pool3"), (2, "cnn5")], [(0, "dil_cnn3"), (1, "identity")]],
                     [[(0, "max_pool3"), (2, "cnn5")], [(1, "identity"), (2, "dil_cnn3")]]]
    assert len(input_moves(Arch(deep.space, 2, deep.cell), same_inputs=True)) == 6  # K = 2: node 0 is not node 1


def test_arch_json_round_trips(arch_file):
    path, arch, space = arch_file
    loaded = load_arch(path, space)
    assert loaded.cell == arch.cell and loaded.num_cells == 2 and loaded.space == space
    assert loaded.info["task"] == {"name": "sst2"}
    assert json.loads(path.read_text())["genotype"] == arch.genotype()


def _mutate(path, fn):
    d = json.loads(path.read_text())
    fn(d)
    bad = path.with_name("bad.json")
    bad.write_text(json.dumps(d))
    return bad


@pytest.mark.parametrize("mutation,message", [
    (lambda d: d["cell"][0][0].update(op="conv9"), "unknown op 'conv9'"),
    (lambda d: d["cell"][1][0].update({"from": 3}), "input 'from' = 3 must be an earlier node index (0..2)"),
    (lambda d: d["cell"][2].pop(), "expected exactly 2 inputs, got 1"),
    (lambda d: d["cell"][2].append({"from": 0, "op": "cnn3"}), "expected exactly 2 inputs, got 3"),
    (lambda d: d.update(num_cells=0), "'num_cells' must be an integer in 1..8, got 0"),
    (lambda d: d.update(num_cells=9), "'num_cells' must be an integer in 1..8, got 9"),
    (lambda d: d.update(format_version=99), "'format_version' is 99"),
    (lambda d: d["search_space"].update(hash="0000"), "embedded definition hashes to"),
    (lambda d: d["search_space"]["definition"].update(hidden_size=64), "embedded definition hashes to"),
])
def test_bad_arch_json(arch_file, mutation, message):
    path, _, space = arch_file
    with pytest.raises(AdabertError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_arch(_mutate(path, mutation), space)


def test_arch_json_from_another_search_space(arch_file):
    path, _, _ = arch_file
    with pytest.raises(AdabertError, match="does not match the given search space 'tiny'"):
        load_arch(path, load_search_space("tiny"))


def test_arch_json_not_json(tmp_path):
    (tmp_path / "arch.json").write_text('{"format_version": 1,\n "cell": [}')
    with pytest.raises(AdabertError, match=r"arch.json:2: arch.json is not valid JSON"):
        load_arch(tmp_path / "arch.json")


SPACE = """name: s
hidden_size: 8
max_cells: 2
intermediate_nodes: 2
inputs_per_node: 2
dropout: 0.0
cost_length: 8
ops: [cnn3, zero]
"""


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.replace("[cnn3, zero]", "[cnn3, conv11]"), "unknown op 'conv11'"),
    (lambda s: s.replace("max_cells: 2\n", ""), "missing key 'max_cells'"),
    (lambda s: s.replace("hidden_size: 8", "hidden_size: 0"), "field 'hidden_size' must be a positive integer, got 0"),
    (lambda s: s.replace("hidden_size: 8", "hidden_size: -3"), "field 'hidden_size' must be a positive integer"),
    (lambda s: s.replace("ops: [cnn3, zero]", "ops: [cnn3, zero"), r"space.yaml:\d+: .* not valid YAML"),
    (lambda s: s + "colour: red\n", "unknown key 'colour'"),
    (lambda s: s + "pair_inputs: both\n", "field 'pair_inputs' must be one of siamese, cross, got 'both'"),
    (lambda s: s + "pair_readout: deep\n", "field 'pair_readout' must be one of mlp, linear, got 'deep'"),
])
def test_bad_search_space(tmp_path, edit, message):
    (tmp_path / "space.yaml").write_text(edit(SPACE))
    with pytest.raises(AdabertError, match=message):
        load_search_space(tmp_path / "space.yaml")


def test_search_space_hash_ignores_comments_and_layout(tmp_path):
    (tmp_path / "a.yaml").write_text(SPACE)
    (tmp_path / "b.yaml").write_text("# comment\n" + SPACE.replace("[cnn3, zero]", "\n  - cnn3\n  - zero"))
    assert load_search_space(tmp_path / "a.yaml").hash == load_search_space(tmp_path / "b.yaml").hash
    (tmp_path / "c.yaml").write_text(SPACE.replace("hidden_size: 8", "hidden_size: 16"))
    assert load_search_space(tmp_path / "c.yaml").hash != load_search_space(tmp_path / "a.yaml").hash
    # pair_inputs at its default is left out of the definition (spaces written before the field keep their hash)
    (tmp_path / "d.yaml").write_text(SPACE + "pair_inputs: siamese\n")
    assert load_search_space(tmp_path / "d.yaml").hash == load_search_space(tmp_path / "a.yaml").hash
    (tmp_path / "e.yaml").write_text(SPACE + "pair_inputs: cross\n")
    cross = load_search_space(tmp_path / "e.yaml")
    assert cross.pair_inputs == "cross" and cross.definition()["pair_inputs"] == "cross"
    assert cross.hash != load_search_space(tmp_path / "a.yaml").hash
    (tmp_path / "f.yaml").write_text(SPACE + "pair_readout: mlp\n")  # likewise pair_readout
    assert load_search_space(tmp_path / "f.yaml").hash == load_search_space(tmp_path / "a.yaml").hash
    (tmp_path / "g.yaml").write_text(SPACE + "pair_readout: linear\n")
    linear = load_search_space(tmp_path / "g.yaml")
    assert linear.pair_readout == "linear" and linear.definition()["pair_readout"] == "linear"
    assert linear.hash != load_search_space(tmp_path / "a.yaml").hash


def test_cli_bad_search_space_exit_2(tmp_path, capsys, sst2_dir):
    (tmp_path / "space.yaml").write_text(SPACE.replace("[cnn3, zero]", "[cnn3, conv11]"))
    code, _, err = run_cli(["search", "--task", "sst2", "--data-dir", sst2_dir, "--teacher", tmp_path,
                            "--probes", tmp_path, "--search-space", tmp_path / "space.yaml",
                            "--output-dir", tmp_path / "out"], capsys)
    assert code == 2 and "unknown op 'conv11'" in err and err.count("\n") == 1
