"""Sentence-pair tasks end to end: teacher, probes, search, finetune, predict with two columns, ONNX export."""

import json

import pytest
import torch
from conftest import run_cli, write_sst2

from adabert.data.dataset import load_task_data
from adabert.data.tasks import get_task
from adabert.nas.search import SearchConfig, Searcher
from adabert.nas.search_space import load_search_space
from adabert.students.finetune import FinetuneConfig, finetune_student
from adabert.teacher.bundle import TaskBundle
from adabert.teacher.model import TeacherConfig, finetune_teacher
from adabert.teacher.probes import ProbeConfig, run_probes


@pytest.fixture(scope="module")
def pair_student(tiny_base, mrpc_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    data = load_task_data(get_task("mrpc"), mrpc_dir)
    cpu = torch.device("cpu")
    finetune_teacher(str(tiny_base), data, TeacherConfig(epochs=2, batch_size=16, lr=3e-3, max_length=32),
                     root / "teacher", cpu)
    run_probes(str(root / "teacher"), data, ProbeConfig(epochs=3, max_length=32), root / "probes", cpu)
    bundle = TaskBundle(data, root / "teacher", root / "probes")
    Searcher(bundle, load_search_space("tiny"),
             SearchConfig(epochs=1, batch_size=32, max_length=16, evals=1, min_steps=0, select_top=1),
             root / "search", cpu).run()
    finetune_student(root / "search" / "arch.json", bundle,
                     FinetuneConfig(epochs=1, batch_size=32, max_length=16), root / "student", cpu)
    return root


def test_pair_student_predicts_from_two_columns(pair_student, tmp_path, capsys):
    (tmp_path / "in.tsv").write_text("the good movie\tthe great film\nthe bad plot\tthe superb story\n")
    code, out, err = run_cli(["predict", "--student", pair_student / "student", "--input", tmp_path / "in.tsv"],
                             capsys)
    assert code == 0, err
    lines = out.strip().split("\n")
    assert len(lines) == 2 and all(line.split("\t")[0] in ("not_equivalent", "equivalent") for line in lines)
    (tmp_path / "one.tsv").write_text("only one sentence\n")
    code, _, err = run_cli(["predict", "--student", pair_student / "student", "--input", tmp_path / "one.tsv"],
                           capsys)
    assert code == 2 and "one.tsv:1: expected 2 tab-separated columns" in err


def test_pair_student_exports_four_inputs(pair_student, tmp_path, capsys):
    code, _, err = run_cli(["export", "--student", pair_student / "student", "--format", "onnx", "--output-dir",
                            tmp_path / "exp"], capsys)
    assert code == 0, err
    spec = json.loads((tmp_path / "exp" / "export.json").read_text())
    assert spec["inputs"] == ["input_ids", "attention_mask", "input_ids_b", "attention_mask_b"]
    assert spec["formats"]["onnx"]["max_abs_diff"] <= 1e-4


def test_pair_regression_student_learns(tiny_base, tmp_path):
    """STS-B layout, similarity = overlap of the two sentences on a 0-5 scale: the siamese student must compare
    the sentences and reach the scale. (Before regression heads started at the mean score, this student's dev
    Pearson was -68: the MSE against labels far from 0 drowned what it learned about the pair.)"""
    from conftest import teacher_and_probes, write_stsb

    data = load_task_data(get_task("stsb"), write_stsb(tmp_path / "STS-B"))
    teacher, probes = teacher_and_probes(tiny_base, data, tmp_path, epochs=1)
    cpu = torch.device("cpu")
    bundle = TaskBundle(data, teacher, probes)
    Searcher(bundle, load_search_space("tiny"),
             SearchConfig(epochs=1, batch_size=32, max_length=16, evals=1, min_steps=0, select_top=1),
             tmp_path / "search", cpu).run()
    m = finetune_student(tmp_path / "search" / "arch.json", bundle,
                         FinetuneConfig(epochs=5, batch_size=16, max_length=16, gamma=0.0), tmp_path / "student", cpu)
    assert m["dev"]["pearson"] > 50


def test_regression_heads_start_at_the_mean_score(tmp_path):
    from conftest import write_stsb

    from adabert.core.heads import init_regression_heads
    from adabert.nas.supernet import Readout

    data = load_task_data(get_task("stsb"), write_stsb(tmp_path / "STS-B"))
    head = Readout(8, 1, 0.0, pair=True)
    assert init_regression_heads(head, data) == 1  # the one-output layer only, not the 4H -> H match layer
    assert head.out.bias.item() == pytest.approx(float(data.train.labels[data.train_idx].mean()), abs=1e-6)
    assert 2.0 < head.out.bias.item() < 3.0 and head.match.bias.abs().max() < 1
    cls = Readout(8, 2, 0.0)
    before = cls.out.bias.clone()
    assert init_regression_heads(cls, load_task_data(get_task("sst2"), write_sst2(tmp_path / "SST-2"))) == 0
    assert torch.equal(cls.out.bias, before)
