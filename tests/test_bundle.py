"""The prepared bundle the search, finetune and distill stages receive: loaded once, lazily, shared by variants."""

import pytest
import torch

import adabert.teacher.bundle
from adabert.core.errors import AdabertError
from adabert.data.dataset import load_task_data
from adabert.data.encoding import encode_separate
from adabert.data.tasks import get_task
from adabert.nas.arch import derive, save_arch
from adabert.nas.search_space import load_search_space
from adabert.students.finetune import FinetuneConfig, finetune_student
from adabert.teacher.bundle import TaskBundle

CPU = torch.device("cpu")


def _count_calls(monkeypatch, name):
    calls = []
    real = getattr(adabert.teacher.bundle, name)

    def counted(*args, **kw):
        calls.append(args)
        return real(*args, **kw)
    monkeypatch.setattr(adabert.teacher.bundle, name, counted)
    return calls


def test_parts_load_once_and_only_when_asked(tiny_teacher, tiny_probes, sst2_dir, monkeypatch):
    loads = _count_calls(monkeypatch, "load_classifier")
    probe_loads = _count_calls(monkeypatch, "load_probe_logits")
    bundle = TaskBundle(load_task_data(get_task("sst2"), sst2_dir), tiny_teacher, tiny_probes)
    assert bundle.inputs()["data"] == bundle.data.fingerprint and not loads and not probe_loads
    word, pos = bundle.tables
    word2, _ = bundle.tables
    assert word.data_ptr() == word2.data_ptr() and word.shape[1] == pos.shape[1] and len(loads) == 1
    assert not any(p.requires_grad for p in bundle.classifier.parameters())
    assert bundle.probes is bundle.probes and len(probe_loads) == 1
    enc = bundle.encoded("fit", 32, limit=10)
    assert bundle.encoded("fit", 32, limit=10) is enc and len(enc) == 10
    assert bundle.encoded("fit", 16, limit=10) is not enc
    ref = encode_separate(bundle.tokenizer, bundle.data.fit.subset(range(10)), 32)
    assert enc.ids == ref.ids
    assert len(bundle.encoded("dev", 32)) == len(bundle.data.dev)


def test_fit_limit_shares_what_is_loaded_and_has_its_own_fingerprint(tiny_teacher, tiny_probes, sst2_dir,
                                                                     monkeypatch):
    bundle = TaskBundle(load_task_data(get_task("sst2"), sst2_dir), tiny_teacher, tiny_probes)
    loads = _count_calls(monkeypatch, "load_classifier")
    small = bundle.with_fit_limit(20)
    assert small.data.fingerprint != bundle.data.fingerprint and len(small.data.train_idx) == 20
    assert small.probes is bundle.probes          # checked against the full data, then shared
    assert small.classifier is bundle.classifier and len(loads) == 1
    assert bundle.with_fit_limit(0) is bundle
    assert bundle.with_augment(None).classifier is bundle.classifier


def test_missing_probes_is_a_one_line_error(tiny_teacher, sst2_dir):
    bundle = TaskBundle(load_task_data(get_task("sst2"), sst2_dir), tiny_teacher)
    assert bundle.probes is None and bundle.augmented is None
    with pytest.raises(AdabertError, match="--probes: required by the search"):
        bundle.require_probes("by the search")


def test_two_finetunes_on_one_bundle_read_the_teacher_once(tiny_teacher, tiny_probes, sst2_dir, tmp_path,
                                                           monkeypatch):
    space = load_search_space("tiny")
    torch.manual_seed(0)
    save_arch(derive(space, torch.randn(space.num_edges, len(space.ops)), torch.tensor([0.0, 2.0, 0.0])),
              tmp_path / "arch.json")
    loads = _count_calls(monkeypatch, "load_classifier")
    tok_loads = _count_calls(monkeypatch, "load_tokenizer")
    bundle = TaskBundle(load_task_data(get_task("sst2"), sst2_dir), tiny_teacher, tiny_probes)
    cfg = FinetuneConfig(epochs=1, batch_size=32, max_length=16, evals_per_epoch=1)
    a = finetune_student(tmp_path / "arch.json", bundle, cfg, tmp_path / "a", CPU)
    b = finetune_student(tmp_path / "arch.json", bundle, FinetuneConfig(**{**cfg.__dict__, "seed": 1}), tmp_path / "b",
                         CPU)
    assert len(loads) == 1 and len(tok_loads) == 1
    assert a["history"] != b["history"]  # two real runs (other seeds), not one result twice
    # an up-to-date output reads nothing at all
    loads.clear()
    fresh = TaskBundle(bundle.data, tiny_teacher, tiny_probes)
    assert finetune_student(tmp_path / "arch.json", fresh, cfg, tmp_path / "a", CPU)["dev"] == a["dev"]
    assert not loads and not fresh._cache and set(fresh._teacher) == {"fingerprint"}  # only hashed
