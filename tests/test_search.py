"""End-to-end search on the toy task with the tiny teacher and the tiny search space."""

import json

import pytest
import torch

from adabert.arch import load_arch
from adabert.data import load_task_data
from adabert.losses import efficiency_loss
from adabert.search import SearchConfig, Searcher
from adabert.search_space import load_search_space
from adabert.tasks import get_task
from conftest import run_cli


def _searcher(tiny_teacher, tiny_probes, sst2_dir, out, **kw):
    cfg = SearchConfig(**{"epochs": 6, "batch_size": 32, "max_length": 32, "evals_per_epoch": 1,
                          "checkpoint_every": 3, "log_every": 1, "lr": 1e-2, "alpha_lr": 1e-2, **kw})
    data = load_task_data(get_task("sst2"), sst2_dir)
    return Searcher(str(tiny_teacher), tiny_probes, data, load_search_space("tiny"), cfg, out, torch.device("cpu"))


@pytest.fixture(scope="module")
def searched(tiny_teacher, tiny_probes, sst2_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "full"
    s = _searcher(tiny_teacher, tiny_probes, sst2_dir, out)
    return out, s.run()


def test_tiny_search_learns_and_writes_a_valid_arch(searched):
    out, summary = searched
    arch = load_arch(out / "arch.json", load_search_space("tiny"))
    assert summary["selection"]["holdout"]["accuracy"] >= 80.0
    first = summary["history"][0]["holdout"]["accuracy"]
    assert max(h["holdout"]["accuracy"] for h in summary["history"]) >= first
    assert 1 <= arch.num_cells <= 3 and arch.info["efficiency"]["params"] > 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["stage"] == "search" and (out / "config.json").is_file()


def test_tensorboard_holds_scalars_and_images(searched):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = searched
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("loss/total", "loss/ce", "loss/kd", "loss/efficiency", "search/tau", "holdout/accuracy",
                "cost/expected_params", "cost/expected_flops", "cost/expected_depth", "collapse/param_free_share",
                "collapse/edge_entropy_mean"):
        assert tag in tags["scalars"], tag
    assert {"arch/alpha", "arch/depth", "arch/cell"} <= set(tags["images"])
    assert any(t.startswith("arch/genotype") for t in tags["tensors"])
    taus = [e.value for e in acc.Scalars("search/tau")]
    assert taus[0] == pytest.approx(1.0) and taus[-1] < taus[0]
    img = acc.Images("arch/alpha")[-1]
    assert img.width > 50 and img.height > 50


def test_interrupted_and_resumed_search_gives_the_same_arch(searched, tiny_teacher, tiny_probes, sst2_dir, tmp_path):
    out_full, _ = searched
    out = tmp_path / "resumed"
    assert _searcher(tiny_teacher, tiny_probes, sst2_dir, out).run(max_steps=8) is None
    assert (out / "checkpoint.json").is_file() and not (out / "arch.json").exists()
    _searcher(tiny_teacher, tiny_probes, sst2_dir, out).run(resume=True)
    a, b = json.loads((out_full / "arch.json").read_text()), json.loads((out / "arch.json").read_text())
    for key in ("cell", "num_cells", "alpha_probs", "depth_probs", "selection"):
        assert a[key] == b[key], key


def test_resume_refuses_other_settings(tiny_teacher, tiny_probes, sst2_dir, tmp_path):
    from adabert.errors import AdabertError

    out = tmp_path / "s"
    _searcher(tiny_teacher, tiny_probes, sst2_dir, out, epochs=1).run(max_steps=2)
    with pytest.raises(AdabertError, match="checkpoint was made with other inputs or settings"):
        _searcher(tiny_teacher, tiny_probes, sst2_dir, out, epochs=1, beta=3.0).run(resume=True)


def test_larger_beta_gives_cheaper_architectures(tiny_teacher, tiny_probes, sst2_dir, tmp_path):
    costs = {}
    for beta in (0.0, 20.0):
        s = _searcher(tiny_teacher, tiny_probes, sst2_dir, tmp_path / f"b{beta}", epochs=2, beta=beta,
                      alpha_lr=0.05, evals_per_epoch=1)
        s.run()
        costs[beta] = float(efficiency_loss(s.model.alpha, s.model.depth_logits, s.op_cost)[0])
    assert costs[20.0] < 0.8 * costs[0.0]


def test_soft_and_bilevel_modes_run(tiny_teacher, tiny_probes, sst2_dir, tmp_path):
    s = _searcher(tiny_teacher, tiny_probes, sst2_dir, tmp_path / "soft", epochs=1, mode="soft", bilevel=True,
                  evals_per_epoch=1)
    summary = s.run()
    assert summary["selection"]["holdout"]["accuracy"] > 0 and (tmp_path / "soft" / "arch.json").is_file()


def test_cli_search(tiny_teacher, tiny_probes, sst2_dir, tmp_path, capsys):
    code, out, err = run_cli(["search", "--task", "sst2", "--data-dir", sst2_dir, "--teacher", tiny_teacher,
                              "--probes", tiny_probes, "--search-space", "tiny", "--epochs", 1, "--batch-size", 64,
                              "--max-length", 32, "--output-dir", tmp_path / "s"], capsys)
    assert code == 0, err
    assert "arch: K=" in out and (tmp_path / "s" / "arch.json").is_file()


def test_search_refuses_probes_of_other_data(tiny_teacher, tiny_probes, tmp_path, capsys):
    from conftest import write_sst2

    other = write_sst2(tmp_path / "other", seed=9)
    code, _, err = run_cli(["search", "--task", "sst2", "--data-dir", other, "--teacher", tiny_teacher,
                            "--probes", tiny_probes, "--search-space", "tiny", "--output-dir", tmp_path / "s"],
                           capsys)
    assert code == 2 and "computed for other data" in err
