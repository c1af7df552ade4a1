"""The derived student: build, finetune with KD, save, reload, evaluate, predict."""

import json
import shutil
from dataclasses import asdict

import numpy as np
import pytest
import torch
from conftest import cli_stages, run_cli, tiny_arch, write_ratings
from safetensors.torch import save_file

from adabert.core.checkpoint import unprefixed
from adabert.core.errors import AdabertError
from adabert.core.fileio import hash_tensors, load_tensors, meta_matches
from adabert.core.runtime import autocast
from adabert.data.dataset import load_task_data
from adabert.data.encoding import encode_separate, student_batch
from adabert.data.tasks import get_task
from adabert.nas.arch import save_arch
from adabert.nas.search_space import load_search_space
from adabert.nas.supernet import Sample, Supernet
from adabert.students.finetune import FinetuneConfig, JoinedRows, finetune_student
from adabert.students.student import Student, inherit_search_weights
from adabert.teacher.bundle import TaskBundle
from adabert.teacher.probes import load_probe_logits


@pytest.fixture(scope="module")
def trained(tiny_teacher, tiny_probes, sst2_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("student")
    save_arch(tiny_arch(), root / "arch.json")
    data = load_task_data(get_task("sst2"), sst2_dir)
    cfg = FinetuneConfig(epochs=6, batch_size=32, max_length=32, lr=1e-2)
    metrics = finetune_student(root / "arch.json", TaskBundle(data, tiny_teacher, tiny_probes), cfg,
                               root / "student", torch.device("cpu"))
    return root, metrics, data


def test_a_finished_finetune_stays_up_to_date_when_an_option_is_added_with_its_default(trained, tiny_teacher,
                                                                                      tiny_probes):
    root, metrics, data = trained
    meta_path = root / "student" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["config"]["steps"]  # as written before the option existed
    meta_path.write_text(json.dumps(meta))
    stamp = (root / "student" / "metrics.json").stat().st_mtime_ns
    cfg = FinetuneConfig(epochs=6, batch_size=32, max_length=32, lr=1e-2)
    bundle = TaskBundle(data, tiny_teacher, tiny_probes)
    assert finetune_student(root / "arch.json", bundle, cfg, root / "student", torch.device("cpu")) == metrics
    assert (root / "student" / "metrics.json").stat().st_mtime_ns == stamp  # skipped, not retrained
    assert not meta_matches(root / "student", "finetune", meta["inputs"], {**meta["config"], "steps": 3},
                            defaults=asdict(FinetuneConfig()))  # a non-default value of the new option: rerun
    assert not meta_matches(root / "student", "finetune", meta["inputs"], {**meta["config"], "steps": 0})  # strict


def test_an_up_to_date_folder_whose_weights_no_longer_fit_the_model_is_trained_again(trained, tiny_teacher,
                                                                                     tiny_probes, tmp_path,
                                                                                     adabert_log):
    root, metrics, data = trained
    out = tmp_path / "old"
    shutil.copytree(root / "student", out)
    weights = load_tensors(out / "model.safetensors", "w")
    dropped = sorted(weights)[-1]
    del weights[dropped]  # as if written before the model gained this tensor
    save_file(weights, str(out / "model.safetensors"))
    cfg = FinetuneConfig(epochs=6, batch_size=32, max_length=32, lr=1e-2)
    again = finetune_student(root / "arch.json", TaskBundle(data, tiny_teacher, tiny_probes), cfg, out,
                             torch.device("cpu"))
    assert "its student does not load" in adabert_log.text and dropped in adabert_log.text
    assert dropped in load_tensors(out / "model.safetensors", "w")  # trained and saved anew, whole
    assert again["dev"] == metrics["dev"]  # same seed, same data: the same student as the first run


def test_student_builds_only_kept_cells_and_edges():
    arch = tiny_arch()
    student = Student.from_teacher_tables(arch, torch.randn(40, 12), torch.randn(32, 12), 2)
    assert len(student.cells) == arch.num_cells == 2
    for cell in student.cells:
        assert [len(ops) for ops in cell.ops] == [2, 2]
        assert cell.inputs == [[i for i, _ in node] for node in arch.cell]


def test_inference_runs_the_last_head_only():
    arch = tiny_arch()
    for pair in (False, True):
        torch.manual_seed(0)
        student = Student.from_teacher_tables(arch, torch.randn(40, 12), torch.randn(32, 12), 2, pair).eval()
        calls = [0] * len(student.heads)
        for k, head in enumerate(student.heads):
            for part in (head.out, head.align) if pair else (head.out,):
                part.register_forward_pre_hook(lambda *_, k=k: calls.__setitem__(k, calls[k] + 1))
        ids, ids_b = torch.randint(5, 40, (3, 7)), torch.randint(5, 40, (3, 7))
        mask = torch.arange(7)[None] < torch.tensor([7, 4, 2])[:, None]
        every = student.forward_all(ids, mask, ids_b, mask)
        assert len(every) == 2 and calls[0] > 0
        calls[:] = [0, 0]
        assert torch.equal(student(ids, mask, ids_b, mask), every[-1])
        assert calls[0] == 0 and calls[1] > 0


@pytest.mark.parametrize("share", [False, True])
def test_supernet_with_fixed_arch_equals_student_with_inherited_weights(share):
    arch = tiny_arch()
    for pair in (False, True):
        torch.manual_seed(0)
        net = Supernet(arch.space, torch.randn(40, 12), torch.randn(32, 12), 2, share_cells=share, pair=pair).eval()
        assert len(net.cells) == (1 if share else arch.space.max_cells)
        student = Student.from_teacher_tables(arch, net.embed.word, net.embed.pos, 2, pair).eval()
        assert inherit_search_weights(student, net.state_dict()) == len(student.state_dict())
        ids = torch.randint(5, 40, (3, 7))
        ids_b = torch.randint(5, 40, (3, 7))
        mask = torch.arange(7)[None] < torch.tensor([7, 4, 2])[:, None]
        ref = net(ids, mask, ids_b, mask, Sample(arch.op_index(), arch.num_cells))[-1]
        assert torch.allclose(student(ids, mask, ids_b, mask), ref, atol=1e-5)


def test_finetuned_student_learns_and_reloads_identically(trained, tiny_teacher, tiny_probes):
    root, metrics, data = trained
    assert metrics["dev"]["accuracy"] >= 85.0
    folder = root / "student"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "metrics.json", "meta.json"):
        assert (folder / name).is_file(), name
    a, _ = Student.from_pretrained(folder)
    b, cfg = Student.from_pretrained(folder)
    assert cfg["vocab_size"] == a.embed.word.num_embeddings and a.embed.word.embedding_dim == 16
    from transformers import AutoTokenizer
    enc = encode_separate(AutoTokenizer.from_pretrained(str(folder)), data.dev, 32)
    batch = student_batch(enc, list(range(len(enc))), torch.device("cpu"))
    with torch.no_grad():
        assert torch.equal(a(*batch), b(*batch))
        labels = a(*batch).argmax(-1)
    teacher = load_probe_logits(tiny_probes, data, tiny_teacher).teacher_dev.argmax(-1)
    assert metrics["dev_teacher_agreement"] == pytest.approx(100 * (labels == teacher).float().mean().item())


def test_cli_evaluate_and_predict(trained, sst2_dir, capsys, tmp_path):
    root, metrics, _ = trained
    code, out, err = run_cli(["evaluate", "--student", root / "student", "--task", "sst2", "--data-dir", sst2_dir],
                             capsys)
    assert code == 0, err
    assert f"accuracy {metrics['dev']['accuracy']:.2f}" in out and "confusion" in out
    (tmp_path / "in.txt").write_text("the good movie\nthe awful film\n")
    code, out, err = run_cli(["predict", "--student", root / "student", "--input", tmp_path / "in.txt"], capsys)
    assert code == 0, err
    lines = out.strip().split("\n")
    assert [line.split("\t")[0] for line in lines] == ["positive", "negative"]
    probs = json.loads(lines[0].split("\t")[1])
    assert set(probs) == {"negative", "positive"} and abs(sum(probs.values()) - 1) < 1e-4


def test_predict_wrong_number_of_columns(trained, tmp_path, capsys):
    root, _, _ = trained
    (tmp_path / "in.txt").write_text("a good film\nsentence a\tsentence b\n")
    code, _, err = run_cli(["predict", "--student", root / "student", "--input", tmp_path / "in.txt"], capsys)
    assert code == 2 and "in.txt:2: expected 1 tab-separated column" in err


def test_student_folder_errors(trained, tmp_path, capsys, mrpc_dir):
    root, _, _ = trained
    code, _, err = run_cli(["predict", "--student", tmp_path / "none", "--input", "-"], capsys)
    assert code == 2 and "no such student folder" in err
    bad = tmp_path / "corrupt"
    shutil.copytree(root / "student", bad)
    (bad / "model.safetensors").write_bytes(b"not safetensors")
    code, _, err = run_cli(["predict", "--student", bad, "--input", "-"], capsys)
    assert code == 2 and "model.safetensors: student weights is not a readable safetensors file" in err
    (bad / "config.json").write_text("{")
    code, _, err = run_cli(["predict", "--student", bad, "--input", "-"], capsys)
    assert code == 2 and "config.json:1: student config is not valid JSON" in err
    code, _, err = run_cli(["evaluate", "--student", root / "student", "--task", "mrpc", "--data-dir", mrpc_dir],
                           capsys)
    assert code == 2 and "trained for task 'sst2'" in err


def test_finetune_missing_arch(tiny_teacher, tiny_probes, sst2_dir, tmp_path, capsys):
    code, _, err = run_cli(["finetune", "--arch", tmp_path / "arch.json", "--teacher", tiny_teacher, "--probes",
                            tiny_probes, "--task", "sst2", "--data-dir", sst2_dir, "--output-dir", tmp_path / "o"],
                           capsys)
    assert code == 2 and "arch.json: arch.json not found" in err and not (tmp_path / "o").exists()


def test_finetune_without_kd_and_inherit(tiny_teacher, tiny_probes, sst2_dir, tmp_path):
    from adabert.nas.search import SearchConfig, Searcher

    data = load_task_data(get_task("sst2"), sst2_dir)
    bundle = TaskBundle(data, tiny_teacher, tiny_probes)
    s = Searcher(bundle, load_search_space("tiny"),
                 SearchConfig(epochs=1, batch_size=32, max_length=32, evals=1, min_steps=0, select_top=1),
                 tmp_path / "s", torch.device("cpu"))
    s.run()
    fit_steps = -(-len(bundle.fit_rows(0)) // 32)
    cfg = FinetuneConfig(steps=fit_steps + 3, evals_per_epoch=2, batch_size=32, max_length=32, gamma=0.0, inherit=True)
    m = finetune_student(tmp_path / "s" / "arch.json", bundle, cfg, tmp_path / "st", torch.device("cpu"))
    assert m["dev"]["accuracy"] > 0 and (tmp_path / "st" / "model.safetensors").is_file()
    # --steps: exactly that many steps, over more than one epoch of batches, evaluated evenly
    assert [h["step"] for h in m["history"]] == [round((fit_steps + 3) / 2), fit_steps + 3]
    # the supernet is one of the run's inputs: the same run from another search checkpoint is trained again
    supernet = unprefixed("model0", load_tensors(tmp_path / "s" / "checkpoint.safetensors"))
    meta = json.loads((tmp_path / "st" / "meta.json").read_text())
    assert meta["inputs"]["supernet"] == hash_tensors(supernet)
    other = tmp_path / "other.safetensors"
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in supernet.items()}, str(other))
    again = finetune_student(tmp_path / "s" / "arch.json", bundle, cfg, tmp_path / "st", torch.device("cpu"),
                             supernet=other)
    assert json.loads((tmp_path / "st" / "meta.json").read_text())["inputs"]["supernet"] != meta["inputs"]["supernet"]
    assert again["history"] != m["history"]


def test_export_torchscript_and_onnx_match_pytorch(trained, tmp_path, capsys):
    import onnxruntime as ort

    from adabert.students.load import load_student
    root, _, _ = trained
    code, out, err = run_cli(["export", "--student", root / "student", "--output-dir", tmp_path / "exp"], capsys)
    assert code == 0, err
    assert (tmp_path / "exp" / "model.onnx").is_file() and (tmp_path / "exp" / "model.torchscript.pt").is_file()
    assert (tmp_path / "exp" / "tokenizer.json").is_file()
    loaded = load_student(root / "student")
    assert loaded.kind == "adabert" and loaded.input_names == ["input_ids", "attention_mask"]
    ref_module = loaded.module
    for batch, length in ((1, 3), (7, 50)):
        inputs = loaded.random_inputs(batch, length, seed=batch)
        with torch.no_grad():
            ref = ref_module(*inputs)
            ts = torch.jit.load(str(tmp_path / "exp" / "model.torchscript.pt"))(*inputs)
        sess = ort.InferenceSession(str(tmp_path / "exp" / "model.onnx"), providers=["CPUExecutionProvider"])
        onnx_out = sess.run(None, {"input_ids": inputs[0].numpy(), "attention_mask": inputs[1].numpy()})[0]
        assert ts.shape == (batch, 2) and torch.allclose(ts, ref, atol=1e-4)
        assert torch.allclose(torch.from_numpy(onnx_out), ref, atol=1e-4)


def test_bench_reports_params_and_ratios(trained, tiny_teacher, tmp_path, capsys):
    root, _, _ = trained
    code, out, err = run_cli(["bench", "--student", root / "student", "--teacher", tiny_teacher, "--no-bert-base",
                              "--batch-sizes", "1", "--lengths", "16", "--threads-list", "1", "--repeats", "2",
                              "--output", tmp_path / "bench.json"], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "bench.json").read_text())
    student, _ = Student.from_pretrained(root / "student")
    assert result["models"]["student"]["params"] == sum(p.numel() for p in student.parameters())
    assert result["models"]["teacher"]["flops"]["16"] > result["models"]["student"]["flops"]["16"] > 0
    assert "teacher/student" in out and len(result["timings"]) == 1
    code, _, err = run_cli(["bench", "--student", root / "student", "--lengths", "a,b"], capsys)
    assert code == 2 and "--lengths: expected comma-separated integers" in err


def _finetune_toy(tiny_teacher, tiny_probes, sst2_dir, out, **kw) -> dict:
    """Finetune the toy arch on the toy task for 4 epochs with the given FinetuneConfig overrides."""
    save_arch(tiny_arch(), out / "arch.json")
    data = load_task_data(get_task("sst2"), sst2_dir)
    return finetune_student(out / "arch.json", TaskBundle(data, tiny_teacher, tiny_probes),
                            FinetuneConfig(epochs=4, batch_size=32, max_length=32, lr=1e-2, **kw), out / "st",
                            torch.device("cpu"))


@pytest.mark.parametrize("kw, every_head", [({}, True), ({"kd_target": "teacher"}, False), ({"gamma": 0.0}, False)])
def test_finetune_runs_the_other_cells_heads_only_for_probe_kd(kw, every_head, tiny_teacher, tiny_probes, sst2_dir,
                                                               tmp_path, monkeypatch):
    """Training steps run every cell's head for probe KD (the default), and only the last one's for KD from the
    teacher's logits or without KD, which read no other head."""
    training_calls = []
    forward_all = Student.forward_all

    def spy(self, *args, last_only=False, **kwargs):
        if self.training:
            training_calls.append(last_only)
        return forward_all(self, *args, last_only=last_only, **kwargs)

    monkeypatch.setattr(Student, "forward_all", spy)
    assert tiny_arch().num_cells == 2
    _finetune_toy(tiny_teacher, tiny_probes, sst2_dir, tmp_path, steps=3, **kw)
    assert len(training_calls) == 3 and all(last_only is not every_head for last_only in training_calls)


def test_bf16_autocast_on_cpu_only_when_asked():
    """`runtime.autocast(cpu, cpu=True)` runs the student's convolutions in bfloat16; without it a CPU stays
    float32; the weights stay float32 either way."""
    student = Student.from_teacher_tables(tiny_arch(), torch.randn(40, 12), torch.randn(32, 12), 2)
    ids, mask = torch.randint(0, 40, (3, 7)), torch.ones(3, 7, dtype=torch.bool)
    cpu = torch.device("cpu")
    with autocast(cpu):
        plain = student.forward_all(ids, mask, ids, mask)
    with autocast(cpu, cpu=True):
        mixed = student.forward_all(ids, mask, ids, mask)
    assert all(h.dtype == torch.float32 for h in plain) and all(h.dtype == torch.bfloat16 for h in mixed)
    assert all(p.dtype == torch.float32 for p in student.parameters())
    assert torch.allclose(mixed[-1].float(), plain[-1], atol=0.05 * plain[-1].abs().max().item() + 1e-3)


def test_finetune_in_bf16_learns_and_saves_float32(tiny_teacher, tiny_probes, sst2_dir, tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    m = _finetune_toy(tiny_teacher, tiny_probes, sst2_dir, tmp_path / "a", bf16=True)
    assert m["dev"]["accuracy"] >= 80.0
    assert json.loads((tmp_path / "a" / "st" / "meta.json").read_text())["config"]["bf16"] is True
    ref = _finetune_toy(tiny_teacher, tiny_probes, sst2_dir, tmp_path / "b")
    mixed, _ = Student.from_pretrained(tmp_path / "a" / "st")
    assert all(p.dtype == torch.float32 for p in mixed.parameters())
    assert m["history"] != ref["history"]  # the steps did run in bfloat16


def test_finetune_training_the_table_embeddings(tiny_teacher, tiny_probes, sst2_dir, tmp_path):
    m = _finetune_toy(tiny_teacher, tiny_probes, sst2_dir, tmp_path, embeddings="table")
    assert m["dev"]["accuracy"] >= 75.0
    student, _ = Student.from_pretrained(tmp_path / "st")
    from conftest import VOCAB
    assert student.embed.word.weight.shape == (len(VOCAB), 16)
    with pytest.raises(AdabertError, match="--embeddings: expected projected or table"):
        FinetuneConfig(embeddings="wide")


def test_finetune_with_hinton_kd_from_teacher_logits(tiny_teacher, tiny_probes, sst2_dir, tmp_path):
    m = _finetune_toy(tiny_teacher, tiny_probes, sst2_dir, tmp_path, kd_target="teacher")
    assert m["dev"]["accuracy"] >= 80.0
    with pytest.raises(AdabertError, match="--kd-target: expected probes or teacher"):
        FinetuneConfig(kd_target="layers")


def test_feature_kd_value_and_gradient_on_hand_computed_tensors():
    """L_F = mean_k mean_b ||P_k u_k - c[:, m(k)]||^2 / r with m(k) the probe layer map (K = 2 cells, L = 2
    layers: cells 1, 2 -> layers 1, 2; r = 2)."""
    from adabert.core.losses import feature_kd

    u = [torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True), torch.tensor([[3.0, 1.0], [1.0, 1.0]])]
    c = torch.zeros(2, 3, 2)
    c[:, 1] = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    c[:, 2] = torch.tensor([[3.0, 1.0], [0.0, 0.0]])
    c[:, 0] = 100.0  # the embedding layer is matched by no cell
    eye = [torch.nn.Identity(), torch.nn.Identity()]
    # cell 1: squared errors 0, 1 | 0, 4 -> 5 / 4; cell 2: 0, 0 | 1, 1 -> 2 / 4; mean 0.875
    value = feature_kd(u, c, eye)
    assert value.item() == pytest.approx(0.875)
    value.backward()
    # d/du_1 = 2 (u_1 - c_1) / (K B r) = (u_1 - c_1) / 4
    assert torch.allclose(u[0].grad, torch.tensor([[0.0, -0.25], [0.0, 0.5]]))
    zero = [torch.nn.Linear(2, 2) for _ in range(2)]
    for p in zero:
        torch.nn.init.zeros_(p.weight), torch.nn.init.zeros_(p.bias)
    assert feature_kd(u, c, zero).item() == pytest.approx((c[:, 1].pow(2).mean() + c[:, 2].pow(2).mean()).item() / 2)


def test_joined_rows_index_as_their_concatenation():
    g = torch.Generator().manual_seed(0)
    first, second = torch.randn(5, 3, 2, generator=g).half(), torch.randn(7, 3, 2, generator=g).half()
    joined = JoinedRows(first, second)
    assert joined.shape == (12, 3, 2)
    rows = np.array([11, 0, 5, 4, 4, 9])
    assert torch.equal(joined[rows], torch.cat([first, second])[rows])
    assert joined[rows].dtype == torch.float16


def test_finetune_with_feature_kd_learns_and_saves_no_projection(tiny_teacher, tiny_probes, sst2_dir, tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    m = _finetune_toy(tiny_teacher, tiny_probes, sst2_dir, tmp_path / "a", feature_kd=1.0)
    assert m["dev"]["accuracy"] >= 80.0
    ref = _finetune_toy(tiny_teacher, tiny_probes, sst2_dir, tmp_path / "b")
    assert m["history"] != ref["history"]  # the term took part
    student, _ = Student.from_pretrained(tmp_path / "a" / "st")
    keys = set(load_tensors(tmp_path / "a" / "st" / "model.safetensors"))
    assert keys == set(load_tensors(tmp_path / "b" / "st" / "model.safetensors"))  # the maps P_k are not saved
    with pytest.raises(AdabertError, match="--feature-kd: expected a non-negative"):
        FinetuneConfig(feature_kd=-1.0)


def test_feature_kd_refuses_probes_without_features(tiny_teacher, tiny_probes, sst2_dir, tmp_path, capsys):
    from adabert.teacher.probes import ProbeConfig, run_probes

    data = load_task_data(get_task("sst2"), sst2_dir)
    run_probes(str(tiny_teacher), data, ProbeConfig(epochs=1, batch_size=32, max_length=32, feature_dims=0),
               tmp_path / "probes", torch.device("cpu"))
    assert "features_train" not in load_tensors(tmp_path / "probes" / "logits.safetensors")
    save_arch(tiny_arch(), tmp_path / "arch.json")
    code, _, err = run_cli(["finetune", "--arch", str(tmp_path / "arch.json"), "--teacher", str(tiny_teacher),
                            "--probes", str(tmp_path / "probes"), "--task", "sst2", "--data-dir", str(sst2_dir),
                            "--output-dir", str(tmp_path / "st"), "--epochs", "1", "--feature-kd", "1"], capsys)
    assert code == 2 and "holds no teacher sentence vectors" in err and "Traceback" not in err
    assert not (tmp_path / "st").exists()


def test_single_sentence_regression_task_from_jsonl_runs_every_stage_and_learns(tiny_base, tmp_path, capsys):
    """A rating task (one text column, a 1-5 score: `write_ratings`) through the CLI stages: teacher and student
    both reach the scale (dev Pearson), and predict writes a score per sentence, the one finetune scored."""
    d = write_ratings(tmp_path / "ratings")
    task = ["--task", "custom", "--train-file", d / "train.jsonl", "--dev-file", d / "dev.jsonl", "--text-fields",
            "review", "--label-field", "stars", "--regression"]
    teacher, student = cli_stages(tiny_base, task, tmp_path, capsys, search_epochs=2, finetune_epochs=6,
                                  metric="pearson")
    assert teacher > 90 and student > 90, (teacher, student)  # seed 0: 99.6 and 99.0
    code, _, err = run_cli(["predict", "--student", tmp_path / "student", "--input", d / "dev.jsonl", "--output",
                            tmp_path / "pred.jsonl"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    predicted, gold = np.array([r["score"] for r in rows]), np.array([float(r["stars"]) for r in rows])
    assert 100 * np.corrcoef(predicted, gold)[0, 1] == pytest.approx(student, abs=1e-3)
