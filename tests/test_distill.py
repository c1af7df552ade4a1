"""`adabert distill`: every method learns on the toy task, students reload identically, bad input fails cleanly."""

import pytest
import torch
from conftest import run_cli, tiny_arch

from adabert.core.errors import AdabertError
from adabert.data.dataset import load_task_data
from adabert.data.encoding import encode_joint, encode_separate
from adabert.data.tasks import get_task
from adabert.distill.distill import DistillConfig, Distiller, run_distill
from adabert.nas.arch import save_arch
from adabert.students.baselines import BiLSTMStudent, make_batch, teacher_layer_subset
from adabert.teacher.bundle import TaskBundle
from adabert.teacher.model import load_classifier

CPU = torch.device("cpu")
SMALL = dict(epochs=5, batch_size=16, max_length=32, embed_dim=16, hidden=16, fc=16, evals_per_epoch=1)


def _distill(teacher, data, out, probes=None, augment=None, arch=None, **kw):
    cfg = DistillConfig(**{**SMALL, **kw})
    return run_distill(TaskBundle(data, teacher, probes, augment), cfg, out, CPU, arch_path=arch)


@pytest.fixture(scope="module")
def toy(sst2_dir):
    return load_task_data(get_task("sst2"), sst2_dir)


@pytest.mark.parametrize("method", ["none", "hinton", "mse", "fitnets", "nst", "relational", "born-again", "mutual"])
def test_bilstm_learns_with_every_method(method, toy, tiny_teacher, tiny_probes, tmp_path):
    extra = {"feature_weight": 0.1} if method == "fitnets" else {}
    m = _distill(tiny_teacher, toy, tmp_path / method, probes=tiny_probes, method=method, lr=3e-2, **extra)
    assert m["dev"]["accuracy"] >= 85, m["dev"]
    assert m["dev_teacher_agreement"] >= 80, m  # the toy teacher is near perfect: learning it is imitating it
    if method == "born-again":
        assert [g["generation"] for g in m["generations"]] == [1, 2]


@pytest.mark.parametrize("method", ["hinton", "probe", "attention"])
def test_layer_subset_transformer_learns(method, toy, tiny_teacher, tiny_probes, tmp_path):
    m = _distill(tiny_teacher, toy, tmp_path / method, probes=tiny_probes, student="transformer", method=method,
                 layers=1, lr=3e-3)
    assert m["dev"]["accuracy"] >= 85, m["dev"]


def test_searched_student_uses_the_same_losses(toy, tiny_teacher, tiny_probes, tmp_path):
    save_arch(tiny_arch(), tmp_path / "arch.json")
    for method in ("mse", "fitnets"):
        m = _distill(tiny_teacher, toy, tmp_path / method, probes=tiny_probes, arch=tmp_path / "arch.json",
                     student="adabert", method=method, lr=1e-2)
        assert m["dev"]["accuracy"] >= 85, (method, m["dev"])


def test_siamese_bilstm_on_pairs(mrpc_dir, tmp_path, tiny_base):
    # the pair task's own teacher is not needed for method none; the tiny base gives embeddings and tokenizer
    from adabert.teacher.model import TeacherConfig, finetune_teacher

    data = load_task_data(get_task("mrpc"), mrpc_dir)
    teacher = tmp_path / "teacher"
    finetune_teacher(str(tiny_base), data, TeacherConfig(epochs=1, min_steps=0, batch_size=16, max_length=32), teacher,
                     CPU)
    cfg = DistillConfig(**{**SMALL, "method": "hinton", "epochs": 1})
    d = Distiller(TaskBundle(data, teacher), cfg, CPU)
    model = d.new_student(0)
    assert model.pair and model.mlp[0].in_features == 4 * 2 * SMALL["hidden"]
    enc = encode_separate(d.bundle.tokenizer, data.dev, 32)
    out = model(make_batch("separate", enc, [0, 1, 2], CPU))
    assert out.logits.shape == (3, 2)
    # features [h1, h2, h1*h2, |h1-h2|]: swapping the sentences swaps h1 and h2 only
    a, ma, b, mb = make_batch("separate", enc, [0], CPU)
    model.eval()
    h1, h2 = model.encode(a, ma)[1], model.encode(b, mb)[1]
    feats = torch.cat([h1, h2, h1 * h2, (h1 - h2).abs()], -1)
    assert torch.allclose(model(make_batch("separate", enc, [0], CPU)).logits, model.mlp(feats), atol=1e-6)


def test_saved_students_reload_to_identical_logits(toy, tiny_teacher, tiny_probes, tmp_path):
    _distill(tiny_teacher, toy, tmp_path / "bilstm", probes=tiny_probes, epochs=1)
    _distill(tiny_teacher, toy, tmp_path / "tf", probes=tiny_probes, epochs=1, student="transformer", layers=1)
    d = Distiller(TaskBundle(toy, tiny_teacher, tiny_probes), DistillConfig(**{**SMALL, "epochs": 1}), CPU)
    bilstm, cfg = BiLSTMStudent.from_pretrained(tmp_path / "bilstm")
    assert cfg["method"] == "hinton" and bilstm.embed.weight.shape == (len(d.bundle.tokenizer), SMALL["embed_dim"])
    enc = encode_separate(d.bundle.tokenizer, toy.dev, 32)
    first = d.logits(bilstm, enc)
    again, _ = BiLSTMStudent.from_pretrained(tmp_path / "bilstm")
    assert torch.equal(first, d.logits(again, enc))
    tf = load_classifier(str(tmp_path / "tf")).eval()
    assert tf.config.num_hidden_layers == 1
    batch = make_batch("joint", encode_joint(d.bundle.tokenizer, toy.dev, 32), list(range(8)), CPU)
    with torch.no_grad():
        assert torch.equal(tf(**batch).logits, load_classifier(str(tmp_path / "tf")).eval()(**batch).logits)


def test_layer_subset_is_evenly_spaced_from_the_bottom():
    assert teacher_layer_subset(2, 6) == [0, 3]
    assert teacher_layer_subset(3, 6) == [0, 2, 4]
    assert teacher_layer_subset(6, 6) == list(range(6))
    with pytest.raises(AdabertError, match="--layers"):
        teacher_layer_subset(7, 6)


def test_transformer_student_starts_from_the_teacher_layers(toy, tiny_teacher):
    d = Distiller(TaskBundle(toy, tiny_teacher), DistillConfig(**{**SMALL, "student": "transformer", "layers": 2}), CPU)
    student = d.new_student(0)
    t_state, s_state = d.teacher.state_dict(), student.model.state_dict()
    assert all(torch.equal(s_state[k], t_state[k]) for k in s_state)   # 2 of 2 layers: an exact copy
    assert any(p.requires_grad for p in student.parameters())
    assert not any(p.requires_grad for p in d.teacher.parameters())


@pytest.mark.parametrize("args, message", [
    (["--student", "adabert"], "--arch: required"),
    (["--method", "attention"], "--method attention: needs attention maps"),
    (["--method", "probe"], "--probes: required"),
    (["--alpha", "1.5"], "--alpha: expected a number in [0, 1]"),
    (["--layers", "0", "--student", "transformer"], "--layers: expected a positive integer"),
])
def test_distill_bad_input(args, message, tiny_teacher, sst2_dir, tmp_path, capsys):
    code, _, err = run_cli(["distill", "--task", "sst2", "--data-dir", sst2_dir, "--teacher", tiny_teacher,
                            "--output-dir", tmp_path / "out", *args], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_cli_distill_writes_a_student_and_skips_when_up_to_date(tiny_teacher, tiny_probes, sst2_dir, tmp_path,
                                                               capsys):
    args = ["distill", "--task", "sst2", "--data-dir", sst2_dir, "--teacher", tiny_teacher, "--probes",
            tiny_probes, "--method", "mse", "--epochs", "1", "--embed-dim", "8", "--hidden", "8", "--fc", "8",
            "--output-dir", tmp_path / "s"]
    code, out, _ = run_cli(args, capsys)
    assert code == 0 and "bilstm student (mse" in out
    stamp = (tmp_path / "s" / "model.safetensors").stat().st_mtime_ns
    code, out, err = run_cli(args, capsys)
    assert code == 0 and (tmp_path / "s" / "model.safetensors").stat().st_mtime_ns == stamp
