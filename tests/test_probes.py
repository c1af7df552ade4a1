import json
import shutil

import pytest
import torch
from conftest import run_cli, write_sst2

import adabert.teacher.model as teacher_model
from adabert.core.errors import AdabertError
from adabert.core.fileio import load_tensors
from adabert.data.dataset import load_task_data
from adabert.data.encoding import encode_joint
from adabert.data.tasks import get_task
from adabert.teacher.model import for_inference, load_classifier, load_tokenizer, teacher_outputs
from adabert.teacher.probes import ProbeConfig, load_probe_logits, probe_logits, train_probes


def test_each_layer_probe_is_trained_and_selected_on_its_own():
    # layer 0: noise; layer 1: the label is the sign of feature 3 (offset and scaled, so standardising matters)
    g = torch.Generator().manual_seed(0)
    n, d = 600, 8
    y = torch.randint(0, 2, (n,), generator=g)
    feats = torch.randn(n, 2, d, generator=g) * 5 + 3
    feats[:, 1, 3] = 40 + 10 * (2 * y - 1) + torch.randn(n, generator=g)
    task = get_task("sst2")
    w, b, best = train_probes(task, feats[:500], y[:500].numpy(), feats[500:], y[500:].numpy(),
                              ProbeConfig(epochs=3, batch_size=50, lr=1e-2))
    assert w.shape == (2, d, 2) and b.shape == (2, 2)
    assert best[1] == 100.0 and best[0] < 75
    logits = probe_logits(feats[500:], w, b)  # the folded probes act on raw features
    assert (logits[:, 1].argmax(-1) == y[500:]).all()


def test_probe_logits_shape_and_order(tiny_teacher, tiny_probes, sst2_dir):
    data = load_task_data(get_task("sst2"), sst2_dir)
    pl = load_probe_logits(tiny_probes, data, str(tiny_teacher))
    layers = 2 + 1
    assert pl.train.shape == (len(data.train), layers, 2) and pl.dev.shape == (len(data.dev), layers, 2)
    assert pl.teacher_train.shape == (len(data.train), 2) and pl.num_layers == 2
    # Row i belongs to example i: recompute a few rows one example at a time.
    w = load_tensors(tiny_probes / "probes.safetensors")
    model, tok = load_classifier(str(tiny_teacher)), load_tokenizer(str(tiny_teacher))
    for i in (0, 5, len(data.dev) - 1):
        one = data.dev.subset([i])
        logits, feats = teacher_outputs(model, encode_joint(tok, one, 128), torch.device("cpu"), hidden=True)
        assert torch.allclose(probe_logits(feats, w["weight"], w["bias"])[0], pl.dev[i], atol=2e-2)
        assert torch.allclose(logits[0], pl.teacher_dev[i], atol=1e-4)


def test_bf16_teacher_pass_is_close_to_float32(tiny_teacher, sst2_dir):
    data = load_task_data(get_task("sst2"), sst2_dir)
    tok, cpu = load_tokenizer(str(tiny_teacher)), torch.device("cpu")
    enc = encode_joint(tok, data.dev, 128)
    ref_logits, ref_feats = teacher_outputs(for_inference(load_classifier(str(tiny_teacher)), cpu), enc, cpu,
                                            hidden=True)
    model = for_inference(load_classifier(str(tiny_teacher)), cpu, bf16=True)
    assert next(model.parameters()).dtype == torch.bfloat16
    logits, feats = teacher_outputs(model, enc, cpu, hidden=True)
    assert logits.dtype == torch.float32 and feats.dtype == torch.float16 and feats.shape == ref_feats.shape
    assert not torch.equal(logits, ref_logits)  # it did run in bf16
    assert torch.allclose(logits, ref_logits, atol=0.1 * ref_logits.abs().max().item())
    assert (logits.argmax(-1) == ref_logits.argmax(-1)).float().mean() >= 0.95
    assert torch.nn.functional.cosine_similarity(feats.float(), ref_feats.float(), dim=-1).min() > 0.99


def test_probes_in_bf16_are_another_run(tiny_teacher, tiny_probes, sst2_dir, tmp_path, capsys):
    out = tmp_path / "probes"
    shutil.copytree(tiny_probes, out)
    args = ["probes", "--task", "sst2", "--data-dir", sst2_dir, "--teacher", tiny_teacher, "--output-dir", out,
            "--threads", 1]
    assert run_cli(args + ["--bf16"], capsys)[0] == 0
    assert json.loads((out / "meta.json").read_text())["config"]["bf16"] is True
    teacher_dev = load_tensors(out / "logits.safetensors")["teacher_dev"]
    assert not torch.equal(teacher_dev, load_tensors(tiny_probes / "logits.safetensors")["teacher_dev"])
    ref = json.loads((tiny_probes / "metrics.json").read_text())["layers"][-1]["dev"]["accuracy"]
    assert abs(json.loads((out / "metrics.json").read_text())["layers"][-1]["dev"]["accuracy"] - ref) <= 5


def test_last_layer_probe_tracks_the_teacher(tiny_probes):
    m = json.loads((tiny_probes / "metrics.json").read_text())
    assert len(m["layers"]) == 3
    assert m["layers"][-1]["dev"]["accuracy"] >= m["teacher_dev"]["accuracy"] - 5
    assert m["layers"][-1]["dev"]["accuracy"] > m["layers"][0]["dev"]["accuracy"]


def test_probes_refuse_other_data_and_teacher(tiny_teacher, tiny_probes, tmp_path, tiny_base, sst2_dir):
    other = load_task_data(get_task("sst2"), write_sst2(tmp_path / "other", seed=5))
    with pytest.raises(AdabertError, match="other data"):
        load_probe_logits(tiny_probes, other)
    with pytest.raises(AdabertError, match="another teacher"):
        load_probe_logits(tiny_probes, load_task_data(get_task("sst2"), sst2_dir), str(tiny_base))


def test_probes_recompute_for_another_teacher(tiny_teacher, tiny_base, sst2_dir, tmp_path, capsys):
    out = tmp_path / "probes"
    args = ["probes", "--task", "sst2", "--data-dir", sst2_dir, "--max-length", 32, "--epochs", 2,
            "--output-dir", out]
    assert run_cli(args + ["--teacher", tiny_teacher], capsys)[0] == 0
    first = load_tensors(out / "logits.safetensors")["teacher_dev"]
    stamp = (out / "logits.safetensors").stat().st_mtime_ns
    code, stdout, _ = run_cli(args + ["--teacher", tiny_teacher], capsys)
    assert code == 0 and "teacher" in stdout and (out / "logits.safetensors").stat().st_mtime_ns == stamp
    other = tmp_path / "other-teacher"
    shutil.copytree(tiny_teacher, other)
    sd = load_tensors(other / "model.safetensors")
    sd["classifier.bias"] = sd["classifier.bias"] + torch.tensor([5.0, -5.0])
    from safetensors.torch import save_file
    save_file(sd, str(other / "model.safetensors"), metadata={"format": "pt"})
    assert run_cli(args + ["--teacher", other], capsys)[0] == 0
    second = load_tensors(out / "logits.safetensors")["teacher_dev"]
    assert not torch.allclose(first, second)
    meta = json.loads((out / "meta.json").read_text())
    from adabert.teacher.model import model_source_fingerprint
    assert meta["inputs"]["teacher"] == model_source_fingerprint(str(other))


def test_probes_reject_teacher_of_other_shape(tiny_base, sst2_dir, tmp_path, capsys):
    from transformers import BertForSequenceClassification
    m = BertForSequenceClassification.from_pretrained(str(tiny_base), num_labels=3)
    m.save_pretrained(tmp_path / "t3")
    shutil.copy(tiny_base / "tokenizer.json", tmp_path / "t3")
    shutil.copy(tiny_base / "tokenizer_config.json", tmp_path / "t3")
    code, _, err = run_cli(["probes", "--task", "sst2", "--data-dir", sst2_dir, "--teacher", tmp_path / "t3",
                            "--output-dir", tmp_path / "out"], capsys)
    assert code == 2 and "teacher has 3 outputs but task sst2 needs 2" in err
    assert not (tmp_path / "out").exists()


def test_a_killed_teacher_pass_continues_from_its_cache(tiny_teacher, sst2_dir, tmp_path, monkeypatch):
    model, tok = load_classifier(str(tiny_teacher)), load_tokenizer(str(tiny_teacher))
    enc = encode_joint(tok, load_task_data(get_task("sst2"), sst2_dir).train, 32)
    cpu = torch.device("cpu")
    ref_logits, ref_feats = teacher_outputs(model, enc, cpu, batch_size=64, hidden=True)
    batches = -(-len(enc) // 64)
    real, calls, dying = model.forward, [], [True]

    def dies_at_batch_4(*args, **kw):
        calls.append(1)
        if dying[0] and len(calls) == 4:
            raise RuntimeError("killed")  # the process dies in the middle of the pass
        return real(*args, **kw)
    monkeypatch.setattr(model, "forward", dies_at_batch_4)
    cache = tmp_path / "partial" / "features.safetensors"
    every_batch = {"save_every_s": 0, "save_cost_ratio": 0}
    with pytest.raises(RuntimeError, match="killed"):
        teacher_outputs(model, enc, cpu, 64, True, cache=cache, fingerprint={"run": 1}, **every_batch)
    assert cache.is_file()
    calls.clear()
    dying[0] = False
    logits, feats = teacher_outputs(model, enc, cpu, 64, True, cache=cache, fingerprint={"run": 1}, **every_batch)
    assert len(calls) == batches - 3                      # the three cached batches are not run again
    assert torch.equal(logits, ref_logits) and torch.equal(feats, ref_feats)
    calls.clear()
    teacher_outputs(model, enc, cpu, 64, True, cache=cache, fingerprint={"run": 2}, **every_batch)
    assert len(calls) == batches                          # a cache of other inputs is not used
    cache.write_bytes(cache.read_bytes()[:100])           # a truncated cache is recomputed, not an error
    calls.clear()
    logits, _ = teacher_outputs(model, enc, cpu, 64, True, cache=cache, fingerprint={"run": 2}, **every_batch)
    assert len(calls) == batches and torch.equal(logits, ref_logits)


def test_teacher_cache_saves_are_spaced_by_their_cost(tiny_teacher, sst2_dir, tmp_path, monkeypatch):
    """A fake clock: each batch takes 1 s, each save 2 s. With save_every_s=0 and save_cost_ratio=3 a save
    is due 6 s after the previous one ends, i.e. after every 6th batch, not after every batch."""
    model, tok = load_classifier(str(tiny_teacher)), load_tokenizer(str(tiny_teacher))
    enc = encode_joint(tok, load_task_data(get_task("sst2"), sst2_dir).train, 32)
    clock, saved_after = [0.0], []
    real_forward, real_save = model.forward, teacher_model.save_checkpoint

    def slow_forward(*args, **kw):
        clock[0] += 1.0
        return real_forward(*args, **kw)

    def slow_save(path, tensors, record):
        clock[0] += 2.0
        saved_after.append(record["batches"])
        return real_save(path, tensors, record)
    monkeypatch.setattr(model, "forward", slow_forward)
    monkeypatch.setattr(teacher_model, "save_checkpoint", slow_save)
    monkeypatch.setattr(teacher_model.time, "time", lambda: clock[0])
    batches = -(-len(enc) // 2)
    assert batches >= 14
    teacher_outputs(model, enc, torch.device("cpu"), 2, cache=tmp_path / "c.safetensors", fingerprint={},
                    save_every_s=0, save_cost_ratio=3)
    assert saved_after[:3] == [1, 7, 13]


def test_feature_maps_keep_the_top_components_with_unit_norm():
    """Per layer: standardise, project on the top r principal components, scale to unit mean square."""
    from adabert.teacher.features import feature_targets, fit_feature_maps

    g = torch.Generator().manual_seed(0)
    n = 4000
    # layer 0: two strong directions (along axes 0 and 1 after standardising, correlated with axis 2), noise
    base = torch.randn(n, 2, generator=g)
    v0 = torch.stack([base[:, 0], base[:, 1], base[:, 0] + 0.01 * torch.randn(n, generator=g),
                      0.1 * torch.randn(n, generator=g)], -1) * torch.tensor([5.0, 2.0, 3.0, 1.0]) + 7
    vecs = torch.stack([v0, torch.randn(n, 4, generator=g)], 1)  # [N, 2, 4]
    maps = fit_feature_maps(vecs.half(), 2, chunk=999)
    assert maps["feature_basis"].shape == (2, 4, 2) and maps["feature_mean"].shape == (2, 4)
    c = feature_targets(vecs, maps).float()
    assert c.shape == (n, 2, 2) and c.dtype == torch.float32
    assert torch.allclose(c.pow(2).mean((0, 2)), torch.ones(2), atol=0.02)  # unit mean square per component
    # layer 0's top component is the shared direction of axes 0 and 2 (after standardising), then axis 1
    top = maps["feature_basis"][0, :, 0].abs()
    assert top[0] > 0.2 and top[2] > 0.2 and top[1] < 0.02 and top[3] < 0.1
    assert fit_feature_maps(vecs, 64)["feature_basis"].shape == (2, 4, 4)  # r is at most D
    full = fit_feature_maps(vecs, 4)  # r = D: the standardised vectors, rotated
    z = (vecs - full["feature_mean"]) / full["feature_std"]
    assert torch.allclose(feature_targets(vecs, full).float().pow(2).sum(-1), z.pow(2).sum(-1), rtol=2e-2, atol=2e-2)


def test_probes_cache_feature_targets_of_every_train_row(tiny_teacher, tiny_probes, sst2_dir):
    from adabert.teacher.features import feature_targets

    data = load_task_data(get_task("sst2"), sst2_dir)
    pl = load_probe_logits(tiny_probes, data, str(tiny_teacher))
    maps = load_tensors(tiny_probes / "probes.safetensors")
    assert pl.features.shape == (len(data.train), 3, 32) and pl.features.dtype == torch.float16  # r = D = 32
    model, tok = load_classifier(str(tiny_teacher)), load_tokenizer(str(tiny_teacher))
    for i in (0, len(data.train) - 1):
        _, feats = teacher_outputs(model, encode_joint(tok, data.train.subset([i]), 128), torch.device("cpu"),
                                   hidden=True)
        assert torch.allclose(feature_targets(feats, maps)[0].float(), pl.features[i].float(), atol=2e-2)


def test_probes_made_before_the_features_stay_up_to_date_until_features_are_asked(tiny_teacher, tiny_probes,
                                                                                  sst2_dir, tmp_path):
    """A folder of an older version (no feature_dims in its config, no targets) is up to date for the default (no
    features) and recomputed for --feature-dims."""
    from adabert.core.fileio import save_tensors
    from adabert.teacher.probes import run_probes

    shutil.copytree(tiny_probes, tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "meta.json").read_text())
    del meta["config"]["feature_dims"]
    (tmp_path / "p" / "meta.json").write_text(json.dumps(meta))
    old = {k: v for k, v in load_tensors(tmp_path / "p" / "logits.safetensors").items() if k != "features_train"}
    save_tensors(tmp_path / "p" / "logits.safetensors", old)
    data = load_task_data(get_task("sst2"), sst2_dir)
    cfg = {k: v for k, v in meta["config"].items() if k != "task"}
    stamp = (tmp_path / "p" / "logits.safetensors").stat().st_mtime_ns
    run_probes(str(tiny_teacher), data, ProbeConfig(**cfg), tmp_path / "p", torch.device("cpu"))
    assert (tmp_path / "p" / "logits.safetensors").stat().st_mtime_ns == stamp
    run_probes(str(tiny_teacher), data, ProbeConfig(**cfg, feature_dims=-1), tmp_path / "p", torch.device("cpu"))
    assert json.loads((tmp_path / "p" / "meta.json").read_text())["config"]["feature_dims"] == -1
    assert load_probe_logits(tmp_path / "p", data).features.shape[-1] == 32
    with pytest.raises(AdabertError, match="--feature-dims: expected -1"):
        ProbeConfig(feature_dims=-2)
