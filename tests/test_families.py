"""Teachers of the other BERT families (RoBERTa, DistilBERT, ALBERT, ELECTRA, DeBERTa-v3), tiny and random, through
every stage: the student's position table must be the one the teacher adds, and each family's student must learn."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import cli_stages, run_cli, save_tiny_bert

FAMILIES = ["roberta", "distilbert", "albert", "electra", "deberta-v2"]


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "albert", "electra"])
def test_position_rows_are_those_the_teacher_adds(family, tmp_path):
    """The teacher's embedding output equals LayerNorm(word[ids] + pos[:T] (+ type[0])) with the tables handed
    to the student: row p of `pos` is what the teacher adds at token p (RoBERTa counts from padding_idx + 1)."""
    from adabert.teacher.model import load_classifier, teacher_tables

    model = load_classifier(str(save_tiny_bert(tmp_path / family, family=family))).eval()
    word, pos = teacher_tables(model)
    emb = getattr(model, model.base_model_prefix).embeddings
    ids = torch.tensor([[3, 7, 9, 11, 4, 8]])
    types = emb.token_type_embeddings.weight[0] if hasattr(emb, "token_type_embeddings") else 0
    with torch.no_grad():
        want = emb(input_ids=ids)
        got = emb.LayerNorm(word[ids] + pos[: ids.shape[1]] + types)
    torch.testing.assert_close(got, want)
    assert pos.shape[0] == 64  # RoBERTa: 66 rows less the two before its first position


def test_relative_position_teacher_gives_the_student_no_absolute_position(tmp_path):
    """DeBERTa-v3 adds no position table at the input: the student's table is zeros [max_position_embeddings, D]."""
    from adabert.teacher.model import load_classifier, teacher_tables

    model = load_classifier(str(save_tiny_bert(tmp_path / "deberta", family="deberta-v2")))
    word, pos = teacher_tables(model)
    assert pos.shape == (64, word.shape[1]) and not pos.any()


@pytest.mark.parametrize("family", FAMILIES)
def test_every_stage_runs_and_learns_with_a_teacher_of_each_family(family, sst2_dir, tmp_path, capsys):
    """teacher, probes, search, finetune, predict (on the labelled dev.tsv) and bench via the CLI, then a one-layer
    transformer student distilled from the teacher (ALBERT shares its layers: a one-line error instead). Toy SST-2
    (majority 50%): teachers reach 100, students 85-96 (seed 0). Six finetune epochs (84 steps): the 2-epoch search
    here writes whatever cell of the tiny space it leans to, and a cell with a convolution was still at the
    majority class after 42 steps."""
    base = save_tiny_bert(tmp_path / "base", family=family)
    task = ["--task", "sst2", "--data-dir", sst2_dir]
    teacher, student = cli_stages(base, task, tmp_path, capsys, search_epochs=2, finetune_epochs=6)
    assert teacher >= 90 and student >= 65, (teacher, student)
    code, _, err = run_cli(["predict", "--student", tmp_path / "student", "--input", sst2_dir / "dev.tsv",
                            "--output", tmp_path / "pred.jsonl"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    hits = sum(r["predicted_label"] == ["negative", "positive"][int(r["label"])] for r in rows)
    assert hits == round(student * len(rows) / 100)  # the saved student, reloaded, gives finetune's dev predictions
    code, _, err = run_cli(["bench", "--student", tmp_path / "student", "--teacher", tmp_path / "t", "--no-bert-base",
                            "--batch-sizes", 1, "--lengths", 16, "--threads-list", 1, "--repeats", 1], capsys)
    assert code == 0, err  # FLOPs and latency of each family's teacher beside the student
    code, _, err = run_cli(["distill", "--student", "transformer", "--method", "probe", "--layers", 1, "--epochs", 1,
                            "--max-length", 16, "--teacher", tmp_path / "t", "--probes", tmp_path / "p",
                            "--output-dir", tmp_path / "small", *task], capsys)
    if family == "albert":
        assert code == 2 and "shares them across depth" in err and "Traceback" not in err
    else:
        assert code == 0, err
        small = json.loads((tmp_path / "small" / "metrics.json").read_text())
        assert small["dev"]["accuracy"] >= 60, small["dev"]
