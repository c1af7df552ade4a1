"""Fixtures the tests write themselves: toy GLUE-layout data and a tiny randomly initialised BERT; and the CPU
tests kept on the CPU where there is a GPU (`--device auto`, the default, would pick it; test_cuda.py is the GPU's)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch

POS = ["good", "great", "fine", "superb", "lovely"]
NEG = ["bad", "awful", "poor", "dull", "boring"]
FILLER = ["the", "a", "movie", "film", "plot", "actor", "story", "is", "was", "very", "quite", "and", "it", "this"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIAL + POS + NEG + FILLER + ['"', "'s", ","]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _cpu_unless_a_cuda_test(request, monkeypatch):
    """Every test outside test_cuda.py sees no GPU: in this process, and in the subprocesses it starts."""
    if request.node.path.name != "test_cuda.py":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture
def adabert_log(caplog, monkeypatch):
    """caplog that sees the package's messages at INFO and above, whichever test ran first: once a CLI test has
    installed adabert's own stderr handler, the logger stops propagating to the root logger pytest listens on."""
    from adabert.core.runtime import log

    monkeypatch.setattr(log, "propagate", True)
    caplog.set_level("INFO", logger="adabert")
    return caplog


def tiny_arch(seed: int = 0):
    """A two-cell architecture of the tiny space, derived from random logits."""
    from adabert.nas.arch import derive
    from adabert.nas.search_space import load_search_space

    space = load_search_space("tiny")
    torch.manual_seed(seed)
    return derive(space, torch.randn(space.num_edges, len(space.ops)), torch.tensor([0.0, 2.0, 0.0]))


def subprocess_env() -> dict[str, str]:
    """The environment of an `adabert` subprocess: this checkout importable, one OpenMP thread."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def toy_sentence(rng: random.Random, label: int) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(2, 7))]
    words.insert(rng.randint(0, len(words)), rng.choice(POS if label else NEG))
    return " ".join(words)


def _write_splits(folder: Path, header: str, row, sizes: tuple[int, int], seed: int) -> Path:
    """train.tsv and dev.tsv of sizes[0] and sizes[1] rows, each `row(rng, i)`, under `header`."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in zip(("train.tsv", "dev.tsv"), sizes):
        rows = [header] + [row(rng, i) for i in range(n)]
        (folder / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def write_sst2(folder: Path, n_train: int = 240, n_dev: int = 80, seed: int = 0) -> Path:
    """SST-2 layout: header `sentence\\tlabel`, a space before the tab, stray quotes, no quoting."""
    def row(rng: random.Random, i: int) -> str:
        label = rng.randint(0, 1)
        s = toy_sentence(rng, label)
        quote = '" ' if i % 7 == 0 else ""
        return f"{quote}{s} \t{label}"

    return _write_splits(folder, "sentence\tlabel", row, (n_train, n_dev), seed)


def treebank_rows(rng: random.Random, n_sentences: int) -> list[tuple[str, int]]:
    """SST-style (text, label) rows: each toy sentence, then each of its prefixes and suffixes of two or more words
    with the sentence's label (SST-2's training file holds every constituent phrase of a sentence as a row)."""
    rows = []
    for _ in range(n_sentences):
        label = rng.randint(0, 1)
        words = (toy_sentence(rng, label) + " " + " ".join(rng.choice(FILLER) for _ in range(3))).split()
        rows.append((" ".join(words), label))
        rows += [(" ".join(words[:k]), label) for k in range(2, len(words))]
        rows += [(" ".join(words[k:]), label) for k in range(1, len(words) - 1)]
    return rows


def write_sst2_phrases(folder: Path, n_sentences: int = 40, n_dev: int = 80, seed: int = 0) -> Path:
    """SST-2 layout whose training rows are `treebank_rows`; dev holds whole sentences."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    train = [f"{t} \t{y}" for t, y in treebank_rows(rng, n_sentences)]
    dev = [f"{toy_sentence(rng, y)} \t{y}" for y in (rng.randint(0, 1) for _ in range(n_dev))]
    for name, rows in (("train.tsv", train), ("dev.tsv", dev)):
        (folder / name).write_text("\n".join(["sentence\tlabel"] + rows) + "\n", encoding="utf-8")
    return folder


def write_mrpc(folder: Path, n_train: int = 120, n_dev: int = 40, seed: int = 0) -> Path:
    """MRPC layout: BOM header, label first, two ID columns, two sentences; label = same sentiment."""
    def row(rng: random.Random, i: int) -> str:
        a, b = rng.randint(0, 1), rng.randint(0, 1)
        return f"{int(a == b)}\t{1000 + i}\t{2000 + i}\t{toy_sentence(rng, a)}\t{toy_sentence(rng, b)}"

    return _write_splits(folder, "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String", row, (n_train, n_dev), seed)


def write_stsb(folder: Path, n_train: int = 240, n_dev: int = 80, seed: int = 0) -> Path:
    """STS-B layout (ten columns, score last): sentence 2 is sentence 1 with r of its 6 words replaced (r uniform
    in 0..6), score 5 * (1 - r / 6): similarity a student can only predict by comparing the two sentences, on a
    0-5 scale (mean 2.5, not 0)."""
    words = POS + NEG + FILLER

    def row(rng: random.Random, i: int) -> str:
        a = [rng.choice(words) for _ in range(6)]
        b = list(a)
        r = rng.randint(0, 6)
        for at in rng.sample(range(6), r):
            b[at] = rng.choice([w for w in words if w != a[at]])
        return (f"{i}\tmain-captions\tMSRvid\t2012test\t{i:04d}\tnone\tnone\t{' '.join(a)}\t{' '.join(b)}\t"
                f"{5 * (1 - r / 6):.3f}")

    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    return _write_splits(folder, header, row, (n_train, n_dev), seed)


def write_ratings(folder: Path, n_train: int = 240, n_dev: int = 80, seed: int = 0) -> Path:
    """A single-sentence regression task in JSONL (`review`, `stars`): six words, k of them (0-4) from POS and the
    rest filler, rated 1 + k stars: a score on a 1-5 scale (mean 3, not 0) that counting sentiment words predicts."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.jsonl", n_train), ("dev.jsonl", n_dev)):
        rows = []
        for _ in range(n):
            k = rng.randint(0, 4)
            words = [rng.choice(POS) for _ in range(k)] + [rng.choice(FILLER) for _ in range(6 - k)]
            rng.shuffle(words)
            rows.append(json.dumps({"review": " ".join(words), "stars": float(1 + k)}))
        (folder / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def write_nli(folder: Path, n_train: int = 360, n_dev: int = 120, seed: int = 0) -> Path:
    """An NLI-shaped custom task in JSONL (premise, hypothesis, three label names): the premise holds one sentiment
    word; the hypothesis holds one of the same polarity (entailment), of the other (contradiction) or none
    (neutral). Telling entailment from contradiction takes both sentences."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.jsonl", n_train), ("dev.jsonl", n_dev)):
        rows = []
        for _ in range(n):
            label, polarity = rng.choice(["entailment", "neutral", "contradiction"]), rng.randint(0, 1)
            premise = toy_sentence(rng, polarity)
            hypothesis = ([rng.choice(FILLER) for _ in range(rng.randint(3, 6))] if label == "neutral" else
                          toy_sentence(rng, polarity if label == "entailment" else 1 - polarity).split())
            rows.append(json.dumps({"premise": premise, "hypothesis": " ".join(hypothesis), "label": label}))
        (folder / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def write_word_order(folder: Path, n_train: int = 320, n_dev: int = 80, seed: int = 0) -> Path:
    """SST-2 layout, a task no bag of words solves: every sentence holds "good" and "bad" next to each other, and
    the label says whether "good" comes first."""
    def row(rng: random.Random, i: int) -> str:
        label = rng.randint(0, 1)
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 6))]
        at = rng.randint(0, len(words))
        words[at:at] = ["good", "bad"] if label else ["bad", "good"]
        return f"{' '.join(words)}\t{label}"

    return _write_splits(folder, "sentence\tlabel", row, (n_train, n_dev), seed)


# what each family needs beyond the shared sizes: DistilBERT names its feed-forward width apart; DeBERTa-v3 has
# relative positions only; ALBERT and ELECTRA factor a narrower embedding
FAMILY_OPTIONS = {"bert": {}, "roberta": {}, "electra": {"embedding_size": 16}, "albert": {"embedding_size": 16},
                  "distilbert": {"hidden_dim": 64}, "deberta-v2": {"position_biased_input": False,
                                                                   "relative_attention": True, "position_buckets": 16}}


def bpe_tokenizer():
    """A RoBERTa-style byte-level BPE tokenizer (<s> a </s></s> b </s>, pad id 1) trained on the toy words."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    rng = random.Random(0)
    bpe.train_from_iterator([" ".join(rng.choices(VOCAB[len(SPECIAL):], k=8)) for _ in range(500)], vocab_size=300,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    return RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")


def save_tiny_bert(folder: Path, seed: int = 0, layers: int = 2, hidden: int = 32, family: str = "bert") -> Path:
    """A randomly initialised model of a BERT family (`FAMILY_OPTIONS`) saved like a hub checkpoint: a WordPiece
    tokenizer over VOCAB, or for RoBERTa `bpe_tokenizer()` and its position table offset by the padding index."""
    from transformers import AutoConfig, AutoModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tok = bpe_tokenizer() if family == "roberta" else BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)},
                                                                         do_lower_case=True)
    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(family, vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers,
                               num_attention_heads=2, intermediate_size=2 * hidden,
                               max_position_embeddings=66 if family == "roberta" else 64, **FAMILY_OPTIONS[family])
    AutoModel.from_config(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def sst2_dir(tmp_path_factory) -> Path:
    return write_sst2(tmp_path_factory.mktemp("data") / "SST-2")


@pytest.fixture(scope="session")
def mrpc_dir(tmp_path_factory) -> Path:
    return write_mrpc(tmp_path_factory.mktemp("data") / "MRPC")


def teacher_and_probes(base: Path, data, root: Path, epochs: int = 4) -> tuple[Path, Path]:
    """The tiny BERT fine-tuned on `data`, and its probes, under `root`."""
    from adabert.teacher.model import TeacherConfig, finetune_teacher
    from adabert.teacher.probes import ProbeConfig, run_probes

    cpu = torch.device("cpu")
    finetune_teacher(str(base), data, TeacherConfig(epochs=epochs, min_steps=0, batch_size=16, lr=3e-3, max_length=32),
                     root / "teacher", cpu)
    run_probes(str(root / "teacher"), data, ProbeConfig(epochs=5, batch_size=32, lr=1e-2, max_length=32),
               root / "probes", cpu)
    return root / "teacher", root / "probes"


def search_and_finetune(teacher: Path, probes: Path, data, root: Path, student: str = "student") -> Path:
    """A 1-epoch search in the tiny space (root/search/arch.json) and a 1-epoch finetune of its arch
    (root/STUDENT); returns the student folder."""
    from adabert.nas.config import SearchConfig
    from adabert.nas.search import Searcher
    from adabert.nas.search_space import load_search_space
    from adabert.students.finetune import FinetuneConfig, finetune_student
    from adabert.teacher.bundle import TaskBundle

    cpu = torch.device("cpu")
    bundle = TaskBundle(data, teacher, probes)
    Searcher(bundle, load_search_space("tiny"),
             SearchConfig(epochs=1, batch_size=32, max_length=16, evals=1, min_steps=0, select_top=1),
             root / "search", cpu).run()
    finetune_student(root / "search" / "arch.json", bundle,
                     FinetuneConfig(epochs=1, batch_size=32, max_length=16), root / student, cpu)
    return root / student


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory, tiny_base, sst2_dir) -> Path:
    """The tiny BERT fine-tuned on the toy SST-2 task."""
    from adabert.data.dataset import load_task_data
    from adabert.data.tasks import get_task
    from adabert.teacher.model import TeacherConfig, finetune_teacher

    out = tmp_path_factory.mktemp("runs") / "teacher"
    data = load_task_data(get_task("sst2"), sst2_dir)
    finetune_teacher(str(tiny_base), data, TeacherConfig(epochs=8, min_steps=0, batch_size=16, lr=3e-3, max_length=32),
                     out, torch.device("cpu"))
    return out


@pytest.fixture(scope="session")
def tiny_probes(tmp_path_factory, tiny_teacher, sst2_dir) -> Path:
    from adabert.data.dataset import load_task_data
    from adabert.data.tasks import get_task
    from adabert.teacher.probes import ProbeConfig, run_probes

    out = tmp_path_factory.mktemp("runs") / "probes"
    data = load_task_data(get_task("sst2"), sst2_dir)
    run_probes(str(tiny_teacher), data, ProbeConfig(epochs=20, batch_size=32, lr=1e-2, max_length=32,
                                                    feature_dims=-1), out, torch.device("cpu"))
    return out


def cli_stages(base: Path, task: list, root: Path, capsys, search_epochs: int, finetune_epochs: int,
               metric: str = "accuracy") -> tuple[float, float]:
    """teacher (from `base`), probes, search (tiny space) and finetune via the CLI on `task` (its CLI arguments),
    into root/t, root/p, root/s and root/student; each must exit 0. Returns the dev `metric` of teacher and
    student."""
    stages = [["teacher", "--model", base, "--epochs", 8, "--min-steps", 0, "--batch-size", 16, "--lr", 3e-3,
               "--max-length", 32, "--output-dir", root / "t"],
              ["probes", "--teacher", root / "t", "--epochs", 5, "--max-length", 32, "--output-dir", root / "p"],
              ["search", "--teacher", root / "t", "--probes", root / "p", "--search-space", "tiny",
               "--epochs", search_epochs, "--batch-size", 32, "--max-length", 16, "--min-steps", 0, "--select-top", 1,
               "--output-dir", root / "s"],
              ["finetune", "--arch", root / "s" / "arch.json", "--teacher", root / "t", "--probes", root / "p",
               "--epochs", finetune_epochs, "--batch-size", 16, "--max-length", 16, "--output-dir", root / "student"]]
    for args in stages:
        code, _, err = run_cli([*args, *task], capsys)
        assert code == 0, (args[0], err)
    return tuple(json.loads((root / name / "metrics.json").read_text())["dev"][metric]
                 for name in ("t", "student"))


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run `adabert ARGS` in-process; return (exit code, stdout, stderr)."""
    from adabert.cli import main

    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err
