"""Tang et al. augmentation: the rules, determinism, the budget, the cached teacher outputs, and its use."""

import json

import numpy as np
import pytest
import torch
from conftest import run_cli, tiny_arch

from adabert.core.errors import AdabertError
from adabert.core.fileio import load_tensors
from adabert.data.dataset import load_task_data
from adabert.data.encoding import encode_joint
from adabert.data.tasks import get_task
from adabert.distill.distill import DistillConfig, run_distill
from adabert.nas.arch import save_arch
from adabert.students.finetune import FinetuneConfig, finetune_student
from adabert.teacher.augment import (AugmentConfig, PosLexicon, augment_dataset, augment_words, load_augmented,
                                     run_augment, spacy_tagger)
from adabert.study import StudyConfig, run_study
from adabert.teacher.bundle import TaskBundle
from adabert.teacher.model import load_classifier, load_tokenizer, teacher_outputs
from adabert.teacher.features import feature_targets
from adabert.teacher.probes import probe_logits

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tagger():
    return spacy_tagger()


@pytest.fixture(scope="module")
def toy(sst2_dir):
    return load_task_data(get_task("sst2"), sst2_dir)


def test_spacy_tags_whitespace_tokens(tagger):
    tags = tagger([["the", "movie", "is", "good"], ["it", "'s", "a", "dull", "plot"]])
    assert tags == [["DT", "NN", "VBZ", "JJ"], ["PRP", "VBZ", "DT", "JJ", "NN"]]


def test_each_rule_alone():
    words = "the plot is very dull and the actor is bad".split()
    rng = np.random.default_rng(0)
    only_mask = AugmentConfig(mask_prob=1.0, pos_prob=0.0, ngram_prob=0.0)
    assert augment_words(words, None, None, only_mask, "[MASK]", rng, ngrams=True) == ["[MASK]"] * len(words)
    only_ngram = AugmentConfig(mask_prob=0.0, pos_prob=0.0, ngram_prob=1.0, max_ngram=3)
    for _ in range(20):
        out = augment_words(words, None, None, only_ngram, "[MASK]", rng, ngrams=True)
        assert 1 <= len(out) <= 3 and any(words[i:i + len(out)] == out for i in range(len(words)))
    assert augment_words(words, None, None, only_ngram, "[MASK]", rng, ngrams=False) == words
    tags = ["DT", "NN", "VBZ", "RB", "JJ", "CC", "DT", "NN", "VBZ", "JJ"]
    lexicon = PosLexicon([words, ["a", "film", "was", "quite", "great"]], [tags, ["DT", "NN", "VBD", "RB", "JJ"]])
    only_pos = AugmentConfig(mask_prob=0.0, pos_prob=1.0, ngram_prob=0.0)
    seen = set()
    for _ in range(50):
        out = augment_words(words, tags, lexicon, only_pos, "[MASK]", rng, ngrams=True)
        for w, t in zip(out, tags):
            assert w in lexicon.table[t][0]      # replaced by a word seen with the same tag
        seen.update(out)
    assert {"film", "quite", "great", "a"} <= seen


def test_lexicon_samples_by_unigram_frequency():
    lexicon = PosLexicon([["a"] * 3 + ["b"]], [["X"] * 4])
    rng = np.random.default_rng(0)
    draws = [lexicon.sample("X", rng) for _ in range(4000)]
    assert draws.count("a") / len(draws) == pytest.approx(0.75, abs=0.03)


def test_budget_and_determinism(toy, tagger):
    cfg = AugmentConfig(copies=3, seed=1)
    texts, source = augment_dataset(toy.fit, cfg, "[MASK]", tagger)
    again, source2 = augment_dataset(toy.fit, cfg, "[MASK]", tagger)
    assert texts == again and np.array_equal(source, source2)
    counts = np.bincount(source, minlength=len(toy.fit))
    assert counts.max() <= 3 and counts.mean() > 2
    for i in range(len(toy.fit)):
        mine = [t for t, s in zip(texts, source) if s == i]
        assert len(set(mine)) == len(mine) and toy.fit.texts[i] not in mine
    other, _ = augment_dataset(toy.fit, AugmentConfig(copies=3, seed=2), "[MASK]", tagger)
    assert other != texts
    # an example's copies do not depend on the others (generator seeded by (seed, index)); with pos_prob 0 the
    # lexicon (which depends on the whole text) plays no part
    no_pos = AugmentConfig(copies=3, seed=1, pos_prob=0.0)
    full, full_src = augment_dataset(toy.fit, no_pos, "[MASK]", None)
    head, head_src = augment_dataset(toy.fit.subset(np.arange(10)), no_pos, "[MASK]", None)
    assert head == [t for t, s in zip(full, full_src) if s < 10]


def test_pairs_keep_both_sides_and_skip_ngrams(mrpc_dir, tagger):
    data = load_task_data(get_task("mrpc"), mrpc_dir)
    cfg = AugmentConfig(copies=2, mask_prob=0.0, pos_prob=0.3, ngram_prob=1.0)
    texts, source = augment_dataset(data.fit, cfg, "[MASK]", tagger)
    for t, s in zip(texts, source):
        assert len(t) == 2
        assert [len(x.split()) for x in t] == [len(x.split()) for x in data.fit.texts[s]]


def test_run_augment_caches_teacher_and_probe_logits(toy, tiny_teacher, tiny_probes, tmp_path):
    out = tmp_path / "aug"
    stats = run_augment(str(tiny_teacher), toy, AugmentConfig(copies=2, max_length=32), out, CPU,
                        probes_dir=tiny_probes)
    aug = load_augmented(out, toy, str(tiny_teacher))
    assert stats["augmented"] == len(aug.data) > len(toy.fit)
    assert aug.probes.shape == (len(aug.data), 3, 2) and aug.teacher.shape == (len(aug.data), 2)
    model = load_classifier(str(tiny_teacher))
    logits, feats = teacher_outputs(model, encode_joint(load_tokenizer(str(tiny_teacher)), aug.data, 32), CPU,
                                    hidden=True)
    assert torch.allclose(logits, aug.teacher, atol=1e-5)
    probes = load_tensors(tiny_probes / "probes.safetensors", "probes")        # computed per batch = from all
    # beside the sentence-vector targets, the probe logits pass through float16
    assert torch.allclose(probe_logits(feats, probes["weight"], probes["bias"]), aug.probes, atol=1e-2)
    assert aug.features.shape == (len(aug.data), 3, 32)  # sentence-vector KD targets, through the probes' maps
    assert torch.allclose(feature_targets(feats, probes).float(), aug.features.float(), atol=1e-2)
    assert np.array_equal(aug.data.labels, logits.argmax(-1).numpy())   # teacher's predictions as labels
    assert set(aug.source) <= set(range(len(toy.fit)))
    first = json.loads((out / "augmented.jsonl").read_text().splitlines()[0])
    assert set(first) == {"texts", "source"}
    stamp = (out / "logits.safetensors").stat().st_mtime_ns
    run_augment(str(tiny_teacher), toy, AugmentConfig(copies=2, max_length=32), out, CPU, probes_dir=tiny_probes)
    assert (out / "logits.safetensors").stat().st_mtime_ns == stamp            # up to date: skipped
    # distillation on fit + augmented text
    bundle = TaskBundle(toy, tiny_teacher, tiny_probes, out)
    m = run_distill(bundle, DistillConfig(method="mse", epochs=3, batch_size=16, max_length=32, embed_dim=16, hidden=16,
                                          fc=16, lr=3e-2), tmp_path / "student", CPU)
    assert m["train_examples"] == len(toy.fit) + len(aug.data)
    assert m["dev"]["accuracy"] >= 85
    # the searched student's finetune takes the same folder (probe and sentence-vector KD on the augmented text too)
    save_arch(tiny_arch(), tmp_path / "arch.json")
    m = finetune_student(tmp_path / "arch.json", bundle,
                         FinetuneConfig(epochs=3, batch_size=32, max_length=32, lr=1e-2, feature_kd=1.0),
                         tmp_path / "searched", CPU)
    assert m["train_examples"] == len(toy.fit) + len(aug.data)
    assert m["dev"]["accuracy"] >= 85
    # a study's architecture rows train on it only when asked (--augment-rows); the default leaves it to the BiLSTM
    ft = FinetuneConfig(epochs=1, batch_size=32, max_length=32, lr=1e-2)
    for rows, examples in ((True, len(toy.fit) + len(aug.data)), (False, len(toy.fit))):
        out = tmp_path / f"study-{rows}"
        r = run_study(tmp_path / "arch.json", bundle, StudyConfig(parts=("kd",), seeds=1, augment_rows=rows,
                                                                  finetune=ft), out, CPU)
        for a in r["archs"]:
            assert json.loads((out / "runs" / a["name"] / "seed0" / "metrics.json").read_text())[
                "train_examples"] == examples, a["name"]
        assert ("with the augmented text of" in (out / "results.md").read_text()) == rows


def test_augment_refuses_other_data_and_bad_settings(toy, mrpc_dir, tiny_teacher, tmp_path, sst2_dir, capsys):
    out = tmp_path / "aug"
    run_augment(str(tiny_teacher), toy, AugmentConfig(copies=1, pos_prob=0.0, max_length=32), out, CPU)
    other = load_task_data(get_task("sst2"), sst2_dir, holdout_fraction=0.2)
    with pytest.raises(AdabertError, match="augmented from other data"):
        load_augmented(out, other)
    code, _, err = run_cli(["augment", "--task", "sst2", "--data-dir", sst2_dir, "--teacher", tiny_teacher,
                            "--mask-prob", "0.7", "--pos-prob", "0.6", "--output-dir", tmp_path / "x"], capsys)
    assert code == 2 and "--mask-prob + --pos-prob" in err and not (tmp_path / "x").exists()
    code, _, err = run_cli(["augment", "--task", "sst2", "--data-dir", sst2_dir, "--teacher", tiny_teacher,
                            "--tagger", "no_such_model", "--output-dir", tmp_path / "y"], capsys)
    assert code == 2 and "no_such_model" in err and len(err.strip().splitlines()) == 1
