"""A corpus of hostile inputs, one per case, across every kind of file the tool reads: task data (GLUE TSV,
custom CSV and JSONL), search-space YAML, arch.json, probe and augment caches (meta.json, safetensors, JSONL),
student folders and predict inputs. Each must end in one line on stderr naming the file (and line or field),
exit code 2, no traceback, and nothing written."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import run_cli, search_and_finetune
from safetensors.torch import load_file, save_file

from adabert.data.dataset import load_task_data
from adabert.data.tasks import get_task
from adabert.nas.search_space import BUILTIN_DIR
from adabert.teacher.augment import AugmentConfig, run_augment


@dataclass
class World:
    """Valid inputs the cases copy and spoil."""

    data: Path
    teacher: Path
    probes: Path
    arch: Path
    student: Path
    augment: Path


@pytest.fixture(scope="module")
def world(tiny_teacher, tiny_probes, sst2_dir, tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("hostile")
    cpu = torch.device("cpu")
    data = load_task_data(get_task("sst2"), sst2_dir)
    search_and_finetune(tiny_teacher, tiny_probes, data, root)
    run_augment(str(tiny_teacher), data, AugmentConfig(copies=1, pos_prob=0.0, max_length=16), root / "augment", cpu)
    return World(sst2_dir, tiny_teacher, tiny_probes, root / "search" / "arch.json", root / "student",
                 root / "augment")


# ---- how each kind of file is read -------------------------------------------------------------------------
def finetune(w: World, out: Path, data: Path | None = None, arch: Path | None = None, probes: Path | None = None,
             augment: Path | None = None, task: list | None = None) -> list:
    args = ["finetune", "--arch", arch or w.arch, "--teacher", w.teacher, "--probes", probes or w.probes,
            "--epochs", 1, "--batch-size", 32, "--max-length", 16, "--output-dir", out]
    args += task or ["--task", "sst2", "--data-dir", data or w.data]
    return args + (["--augment", augment] if augment else [])


def custom(train: Path, dev: Path, fields: str = "text") -> list:
    return ["--task", "custom", "--train-file", train, "--dev-file", dev, "--text-fields", fields,
            "--label-field", "label", "--labels", "0,1"]


def spoil_line(w: World, tmp: Path, n: int, new: str, name: str = "train.tsv", count: int = 1) -> Path:
    """A copy of the toy SST-2 folder with lines n .. n + count - 1 (1-based) of `name` replaced."""
    d = tmp / "data"
    shutil.copytree(w.data, d)
    lines = (d / name).read_text(encoding="utf-8").split("\n")
    lines[n - 1:n - 1 + count] = [new] * count
    (d / name).write_text("\n".join(lines), encoding="utf-8")
    return d


def spoil_bytes(w: World, tmp: Path, data: bytes, name: str = "train.tsv") -> Path:
    d = tmp / "data"
    shutil.copytree(w.data, d)
    (d / name).write_bytes(data)
    return d


def copy(src: Path, tmp: Path) -> Path:
    dst = tmp / src.name
    shutil.copytree(src, dst)
    return dst


def edit_json(path: Path, fn) -> None:
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


def arch_with(w: World, tmp: Path, fn) -> Path:
    path = tmp / "arch.json"
    shutil.copy(w.arch, path)
    edit_json(path, fn)
    return path


def tensors_with(path: Path, fn) -> None:
    t = load_file(str(path))
    fn(t)
    save_file(t, str(path))


def probes_with(w: World, tmp: Path, fn=None, tensors=None, metrics=None) -> Path:
    p = copy(w.probes, tmp)
    if fn:
        fn(p)
    if tensors:
        tensors_with(p / "logits.safetensors", tensors)
    if metrics:
        edit_json(p / "metrics.json", metrics)
    return p


def student_with(w: World, tmp: Path, fn=None, config=None) -> Path:
    s = copy(w.student, tmp)
    if fn:
        fn(s)
    if config:
        edit_json(s / "config.json", config)
    return s


def evaluate(student: Path, w: World) -> list:
    return ["evaluate", "--student", student, "--task", "sst2", "--data-dir", w.data]


def predict(student: Path, path: Path) -> list:
    return ["predict", "--student", student, "--input", path]


def write(tmp: Path, name: str, content: str | bytes) -> Path:
    p = tmp / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return p


def search_with(w: World, out: Path, space: Path) -> list:
    return ["search", "--search-space", space, "--teacher", w.teacher, "--probes", w.probes, "--task", "sst2",
            "--data-dir", w.data, "--select-top", 1, "--output-dir", out]


def space_file(tmp: Path, edit=None, text: str | None = None) -> Path:
    base = (BUILTIN_DIR / "tiny.yaml").read_text()
    if edit:
        base = base.replace(*edit)
    return write(tmp, "space.yaml", text if text is not None else base)


DEEP = "[" * 100_000 + "]" * 100_000

# (id, builder(world, tmp, out) -> CLI args, message fragment)
CASES = [
    # -- task data: GLUE TSV --
    ("tsv-nul", lambda w, t, o: finetune(w, o, spoil_line(w, t, 3, "a good\x00 movie \t1")), "U+0000"),
    ("tsv-nul-in-dev", lambda w, t, o: finetune(w, o, spoil_line(w, t, 2, "x\x00y \t0", "dev.tsv")),
     "dev.tsv:2: field 'sentence'"),
    ("tsv-not-utf8", lambda w, t, o: finetune(w, o, spoil_bytes(w, t, b"sentence\tlabel\n\xff\xfe bad\t0\n")),
     "not UTF-8"),
    ("tsv-utf16", lambda w, t, o: finetune(w, o, spoil_bytes(w, t, "sentence\tlabel\nok\t1\n".encode("utf-16"))),
     "not UTF-8"),
    ("tsv-empty-file", lambda w, t, o: finetune(w, o, spoil_bytes(w, t, b"")), "file is empty"),
    ("tsv-header-only", lambda w, t, o: finetune(w, o, spoil_bytes(w, t, b"sentence\tlabel\n")), "no data rows"),
    # one such row in 240 is skipped with a warning (test_data.py); five are more than 1%
    ("tsv-extra-field", lambda w, t, o: finetune(w, o, spoil_line(w, t, 5, "a\tb\t1", count=5)),
     "train.tsv:5: expected 2 fields (sentence, label), found 3 (and 4 more such rows)"),
    ("tsv-bad-label", lambda w, t, o: finetune(w, o, spoil_line(w, t, 6, "fine film \t7")),
     "train.tsv:6: field 'label' = '7'"),
    ("tsv-no-label-column", lambda w, t, o: finetune(w, o, spoil_line(w, t, 1, "sentence\tscore")),
     "no column 'label'"),
    ("tsv-all-text-empty", lambda w, t, o: finetune(w, o, spoil_bytes(w, t, b"sentence\tlabel\n \t1\n\t0\n")),
     "every row has an empty text field"),
    ("tsv-binary", lambda w, t, o: finetune(w, o, spoil_bytes(w, t, bytes(range(256)) * 4)), "train.tsv"),
    ("data-dir-missing", lambda w, t, o: finetune(w, o, t / "nowhere"), "nowhere: no such folder"),
    # -- task data: custom CSV / JSONL --
    ("csv-nul", lambda w, t, o: finetune(w, o, task=custom(write(t, "tr.csv", 'text,label\n"a\x00b",1\nc,0\n'),
                                                           write(t, "dv.csv", "text,label\nx,1\ny,0\n"))),
     "U+0000"),
    ("csv-unclosed-quote", lambda w, t, o: finetune(w, o, task=custom(write(t, "tr.csv", 'text,label\n"abc,1\n'),
                                                                      write(t, "dv.csv", "text,label\nx,1\n"))),
     "tr.csv:2: expected 2 fields"),
    ("csv-missing-field", lambda w, t, o: finetune(w, o, task=custom(write(t, "tr.csv", "text,label\nonly\n"),
                                                                     write(t, "dv.csv", "text,label\nx,1\n"))),
     "tr.csv:2: expected 2 fields"),
    ("jsonl-deep", lambda w, t, o: finetune(w, o, task=custom(write(t, "tr.jsonl", '{"text": ' + DEEP + "}\n"),
                                                              write(t, "dv.jsonl", '{"text": "x", "label": "1"}\n'))),
     "tr.jsonl:1: JSON nested too deeply"),
    ("jsonl-array", lambda w, t, o: finetune(w, o, task=custom(write(t, "tr.jsonl", '["a", "1"]\n'),
                                                               write(t, "dv.jsonl", '{"text": "x", "label": "1"}\n'))),
     "tr.jsonl:1: expected a JSON object"),
    ("jsonl-escaped-nul", lambda w, t, o: finetune(w, o, task=custom(
        write(t, "tr.jsonl", '{"text": "a\\u0000b", "label": "1"}\n{"text": "c", "label": "0"}\n'),
        write(t, "dv.jsonl", '{"text": "x", "label": "1"}\n'))), "tr.jsonl:1: field 'text' holds control"),
    ("jsonl-lone-surrogate", lambda w, t, o: finetune(w, o, task=custom(
        write(t, "tr.jsonl", '{"text": "a\\ud800b", "label": "1"}\n{"text": "c", "label": "0"}\n'),
        write(t, "dv.jsonl", '{"text": "x", "label": "1"}\n'))), "U+D800"),
    ("jsonl-broken", lambda w, t, o: finetune(w, o, task=custom(write(t, "tr.jsonl", '{"text": "a", \n'),
                                                                write(t, "dv.jsonl", '{"text": "x"}\n'))),
     "tr.jsonl:1: not a JSON object"),
    # -- arch.json --
    ("arch-not-json", lambda w, t, o: finetune(w, o, arch=write(t, "arch.json", "{ nope")), "not valid JSON"),
    ("arch-deep", lambda w, t, o: finetune(w, o, arch=write(t, "arch.json", DEEP)), "nested too deeply"),
    ("arch-huge", lambda w, t, o: finetune(w, o, arch=write(t, "arch.json", b" " * (65 << 20))), "bytes; expected"),
    ("arch-list", lambda w, t, o: finetune(w, o, arch=write(t, "arch.json", "[1, 2]")), "expected a JSON object"),
    ("arch-format", lambda w, t, o: finetune(w, o, arch=arch_with(w, t, lambda d: d.update(format_version=99))),
     "format_version"),
    ("arch-hash", lambda w, t, o: finetune(w, o, arch=arch_with(
        w, t, lambda d: d["search_space"]["definition"].update(hidden_size=4096))), "search_space.hash"),
    ("arch-cells-zero", lambda w, t, o: finetune(w, o, arch=arch_with(w, t, lambda d: d.update(num_cells=0))),
     "num_cells"),
    ("arch-cells-bool", lambda w, t, o: finetune(w, o, arch=arch_with(w, t, lambda d: d.update(num_cells=True))),
     "num_cells"),
    ("arch-unknown-op", lambda w, t, o: finetune(w, o, arch=arch_with(
        w, t, lambda d: d["cell"][0][0].update(op="__import__('os')"))), "unknown op"),
    ("arch-later-node", lambda w, t, o: finetune(w, o, arch=arch_with(
        w, t, lambda d: d["cell"][0][0].update({"from": 7}))), "earlier node"),
    ("arch-op-nul", lambda w, t, o: finetune(w, o, arch=arch_with(
        w, t, lambda d: d["cell"][0][0].update(op="cnn3\u0000"))), "unknown op"),
    # -- search-space YAML --
    ("yaml-invalid", lambda w, t, o: search_with(w, o, space_file(t, text="name: [unclosed\n")), "not valid YAML"),
    ("yaml-python-tag", lambda w, t, o: search_with(w, o, space_file(
        t, text="!!python/object/apply:os.system ['echo hi']\n")), "not valid YAML"),
    ("yaml-deep", lambda w, t, o: search_with(w, o, space_file(t, text="a: " + "[" * 20_000 + "]" * 20_000)),
     "space.yaml"),
    ("yaml-alias-bomb", lambda w, t, o: search_with(w, o, space_file(
        t, text="a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\nops: [*c, *c, *c]\n")),
     "space.yaml"),
    ("yaml-negative", lambda w, t, o: search_with(w, o, space_file(t, edit=("hidden_size: ", "hidden_size: -"))),
     "'hidden_size' must be a positive integer"),
    ("yaml-is-dir", lambda w, t, o: search_with(w, o, t), "search space file not found"),
    ("yaml-huge", lambda w, t, o: search_with(w, o, space_file(t, text="#" * (2 << 20))), "expected at most"),
    # -- probe cache --
    ("probes-meta-missing", lambda w, t, o: finetune(w, o, probes=probes_with(
        w, t, fn=lambda p: (p / "meta.json").unlink())), "probes meta file not found"),
    ("probes-meta-list", lambda w, t, o: finetune(w, o, probes=probes_with(
        w, t, fn=lambda p: (p / "meta.json").write_text("[]"))), "must be a JSON object"),
    ("probes-meta-inputs", lambda w, t, o: finetune(w, o, probes=probes_with(
        w, t, fn=lambda p: edit_json(p / "meta.json", lambda d: d.update(inputs="x")))), "field 'inputs'"),
    ("probes-truncated", lambda w, t, o: finetune(w, o, probes=probes_with(
        w, t, fn=lambda p: (p / "logits.safetensors").write_bytes((p / "logits.safetensors").read_bytes()[:100]))),
     "not a readable safetensors file"),
    ("probes-garbage", lambda w, t, o: finetune(w, o, probes=probes_with(
        w, t, fn=lambda p: (p / "logits.safetensors").write_bytes(b"\x00" * 64))), "safetensors"),
    ("probes-missing-key", lambda w, t, o: finetune(w, o, probes=probes_with(
        w, t, tensors=lambda d: d.pop("teacher_train"))), "'teacher_train' must be a float tensor"),
    ("probes-rows", lambda w, t, o: finetune(w, o, probes=probes_with(
        w, t, tensors=lambda d: d.update(train=d["train"][:5].contiguous()))), "'train' must be a float tensor"),
    ("probes-nan", lambda w, t, o: finetune(w, o, probes=probes_with(
        w, t, tensors=lambda d: d["dev"].view(-1)[0].fill_(float("nan")))), "NaN or infinite"),
    ("probes-int", lambda w, t, o: finetune(w, o, probes=probes_with(
        w, t, tensors=lambda d: d.update(dev=d["dev"].long()))), "'dev' must be a float tensor"),
    ("probes-metrics-layers", lambda w, t, o: finetune(w, o, probes=probes_with(
        w, t, metrics=lambda d: d.update(layers="x"))), "field 'layers'"),
    ("probes-link-outside", lambda w, t, o: finetune(w, o, probes=probes_with(
        w, t, fn=lambda p: ((p / "metrics.json").unlink(), (p / "metrics.json").symlink_to("/etc/hostname")))),
     "outside"),
    # -- augment cache --
    ("augment-bad-line", lambda w, t, o: finetune(w, o, augment=_augment(w, t, lines="{not json\n")),
     "augmented.jsonl:1"),
    ("augment-wrong-row", lambda w, t, o: finetune(w, o, augment=_augment(w, t, lines='{"texts": [1], "source": 0}\n')),
     "augmented.jsonl:1: expected"),
    ("augment-source-range", lambda w, t, o: finetune(w, o, augment=_augment(
        w, t, lines='{"texts": ["ok"], "source": 99999999}\n')), "augmented.jsonl:1: expected"),
    ("augment-control", lambda w, t, o: finetune(w, o, augment=_augment(
        w, t, lines='{"texts": ["a\\u001bb"], "source": 0}\n')), "U+001B"),
    ("augment-rows", lambda w, t, o: finetune(w, o, augment=_augment(
        w, t, tensors=lambda d: d.update(teacher=d["teacher"][:1].contiguous()))), "'teacher' must be"),
    ("augment-nan", lambda w, t, o: finetune(w, o, augment=_augment(
        w, t, tensors=lambda d: d["teacher"].view(-1)[0].fill_(float("inf")))), "NaN or infinite"),
    # -- student folders --
    ("student-no-config", lambda w, t, o: evaluate(student_with(w, t, fn=lambda s: (s / "config.json").unlink()), w),
     "student config not found"),
    ("student-config-list", lambda w, t, o: evaluate(student_with(
        w, t, fn=lambda s: (s / "config.json").write_text("[]")), w), "must be a JSON object"),
    ("student-model-type", lambda w, t, o: evaluate(student_with(
        w, t, config=lambda d: d.update(model_type="bert")), w), "not a student saved by adabert"),
    ("student-vocab-string", lambda w, t, o: evaluate(student_with(
        w, t, config=lambda d: d.update(vocab_size="many")), w), "'vocab_size' must be a positive integer"),
    ("student-vocab-huge", lambda w, t, o: evaluate(student_with(
        w, t, config=lambda d: d.update(vocab_size=10**12)), w), "'vocab_size' must be a positive integer"),
    ("student-task-tampered", lambda w, t, o: evaluate(student_with(
        w, t, config=lambda d: d["task"].update(labels=5)), w), "field 'labels'"),
    ("student-pair-mismatch", lambda w, t, o: evaluate(student_with(
        w, t, config=lambda d: d.update(pair=True)), w), "does not match"),
    ("student-weights-truncated", lambda w, t, o: evaluate(student_with(
        w, t, fn=lambda s: (s / "model.safetensors").write_bytes((s / "model.safetensors").read_bytes()[:200])), w),
     "not a readable safetensors file"),
    ("student-weights-extra", lambda w, t, o: evaluate(student_with(
        w, t, fn=lambda s: tensors_with(s / "model.safetensors", lambda d: d.update(evil=torch.zeros(1)))), w),
     "weights do not match the model described by config.json (unexpected evil)"),
    ("student-weights-nan", lambda w, t, o: evaluate(student_with(
        w, t, fn=lambda s: tensors_with(s / "model.safetensors", _poison)), w), "NaN or infinite"),
    ("student-weights-link", lambda w, t, o: evaluate(student_with(
        w, t, fn=lambda s: ((s / "model.safetensors").unlink(), (s / "model.safetensors").symlink_to("/etc/hostname"))),
        w), "outside"),
    ("student-tokenizer-garbage", lambda w, t, o: evaluate(student_with(
        w, t, fn=lambda s: (s / "tokenizer.json").write_text("{garbage")), w), "tokenizer"),
    ("student-max-length", lambda w, t, o: evaluate(student_with(
        w, t, config=lambda d: d.update(max_length="long")), w), "'max_length'"),
    # -- predict inputs --
    ("predict-nul", lambda w, t, o: predict(w.student, write(t, "in.txt", "fine\nbad\x00film\n")),
     "in.txt:2: field 'column 1' holds control character U+0000"),
    ("predict-not-utf8", lambda w, t, o: predict(w.student, write(t, "in.txt", b"ok\n\xff\xfe\n")), "not UTF-8"),
    ("predict-empty", lambda w, t, o: predict(w.student, write(t, "in.txt", "\n\n")), "no input lines"),
]


def _poison(tensors: dict) -> None:
    next(v for v in tensors.values() if v.is_floating_point()).view(-1)[0] = float("nan")


def _augment(w: World, tmp: Path, lines: str | None = None, tensors=None) -> Path:
    a = copy(w.augment, tmp)
    if lines is not None:
        (a / "augmented.jsonl").write_text(lines)
        if tensors is None:  # keep the logits' row count in step with the spoiled text
            tensors_with(a / "logits.safetensors",
                         lambda d: d.update({k: v[: len(lines.splitlines())].contiguous() for k, v in d.items()}))
    if tensors is not None:
        tensors_with(a / "logits.safetensors", tensors)
    return a


def test_the_corpus_is_large_and_covers_every_kind():
    kinds = {case[0].split("-")[0] for case in CASES}
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)
    assert kinds == {"tsv", "data", "csv", "jsonl", "arch", "yaml", "probes", "augment", "student", "predict"}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_gives_one_line_and_exit_2(case, world, tmp_path, capsys):
    _, build, message = case
    out = tmp_path / "out"
    args = build(world, tmp_path, out)
    code, stdout, err = run_cli(args, capsys)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, (code, err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("adabert: error: "), err[-2000:]
    assert message in lines[0], lines[0]
    assert "Traceback" not in err
    assert not out.exists()


def test_empty_text_rows_are_skipped_and_counted(world, tmp_path, adabert_log):
    d = spoil_line(world, tmp_path, 3, " \t1")
    data = load_task_data(get_task("sst2"), d)
    assert "train.tsv: skipped 1 row(s) with an empty text field (line 3)" in adabert_log.text
    full = load_task_data(get_task("sst2"), world.data)
    assert len(data.train) == len(full.train) - 1
    assert all(t[0] for t in data.train.texts)
