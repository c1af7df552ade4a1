"""Every student kind the tool saves (searched, BiLSTM, layer-subset transformer) goes through the same
evaluate, predict, export (parity-checked) and bench commands."""

import json
import shutil

import pytest
import torch
from torch._inductor import aoti_load_package
from conftest import run_cli, search_and_finetune

from adabert.data.dataset import load_task_data
from adabert.data.tasks import get_task
from adabert.distill.distill import DistillConfig, run_distill
from adabert.students.load import load_student
from adabert.teacher.bundle import TaskBundle

CPU = torch.device("cpu")
SMALL = dict(epochs=1, batch_size=16, max_length=32, embed_dim=16, hidden=16, fc=16, evals_per_epoch=1)


@pytest.fixture(scope="module")
def students(tiny_teacher, tiny_probes, sst2_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    data = load_task_data(get_task("sst2"), sst2_dir)
    search_and_finetune(tiny_teacher, tiny_probes, data, root, "adabert")
    run_distill(TaskBundle(data, tiny_teacher), DistillConfig(**SMALL, method="mse"), root / "bilstm", CPU)
    run_distill(TaskBundle(data, tiny_teacher), DistillConfig(**{**SMALL, "lr": 1e-3}, student="transformer", layers=1),
                root / "transformer", CPU)
    return root


KINDS = ["adabert", "bilstm", "transformer"]


@pytest.mark.parametrize("kind", KINDS)
def test_one_loader_for_every_kind(kind, students):
    s = load_student(students / kind)
    assert s.kind == kind and s.task.name == "sst2"
    inputs = s.random_inputs(3, 12)
    assert len(inputs) == len(s.input_names)
    with torch.no_grad():
        a, b = s.module(*inputs), load_student(students / kind).module(*inputs)
    assert a.shape == (3, 2) and torch.equal(a, b)  # a reload gives identical outputs


@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_and_predict_every_kind(kind, students, sst2_dir, tmp_path, capsys):
    code, out, err = run_cli(["evaluate", "--student", students / kind, "--task", "sst2", "--data-dir", sst2_dir],
                             capsys)
    assert code == 0, err
    assert out.startswith("dev (80 examples): accuracy") and "majority-class baseline" in out
    (tmp_path / "in.txt").write_text("a good movie\nthe plot was dull\n")
    code, out, err = run_cli(["predict", "--student", students / kind, "--input", tmp_path / "in.txt"], capsys)
    assert code == 0, err
    rows = [line.split("\t") for line in out.strip().split("\n")]
    assert len(rows) == 2 and all(r[0] in ("negative", "positive") for r in rows)
    assert all(abs(sum(json.loads(r[1]).values()) - 1) < 1e-4 for r in rows)


def test_student_tokenizers_load_without_transformers_warnings(students):
    """A searched or BiLSTM student's config.json is ours: transformers must not read it as its own config (it warns
    that the model type is unknown, on every predict)."""
    import logging

    from adabert.students.load import load_student_tokenizer

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        for kind in KINDS:
            assert load_student_tokenizer(students / kind)("a good movie")["input_ids"]
    finally:
        logger.removeHandler(handler)
    assert not records, [r.getMessage() for r in records]


@pytest.mark.parametrize("kind", KINDS)
def test_export_every_kind_with_parity(kind, students, tmp_path, capsys):
    code, _, err = run_cli(["export", "--student", students / kind, "--output-dir", tmp_path / "exp"], capsys)
    assert code == 0, err
    spec = json.loads((tmp_path / "exp" / "export.json").read_text())
    assert spec["kind"] == kind and spec["inputs"] == load_student(students / kind).input_names
    assert all(f["max_abs_diff"] <= 1e-4 for f in spec["formats"].values())
    assert set(spec["formats"]) == {"torchscript", "onnx"}


@pytest.mark.parametrize("kind", ["adabert", "transformer"])
def test_pt2_export_reloads_with_any_batch_and_length(kind, students, tmp_path, capsys):
    code, _, err = run_cli(["export", "--student", students / kind, "--output-dir", tmp_path, "--format", "pt2"],
                           capsys)
    assert code == 0, err
    assert set(json.loads((tmp_path / "export.json").read_text())["formats"]) == {"pt2"}
    student = load_student(students / kind)
    program = torch.export.load(str(tmp_path / "model.pt2")).module()
    for batch, length in ((1, 2), (3, 21)):  # shapes the export and its check did not use
        inputs = student.random_inputs(batch, length, seed=7)
        with torch.no_grad():
            assert torch.allclose(program(*inputs), student.module(*inputs), atol=1e-5)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("clang++") is None, reason="no C++ compiler")
def test_aoti_export_compiles_a_package_that_reloads_with_any_batch_and_length_and_bench_times_it(students, tmp_path,
                                                                                                  capsys):
    code, _, err = run_cli(["export", "--student", students / "adabert", "--output-dir", tmp_path, "--format", "aoti"],
                           capsys)
    assert code == 0, err
    package = tmp_path / "model.aoti.pt2"
    student = load_student(students / "adabert")
    runner = aoti_load_package(str(package))
    for batch, length in ((1, 2), (3, 21)):
        inputs = student.random_inputs(batch, length, seed=7)
        with torch.no_grad():
            assert torch.allclose(runner(*inputs), student.module(*inputs), atol=1e-5)
    bench = ["bench", "--no-bert-base", "--batch-sizes", "1,4", "--lengths", "16", "--threads-list", "1", "--repeats",
             "2", "--aoti"]
    code, out, err = run_cli([*bench, package, "--student", students / "adabert", "--output", tmp_path / "b.json"],
                             capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["models"]["student-aoti"] == {**result["models"]["student"], "compiled_from": "student"}
    assert [r["batch"] for r in result["timings"]] == [1, 4]
    assert all(r["latency_ms"]["student-aoti"] > 0 for r in result["timings"]) and "student-aoti/student" in out
    # a package of another student, or a file that is no package, is refused in one line
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    for other, package, why in (("transformer", package, "was it exported from this student?"),
                                ("adabert", tmp_path / "junk.pt2", "not an AOTInductor package"),
                                ("adabert", tmp_path / "none.pt2", "no such file")):
        code, _, err = run_cli([*bench, package, "--student", students / other], capsys)
        assert code == 2 and f"--aoti: {package}" in err and why in err and len(err.strip().splitlines()) == 1


def test_aoti_export_without_a_compiler_is_refused_before_writing(students, tmp_path, capsys, monkeypatch):
    from torch._inductor import config

    monkeypatch.setattr(config.cpp, "cxx", (None, str(tmp_path / "no-such-g++")))  # what $CXX sets at import
    code, _, err = run_cli(["export", "--student", students / "adabert", "--output-dir", tmp_path / "exp", "--format",
                            "aoti"], capsys)
    assert code == 2 and "C++ compiler" in err and not (tmp_path / "exp").exists()


@pytest.mark.parametrize("fmt", ["pt2", "aoti"])
def test_torch_export_of_the_bilstm_is_refused_before_writing(fmt, students, tmp_path, capsys):
    code, _, err = run_cli(["export", "--student", students / "bilstm", "--output-dir", tmp_path / "exp", "--format",
                            fmt], capsys)
    assert code == 2 and fmt in err and "BiLSTM" in err and not (tmp_path / "exp").exists()


def test_a_student_with_the_attention_op_exports_with_any_length(tmp_path):
    from adabert.deploy.export import exported_program, export_onnx, export_pt2, export_torchscript, run_onnx, run_pt2
    from adabert.nas.arch import Arch
    from adabert.nas.search_space import SearchSpace, load_search_space
    from adabert.students.load import SeparateInputs
    from adabert.students.student import Student

    tiny = load_search_space("tiny").definition()
    space = SearchSpace.from_dict({**tiny, "name": "tiny-attn", "ops": ["cnn3", "attn", "identity", "zero"]}, "test")
    arch = Arch(space, 2, [[(0, "attn"), (1, "cnn3")], [(1, "attn"), (2, "identity")]])
    torch.manual_seed(0)
    model = SeparateInputs(Student.from_teacher_tables(arch, torch.randn(50, 8), torch.randn(40, 8), 2), False)
    ids, mask = torch.randint(0, 50, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    export_onnx(model, (ids, mask), ["input_ids", "attention_mask"], tmp_path / "m.onnx")
    export_torchscript(model, (ids, mask), tmp_path / "m.pt")
    export_pt2(exported_program(model, (ids, mask), ["input_ids", "attention_mask"]), tmp_path / "m.pt2")
    ids, mask = torch.randint(0, 50, (3, 11)), (torch.arange(11)[None] < torch.tensor([[11], [7], [3]])).long()
    with torch.no_grad():
        want = model(ids, mask)
        assert torch.allclose(torch.jit.load(str(tmp_path / "m.pt"))(ids, mask), want, atol=1e-5)
    assert torch.allclose(run_onnx(tmp_path / "m.onnx", (ids, mask)), want, atol=1e-4)
    assert torch.allclose(run_pt2(tmp_path / "m.pt2", (ids, mask)), want, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_int8_export_every_kind_within_the_stated_tolerance(kind, students, tmp_path, capsys):
    from adabert.deploy.export import INT8_TOL, run_onnx

    out = tmp_path / "exp"
    code, _, err = run_cli(["export", "--student", students / kind, "--output-dir", out, "--int8", "--format",
                            "torchscript", "--format", "onnx"], capsys)
    assert code == 0, err
    spec = json.loads((out / "export.json").read_text())["formats"]
    assert set(spec) == {"torchscript", "onnx", "torchscript-int8", "onnx-int8"}
    student = load_student(students / kind)
    inputs = student.random_inputs(3, 21, seed=7)  # a shape the export check did not use
    with torch.no_grad():
        reference = student.module(*inputs)
        scripted = torch.jit.load(str(out / "model.int8.torchscript.pt"))(*inputs)
    bound = INT8_TOL * (1 + float(reference.abs().max()))
    for got in (scripted, run_onnx(out / "model.int8.onnx", inputs)):
        assert got.shape == reference.shape and float((got - reference).abs().max()) <= bound
    assert (out / "model.int8.onnx").stat().st_size < (out / "model.onnx").stat().st_size


def test_int8_export_without_an_int8_format_is_refused_before_writing(students, tmp_path, capsys):
    out = tmp_path / "exp"
    code, _, err = run_cli(["export", "--student", students / "adabert", "--output-dir", out, "--int8", "--format",
                            "pt2"], capsys)
    assert code == 2 and "--int8" in err and "torchscript" in err and not out.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_bench_every_kind_with_int8(kind, students, tiny_teacher, tmp_path, capsys):
    code, out, err = run_cli(["bench", "--student", students / kind, "--teacher", tiny_teacher, "--no-bert-base",
                              "--batch-sizes", "1", "--lengths", "16", "--threads-list", "1", "--repeats", "2",
                              "--int8", "--output", tmp_path / "bench.json"], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["student_kind"] == kind and result["timings"][0]["latency_ms"]["student-int8"] > 0
    models = result["models"]
    if kind != "adabert":  # the searched student's cells are convolutions, which dynamic quantisation leaves float
        assert models["student-int8"]["weight_mb"] < 0.8 * models["student"]["weight_mb"]
    code, _, err = run_cli(["bench", "--student", students / kind, "--teacher", tiny_teacher, "--lengths", "16,65"],
                           capsys)  # the tiny models have 64 positions; the BiLSTM has none, its teacher 64
    want = "the teacher reads at most 64 positions" if kind == "bilstm" else "the student reads at most 64 positions"
    assert code == 2 and f"--lengths: 65 tokens, but {want}" in err


@pytest.mark.parametrize("kind", KINDS)
def test_int8_evaluation_stays_close_to_float(kind, students, sst2_dir, capsys):
    from adabert.deploy.predict import Predictor

    data = load_task_data(get_task("sst2"), sst2_dir)
    fp32 = Predictor(students / kind).logits(data.dev.texts)
    int8 = Predictor(students / kind, int8=True).logits(data.dev.texts)
    assert abs(int8 - fp32).max() < 0.1 * (abs(fp32).max() + 1e-3)  # quantisation noise, not another model
    code, out, err = run_cli(["evaluate", "--student", students / kind, "--task", "sst2", "--data-dir", sst2_dir,
                              "--int8"], capsys)
    assert code == 0 and out.startswith("dev (80 examples, int8): accuracy"), err


def test_bilstm_unpacked_path_equals_the_packed_one(students):
    from adabert.students.baselines import BiLSTMStudent

    model, _ = BiLSTMStudent.from_pretrained(students / "bilstm")
    s = load_student(students / "bilstm")
    ids, mask = s.random_inputs(6, 20, seed=3)
    with torch.no_grad():
        packed = model((ids, mask > 0, ids, mask > 0)).logits
        assert torch.allclose(model.logits(ids, mask > 0, ids, mask > 0), packed, atol=1e-5)


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_predict_reads_csv_and_jsonl_and_writes_rows_back(suffix, students, tmp_path, capsys):
    rows = [{"id": "a", "review": "a good movie"}, {"id": "b", "review": "dull, and boring"}]
    src = tmp_path / f"in.{suffix}"
    if suffix == "csv":
        src.write_text('id,review\na,a good movie\nb,"dull, and boring"\n')
    else:
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for out_suffix in ("jsonl", "csv"):
        out = tmp_path / f"out.{out_suffix}"
        code, stdout, err = run_cli(["predict", "--student", students / "bilstm", "--input", src, "--text-fields",
                                     "review", "--output", out], capsys)
        assert code == 0, err
        if out_suffix == "jsonl":
            got = [json.loads(line) for line in out.read_text().splitlines()]
        else:
            import csv
            got = list(csv.DictReader(out.open()))
        assert [g["id"] for g in got] == ["a", "b"] and [g["review"] for g in got] == [r["review"] for r in rows]
        assert all(g["label"] in ("negative", "positive") for g in got)
        assert all(abs(float(g["p_negative"]) + float(g["p_positive"]) - 1) < 1e-4 for g in got)
    code, _, err = run_cli(["predict", "--student", students / "bilstm", "--input", src, "--text-fields", "text"],
                           capsys)
    assert code == 2 and "no column 'text' (--text-fields)" in err


def test_predict_reads_a_labelled_tsv_by_its_header_and_plain_lines_without_one(students, sst2_dir, tmp_path,
                                                                                  capsys):
    """GLUE's dev.tsv (header `sentence<TAB>label`) is a table: every row comes back with its label kept. A .tsv of
    two-column lines without such a header is plain lines, which a one-sentence task refuses, naming the line."""
    code, _, err = run_cli(["predict", "--student", students / "adabert", "--input", sst2_dir / "dev.tsv",
                            "--output", tmp_path / "pred.tsv"], capsys)
    assert code == 0, err
    header, *rows = [line.split("\t") for line in (tmp_path / "pred.tsv").read_text().splitlines()]
    assert header == ["sentence", "label", "predicted_label", "predicted_p_negative", "predicted_p_positive"]
    assert [r[:2] for r in rows] == [line.split("\t") for line in (sst2_dir / "dev.tsv").read_text().splitlines()[1:]]
    (tmp_path / "tab.jsonl").write_text(json.dumps({"sentence": "a good\tmovie"}) + "\n")
    code, _, err = run_cli(["predict", "--student", students / "adabert", "--input", tmp_path / "tab.jsonl",
                            "--output", tmp_path / "pred.tsv"], capsys)
    assert code == 2 and "row 1, column 'sentence' holds a tab or a line break" in err
    assert (tmp_path / "pred.tsv").read_text().startswith("sentence\tlabel\tpredicted_label")  # left as it was
    (tmp_path / "plain.tsv").write_text("a good movie\t1\n")
    code, _, err = run_cli(["predict", "--student", students / "adabert", "--input", tmp_path / "plain.tsv"], capsys)
    assert code == 2 and "plain.tsv:1: expected 1 tab-separated column (sentence), found 2" in err


def test_predict_into_a_closed_pipe_exits_quietly(students, tmp_path):
    """`adabert predict ... | head -1`: once the reader is gone, exit 141 (SIGPIPE's code) with no traceback."""
    import subprocess
    import sys

    from conftest import subprocess_env

    (tmp_path / "in.txt").write_text("a good movie\n" * 3000)  # ~200 KB of output: more than a pipe holds
    proc = subprocess.Popen([sys.executable, "-m", "adabert", "predict", "--student", students / "bilstm", "--input",
                             tmp_path / "in.txt", "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=subprocess_env())
    assert proc.stdout.readline().split(b"\t")[0] in (b"negative", b"positive")
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err, err


@pytest.mark.parametrize("kind", ["adabert", "bilstm"])
def test_pruned_vocabulary_keeps_known_words_and_outputs(kind, students, sst2_dir, tmp_path, capsys):
    from adabert.deploy.predict import Predictor
    from adabert.nas.embedding import SharedRowEmbedding

    code, out, err = run_cli(["prune-vocab", "--student", students / kind, "--task", "sst2", "--data-dir", sst2_dir,
                              "--output-dir", tmp_path / "pruned"], capsys)
    assert code == 0, err
    old, new = load_student(students / kind), load_student(tmp_path / "pruned")
    table = next(m for m in new.module.modules() if isinstance(m, SharedRowEmbedding))
    old_rows = sum(p.numel() for p in old.module.parameters())
    assert table.num_embeddings < len(table.rows) == old.vocab_size == new.vocab_size
    assert sum(p.numel() for p in new.module.parameters()) < old_rows and "parameters" in out
    data = load_task_data(get_task("sst2"), sst2_dir)
    before = Predictor(students / kind).logits(data.train.texts)  # every word the pruning saw: identical outputs
    after = Predictor(tmp_path / "pruned").logits(data.train.texts)
    assert torch.allclose(torch.from_numpy(before), torch.from_numpy(after), atol=1e-5)
    from transformers import AutoTokenizer

    from adabert.deploy.prune import used_pieces

    keep = used_pieces(AutoTokenizer.from_pretrained(str(students / kind)), data.train.texts)
    assert table.num_embeddings == len(keep)
    old_table = next(m for m in old.module.modules() if isinstance(m, torch.nn.Embedding)
                     and m.num_embeddings == old.vocab_size).weight
    unseen = next(i for i in range(old.vocab_size) if i not in set(keep))
    with torch.no_grad():  # a piece the task never used shares its nearest kept row
        shared = keep[int(table.rows[unseen])]
        assert shared != unseen and torch.equal(table(torch.tensor([unseen]))[0], old_table[shared])
        cos = torch.nn.functional.cosine_similarity(old_table[unseen][None], old_table[keep], dim=-1)
        assert keep[int(cos.argmax())] == shared
    code, _, err = run_cli(["prune-vocab", "--student", tmp_path / "pruned", "--task", "sst2", "--data-dir",
                            sst2_dir, "--output-dir", tmp_path / "again"], capsys)
    assert code == 2 and "already pruned" in err


def test_prune_refuses_the_transformer_student(students, sst2_dir, tmp_path, capsys):
    code, _, err = run_cli(["prune-vocab", "--student", students / "transformer", "--task", "sst2", "--data-dir",
                            sst2_dir, "--output-dir", tmp_path / "p"], capsys)
    assert code == 2 and "supports the searched and BiLSTM students" in err and not (tmp_path / "p").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_every_student_folder_has_a_model_card_that_loads_in_two_lines(kind, students, tmp_path):
    card = (students / kind / "README.md").read_text()
    assert card.startswith("# sst2 student") and "| accuracy |" in card and "Parameters:" in card
    code = card.split("```python\n")[1].split("```")[0]
    assert len(code.strip().splitlines()) == 2
    import os

    cwd = os.getcwd()
    try:
        os.chdir(students)  # the card names the folder relative to where it lies
        namespace: dict = {}
        exec(code, namespace)
        assert namespace["labels"][0] in ("negative", "positive")
    finally:
        os.chdir(cwd)
