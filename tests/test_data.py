import random

import numpy as np
import pytest
from conftest import run_cli, save_tiny_bert, treebank_rows

from adabert.core.errors import AdabertError
from adabert.data.dataset import (disjoint_holdout_split, holdout_split, infer_labels, load_task_data, read_rows,
                                  read_split)
from adabert.data.encoding import batch_indices, encode_joint, encode_separate, epoch_batches
from adabert.data.tasks import custom_task, get_task
from adabert.deploy.predict import read_inputs


def test_mrpc_bom_header_pairs(mrpc_dir):
    ds = read_split(get_task("MRPC"), mrpc_dir / "train.tsv", "train")
    assert len(ds) == 120
    assert all(len(t) == 2 for t in ds.texts)
    assert ds.labels.dtype == np.int64 and set(ds.labels.tolist()) <= {0, 1}


def test_sst2_stray_quotes_and_trailing_space(tmp_path):
    (tmp_path / "train.tsv").write_text('sentence\tlabel\n" a film " that works \t1\nbad " \t0\n', encoding="utf-8")
    ds = read_split(get_task("sst2"), tmp_path / "train.tsv", "train")
    assert ds.texts == [('" a film " that works',), ('bad "',)]
    assert ds.labels.tolist() == [1, 0]


def test_cola_without_header(tmp_path):
    (tmp_path / "train.tsv").write_text("gj04\t1\t\tOur friends won't buy this.\nbc01\t0\t*\tThey drank the pub.\n")
    ds = read_split(get_task("CoLA"), tmp_path / "train.tsv", "train")
    assert ds.texts == [("Our friends won't buy this.",), ("They drank the pub.",)]
    assert ds.labels.tolist() == [1, 0]


def test_stsb_regression(tmp_path):
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    rows = ["0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\t"
            "An air plane is taking off.\t5.000",
            "1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man plays.\tA woman cooks.\t0.500"]
    (tmp_path / "train.tsv").write_text("\n".join([header, *rows]) + "\n")
    task = get_task("STS-B")
    ds = read_split(task, tmp_path / "train.tsv", "train")
    assert task.is_regression and task.num_labels == 1
    assert ds.labels.dtype == np.float32 and ds.labels.tolist() == [5.0, 0.5]


def test_stray_control_characters_become_spaces_with_one_warning(tmp_path, adabert_log):
    # GLUE's own STS-B train.tsv (line 2920) holds "Treasury\x12s": one such row must not stop a run
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    rows = ["0\tmain-news\tMSRpar\t2012test\t0698\tnone\tnone\tTreasury\x12s plan.\tThe plan.\t3.0",
            "1\tmain-news\tMSRpar\t2012test\t0699\tnone\tnone\tNo trouble here.\tNone.\t1.0",
            "2\tmain-news\tMSRpar\t2012test\t0700\tnone\tnone\t\x1b[1mbold\tdel\x7f \t2.0"]
    (tmp_path / "train.tsv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    ds = read_split(get_task("stsb"), tmp_path / "train.tsv", "train")
    assert ds.texts == [("Treasury s plan.", "The plan."), ("No trouble here.", "None."), ("[1mbold", "del")]
    assert ds.labels.tolist() == [3.0, 1.0, 2.0]
    [warning] = {r.getMessage() for r in adabert_log.records if "control characters" in r.getMessage()}
    assert "train.tsv: control characters replaced by spaces in 2 row(s), the first at " in warning
    assert warning.endswith("train.tsv:2, field 'sentence1' (U+0012)")
    # the same rule for predict's inputs; NUL (a UTF-16 file read as UTF-8) stays an error naming line and field
    assert read_inputs(["good\x07 film\tok\n"], 2, "in.txt") == [("good  film", "ok")]
    with pytest.raises(AdabertError, match=r"in.txt:2: field 'column 1' holds control character U\+0000"):
        read_inputs(["fine\n", "b\x00a\n"], 1, "in.txt")


def test_mnli_dev_has_more_columns(tmp_path):
    cols = ["index", "promptID", "pairID", "genre", "s1b", "s2b", "s1p", "s2p", "sentence1", "sentence2", "label1",
            "label2", "label3", "label4", "label5", "gold_label"]
    row = ["0", "1", "1e", "fiction", "x", "x", "x", "x", "He ran.", "He moved.", "entailment", "entailment",
           "entailment", "entailment", "entailment", "entailment"]
    (tmp_path / "dev_matched.tsv").write_text("\t".join(cols) + "\n" + "\t".join(row) + "\n")
    ds = read_split(get_task("mnli"), tmp_path / "dev_matched.tsv", "dev")
    assert ds.texts == [("He ran.", "He moved.")] and ds.labels.tolist() == [1]


def test_custom_csv_quoted_and_jsonl(tmp_path):
    (tmp_path / "train.csv").write_text('text,label\n"hello, world",pos\n"say ""hi""",neg\n')
    (tmp_path / "dev.jsonl").write_text('{"text": "x", "label": "pos"}\n\n{"text": "y", "label": "neg"}\n')
    labels = infer_labels(read_rows(tmp_path / "train.csv", "csv"), tmp_path / "train.csv", "label")
    assert labels == ["neg", "pos"]
    task = custom_task(["text"], "label", labels, None, str(tmp_path / "train.csv"), str(tmp_path / "dev.csv"))
    ds = read_split(task, tmp_path / "train.csv", "train")
    assert ds.texts == [("hello, world",), ('say "hi"',)] and ds.labels.tolist() == [1, 0]
    jtask = custom_task(["text"], "label", labels, None, str(tmp_path / "dev.jsonl"), str(tmp_path / "dev.jsonl"))
    assert read_split(jtask, tmp_path / "dev.jsonl", "dev").labels.tolist() == [1, 0]


def test_holdout_split_is_deterministic_and_disjoint():
    a_train, a_hold = holdout_split(1000, 0.1, 2000, seed=3)
    b_train, b_hold = holdout_split(1000, 0.1, 2000, seed=3)
    assert np.array_equal(a_hold, b_hold) and len(a_hold) == 100
    assert not set(a_train) & set(a_hold) and len(a_train) + len(a_hold) == 1000
    assert len(holdout_split(100000, 0.1, 2000, 0)[1]) == 2000
    assert not np.array_equal(holdout_split(1000, 0.1, 2000, seed=4)[1], a_hold)


def test_disjoint_holdout_holds_whole_texts_and_drops_what_they_contain():
    texts = [(t,) for t, _ in treebank_rows(random.Random(0), 60)]
    fit, held = disjoint_holdout_split(texts, 0.25, 2000, seed=1)
    assert np.array_equal(held, disjoint_holdout_split(texts, 0.25, 2000, seed=1)[1])
    assert 8 <= len(held) <= 25 and not set(fit) & set(held)  # about a quarter of the 60 sentences
    assert len(disjoint_holdout_split(texts, 0.5, 4, seed=1)[1]) == 4
    padded = [f" {t[0]} " for t in texts]
    for h in held:  # a whole text: no other row holds it
        assert not any(padded[h] in padded[j] and padded[j] != padded[h] for j in range(len(texts)))
    for i in fit:  # no fit row lies inside a held-out text
        assert not any(padded[i] in padded[h] for h in held)
    # the random split of the same rows is mostly text that the fit split holds inside a longer row
    r_fit, r_held = holdout_split(len(texts), 0.25, 2000, seed=1)
    inside = [any(padded[h] in padded[i] for i in r_fit) for h in r_held]
    assert np.mean(inside) > 0.5
    assert not np.array_equal(disjoint_holdout_split(texts, 0.25, 2000, seed=2)[1], held)


def test_disjoint_holdout_on_flat_data_is_random_less_duplicates():
    texts = [(f"sentence number {i}", f"other side {i}") for i in range(200)]
    texts.append(("sentence number 3", "other side 3"))
    fit, held = disjoint_holdout_split(texts, 0.1, 2000, seed=0)
    assert len(held) == 20 and len(fit) + len(held) in (200, 201)  # the duplicate of row 3 leaves only with row 3
    assert (3 in held) == (200 not in fit)
    with pytest.raises(AdabertError, match="--holdout-fraction"):
        disjoint_holdout_split(texts, 1.5, 2000, seed=0)
    nested = [(f"{w} x",) for w in "abcde"] + [(f"{w} x y",) for w in "abcde"]  # one row is drawn: past a phrase
    for seed in range(4):                                                      # the scan goes on to a sentence
        fit, held = disjoint_holdout_split(nested, 0.1, 2000, seed=seed)
        assert len(held) == 1 and held[0] >= 5 and len(fit) == 8
    with pytest.raises(AdabertError, match="hold 18 of the other 18 rows .* use --holdout-split random"):
        disjoint_holdout_split([("the good film",), ("the bad film",)] * 10, 0.1, 2000, seed=0)


def test_disjoint_holdout_keeps_pairs_that_share_a_sentence_together(adabert_log):
    """Pairs joined by a shared sentence (a premise with its hypotheses) are held out a whole group at a time, so no
    held-out pair shares a sentence with a fit pair; a group too large for the slice stays in the fit split."""
    texts = [(f"premise {p} says so", f"hypothesis {p} {h}") for p in range(100) for h in range(3)]
    texts += [("a stock sentence", f"paired with {i}") for i in range(40)]  # one group of 40 pairs
    texts.append(texts[4])  # a duplicate leaves the fit split with its group
    fit, held = disjoint_holdout_split(texts, 0.1, 2000, seed=0)
    assert not set(fit) & set(held) and 17 <= len(held) <= 34  # the slice: 34 rows, groups of three
    held_sides = {side for i in held for side in texts[i]}
    assert not any(side in held_sides for i in fit for side in texts[i])
    assert len({texts[i][0] for i in held}) * 3 == len(held)  # whole premises, each with its three hypotheses
    assert not any(texts[i][0] == "a stock sentence" for i in held)
    assert len(fit) + len(held) == len(texts) - (4 in held or 3 in held or 5 in held)
    assert np.array_equal(held, disjoint_holdout_split(texts, 0.1, 2000, seed=0)[1])
    assert not np.array_equal(held, disjoint_holdout_split(texts, 0.1, 2000, seed=1)[1])
    assert len(disjoint_holdout_split(texts, 0.1, 9, seed=0)[1]) == 9  # the cap holds: three groups of three
    # every pair shares one sentence: no group fits, so pairs are held out one at a time, with a warning
    star = [("one shared sentence", f"other side {i}") for i in range(200)]
    fit, held = disjoint_holdout_split(star, 0.1, 2000, seed=0)
    assert len(held) == 20 and len(fit) == 180 and "groups too large" in adabert_log.text


def test_disjoint_holdout_draws_groups_alike_whatever_their_size():
    """A quarter of the rows sit in groups of five; the held-out slice holds about a quarter of its rows from them.
    Drawn through a row, a group's odds grow with its size, and those rows would fill about 60% of the slice (QQP's
    popular questions, mostly duplicates, filled it so)."""
    texts = [(f"premise {p} says so", f"hypothesis {p} {h}") for p in range(40) for h in range(5)]
    texts += [(f"lone sentence {i}", f"its partner {i}") for i in range(600)]
    shares = []
    for seed in range(10):
        fit, held = disjoint_holdout_split(texts, 0.25, 2000, seed=seed)
        assert len(held) == 200 and len(fit) == 600
        shares.append(np.mean(held < 200))
    assert 0.15 <= np.mean(shares) <= 0.35, shares


def test_holdout_split_kind_is_checked_and_fingerprinted(sst2_dir):
    random, disjoint = (load_task_data(get_task("sst2"), sst2_dir, holdout_kind=k) for k in ("random", "disjoint"))
    assert random.fingerprint != disjoint.fingerprint
    with pytest.raises(AdabertError, match="--holdout-split: expected one of random, disjoint"):
        load_task_data(get_task("sst2"), sst2_dir, holdout_kind="sentences")
    assert load_task_data(get_task("sst2"), sst2_dir).fingerprint == disjoint.fingerprint


def test_every_stage_holds_out_whole_texts_by_default():
    from adabert.cli import build_parser

    parser = build_parser()
    stages = [a for a in parser._subparsers._group_actions[0].choices.items()
              if "--holdout-split" in a[1]._option_string_actions]
    assert {"teacher", "probes", "search", "finetune", "pipeline", "study"} <= {name for name, _ in stages}
    for name, sub in stages:
        assert sub.get_default("holdout_split") == "disjoint", name


def test_load_task_data_fingerprint_changes_with_content(sst2_dir, tmp_path):
    d1 = load_task_data(get_task("sst2"), sst2_dir)
    import shutil
    shutil.copytree(sst2_dir, tmp_path / "copy")
    with open(tmp_path / "copy" / "train.tsv", "a") as f:
        f.write("one more good film \t1\n")
    d2 = load_task_data(get_task("sst2"), tmp_path / "copy")
    assert d1.fingerprint != d2.fingerprint
    assert len(d1.fit) + len(d1.holdout) == len(d1.train)


@pytest.mark.parametrize("content,expect", [
    (b"sentence\tlabel\ngood film \t1\ntoo\tmany\tfields\n", "train.tsv:3: expected 2 fields"),
    (b"sentence\tlabel\ngood film \t1\nbad film \t7\n", "train.tsv:3: field 'label' = '7' is not a label"),
    (b"", "train.tsv: file is empty"),
    (b"sentence\tlabel\ngood \t1\ncaf\xe9 \t1\n", "train.tsv:3: not UTF-8"),
    (b"text\tlabel\ngood \t1\n", "train.tsv: no column 'sentence'; found text, label\n"),
    (b"a good film of the year\t1\nbad \t0\n", "no column 'sentence'; found a good film of the year, 1; line 1 "
     "reads like data, not a header: the file needs a first line naming its columns, 'sentence' among them"),
])
def test_bad_data_files_give_one_line_errors(tmp_path, capsys, content, expect):
    (tmp_path / "train.tsv").write_bytes(content)
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\ngood \t1\n")
    code, _, err = run_cli(["probes", "--task", "sst2", "--data-dir", tmp_path, "--teacher", tmp_path,
                            "--output-dir", tmp_path / "out"], capsys)
    assert code == 2
    assert expect in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_few_malformed_rows_are_skipped_with_a_warning_and_many_are_an_error(tmp_path, adabert_log):
    """GLUE's QQP train.tsv holds a few rows with a field missing: they are skipped, a warning names the first;
    beyond 1% of the rows the file is refused, naming the first bad line and how many more there are."""
    header = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
    rows = [f"{i}\t{2 * i}\t{2 * i + 1}\tis {i} odd?\tis {i} even?\t{i % 2}\n" for i in range(300)]
    rows[41] = "41\t82\t83\tis 41 odd? is 41 even?\t1\n"  # two fields run together, as in QQP
    (tmp_path / "train.tsv").write_text(header + "".join(rows))
    (tmp_path / "dev.tsv").write_text(header + "".join(rows[:20]))
    data = load_task_data(get_task("qqp"), tmp_path)
    assert len(data.train) == 299 and ("is 41 odd?", "is 41 even?") not in data.train.texts
    assert "train.tsv:43: expected 6 fields" in adabert_log.text
    assert "found 5; skipped it (1 of 300 rows)" in adabert_log.text
    rows[50] = rows[60] = rows[70] = "x\t1\n"  # 4 of 300 rows: over 1%
    (tmp_path / "train.tsv").write_text(header + "".join(rows))
    with pytest.raises(AdabertError, match=r"train.tsv:43: expected 6 fields .* found 5 \(and 3 more such rows\)$"):
        load_task_data(get_task("qqp"), tmp_path)


def test_loading_a_pair_task_finds_its_sentence_groups_once(tmp_path, monkeypatch):
    from adabert.data import dataset

    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    rows = [f"{i % 2}\t{i}\t{i}\tpremise {i // 3} holds\tclaim {i} of it\n" for i in range(300)]  # groups of 3
    for split in ("train.tsv", "dev.tsv"):
        (tmp_path / split).write_text(header + "".join(rows))
    calls = []
    find = dataset.sentence_groups
    monkeypatch.setattr(dataset, "sentence_groups", lambda texts: calls.append(len(texts)) or find(texts))
    data = load_task_data(get_task("mrpc"), tmp_path)
    assert calls == [300] and len(data.holdout_idx) == 30 and len({i // 3 for i in data.holdout_idx}) == 10


def test_a_custom_task_without_labels_reads_and_warns_about_its_training_file_once(tmp_path, adabert_log):
    from adabert.cli import _load_data, build_parser

    rows = [f"{'a fine' if i % 2 else 'a dull'} film number {i}\t{'pos' if i % 2 else 'neg'}\n" for i in range(200)]
    (tmp_path / "train.tsv").write_text("text\tlabel\n" + "".join(rows) + "a stray line without its label\n")
    (tmp_path / "dev.tsv").write_text("text\tlabel\n" + "".join(rows[:20]))
    args = build_parser().parse_args(["finetune", "--task", "custom", "--train-file", str(tmp_path / "train.tsv"),
                                      "--dev-file", str(tmp_path / "dev.tsv"), "--text-fields", "text", "--arch", "a",
                                      "--teacher", "t", "--probes", "p", "--output-dir", "o"])
    data = _load_data(args)
    assert data.task.labels == ("neg", "pos") and len(data.train) == 200
    assert adabert_log.text.count("train.tsv:202: expected 2 fields (text, label), found 1; skipped it") == 1


def test_missing_data_folder_and_file(tmp_path, capsys):
    code, _, err = run_cli(["teacher", "--task", "sst2", "--data-dir", tmp_path / "nope", "--model", tmp_path,
                            "--output-dir", tmp_path / "out"], capsys)
    assert code == 2 and "nope: no such folder" in err
    code, _, err = run_cli(["teacher", "--task", "sst2", "--data-dir", tmp_path, "--model", tmp_path,
                            "--output-dir", tmp_path / "out"], capsys)
    assert code == 2 and "train.tsv: data file not found" in err


def test_unknown_task(capsys, tmp_path):
    code, _, err = run_cli(["teacher", "--task", "imdb", "--data-dir", tmp_path, "--model", "x",
                            "--output-dir", tmp_path], capsys)
    assert code == 2 and "unknown task 'imdb'" in err


def test_read_split_label_error_is_adabert_error(tmp_path):
    (tmp_path / "t.tsv").write_text("sentence\tlabel\nx \tpositive\n")
    with pytest.raises(AdabertError, match="t.tsv:2"):
        read_split(get_task("sst2"), tmp_path / "t.tsv", "train")


def test_cli_custom_task_from_csv_and_jsonl(tmp_path, tiny_base, capsys):
    import json

    pairs = enumerate([("good", "pos"), ("bad", "neg")] * 10)
    rows = ["text,label"] + [f'"the {w} film {i}",{y}' for i, (w, y) in pairs]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "dev.csv").write_text("\n".join(rows[:5]) + "\n")
    code, out, err = run_cli(["teacher", "--task", "custom", "--train-file", tmp_path / "train.csv", "--dev-file",
                              tmp_path / "dev.csv", "--text-fields", "text", "--epochs", 1, "--min-steps", 0,
                              "--max-length", 16, "--model", tiny_base, "--output-dir", tmp_path / "t"], capsys)
    assert code == 0, err
    meta = json.loads((tmp_path / "t" / "meta.json").read_text())
    assert meta["config"]["task"]["labels"] == ["neg", "pos"] and meta["config"]["task"]["file_format"] == "csv"
    code, _, err = run_cli(["teacher", "--task", "custom", "--train-file", tmp_path / "train.csv",
                            "--model", tiny_base, "--output-dir", tmp_path / "t2"], capsys)
    assert code == 2 and "--dev-file: required with --task custom" in err


def test_training_seed_does_not_move_the_holdout_split(sst2_dir):
    from adabert.cli import _load_data, build_parser

    def load(*extra):
        args = build_parser().parse_args(["finetune", "--task", "sst2", "--data-dir", str(sst2_dir), "--arch", "a",
                                          "--teacher", "t", "--probes", "p", "--output-dir", "o", *extra])
        return _load_data(args)

    base, other_seed, other_split = load(), load("--seed", "1"), load("--holdout-seed", "1")
    assert base.fingerprint == other_seed.fingerprint
    assert np.array_equal(base.holdout_idx, other_seed.holdout_idx)
    assert base.fingerprint != other_split.fingerprint
    assert not np.array_equal(base.holdout_idx, other_split.holdout_idx)


def test_epoch_batches_group_lengths_and_visit_every_row_once():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=1000)

    def padded(batches):  # tokens computed when each batch is padded to its longest row
        return sum(lengths[b].max() * len(b) for b in batches)

    for group in (True, False):
        batches = epoch_batches(lengths, 16, seed=1, epoch=2, group_by_length=group)
        assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
        assert sorted(len(b) for b in batches) == [8] + [16] * 62
        again = epoch_batches(lengths, 16, seed=1, epoch=2, group_by_length=group)
        assert all(np.array_equal(a, b) for a, b in zip(batches, again))
        other = epoch_batches(lengths, 16, seed=1, epoch=3, group_by_length=group)
        assert not np.array_equal(np.concatenate(batches), np.concatenate(other))
    grouped = epoch_batches(lengths, 16, seed=1, epoch=2)
    plain = epoch_batches(lengths, 16, seed=1, epoch=2, group_by_length=False)
    assert padded(grouped) < 0.7 * padded(plain)
    # grouped batches are not served shortest- or longest-first: the order of the batches is shuffled
    maxima = [lengths[b].max() for b in grouped]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)
    # a subset of rows: only those rows
    rows = np.arange(0, 1000, 3)
    assert sorted(np.concatenate(epoch_batches(lengths, 16, 0, 0, rows=rows)).tolist()) == rows.tolist()


def test_inference_batches_are_longest_first():
    lengths = np.array([3, 9, 1, 7, 5])
    assert [b.tolist() for b in batch_indices(lengths, 2)] == [[1, 3], [4, 0], [2]]


def test_text_cut_at_max_length_is_reported(mrpc_dir, tmp_path, adabert_log):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(save_tiny_bert(tmp_path / "bert"))
    ds = read_split(get_task("mrpc"), mrpc_dir / "dev.tsv", "dev")
    room = 1 + max(len(tok(t)["input_ids"]) for pair in ds.texts for t in pair)
    enc = encode_separate(tok, ds, room)  # each sentence whole: nothing cut

    def ours() -> set[str]:  # the distinct cut warnings (newer pytest also captures at the named logger: twice)
        return {r.getMessage() for r in adabert_log.records if "fill --max-length" in r.getMessage()}

    assert enc.lengths().max() == room - 1 and not ours()
    enc = encode_joint(tok, ds, room)  # a pair read jointly is about twice as long
    cut = int((enc.lengths() >= room).sum())
    assert cut > 0
    [message] = ours()
    assert (f"dev.tsv (dev): {cut} of {len(ds)} examples ({100 * cut / len(ds):.1f}%) fill --max-length {room} "
            "tokens and are cut there") in message
