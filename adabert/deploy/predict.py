"""Using a saved student of any kind: load it with its tokenizer, predict labels and probabilities, evaluate on a
split."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable, TextIO

import numpy as np
import torch

from adabert.core.errors import AdabertError
from adabert.data.dataset import Dataset, StrayControls
from adabert.data.encoding import Encoded, batched_logits, encode_joint, encode_separate
from adabert.data.metrics import class_report, task_metrics
from adabert.data.tasks import TaskSpec
from adabert.students.load import load_student, load_student_tokenizer


class Predictor:
    """Any saved student folder ready to use: `Predictor(folder).predict([("a sentence",), ...])`."""

    def __init__(self, folder: Path, device: torch.device | None = None, int8: bool = False) -> None:
        self.folder = Path(folder)
        self.student = load_student(self.folder)
        self.device = device or torch.device("cpu")
        if int8:
            from adabert.deploy.quantize import int8_dynamic

            if self.device.type != "cpu":
                raise AdabertError("--int8: dynamic quantisation runs on the CPU; use --device cpu")
            self.student.module = int8_dynamic(self.student.module)
        self.student.module.to(self.device)
        self.tokenizer = load_student_tokenizer(self.folder)
        self.task = self.student.task
        self.max_length = self.student.max_length

    def check_task(self, task: TaskSpec) -> None:
        """Refuse data of another task (other name, labels or number of text fields)."""
        mine = self.task
        if (mine.name, mine.labels, len(mine.text_fields)) != (task.name, task.labels, len(task.text_fields)):
            raise AdabertError(f"{self.folder}: this student was trained for task {mine.name!r} (labels "
                               f"{mine.labels}), not {task.name!r} (labels {task.labels})")

    def encode(self, texts: list[tuple[str, ...]]) -> Encoded:
        ds = Dataset(self.task, "input", self.folder, texts, np.zeros(len(texts)))
        encode = encode_joint if self.student.encoding == "joint" else encode_separate
        return encode(self.tokenizer, ds, self.max_length)

    @torch.no_grad()
    def logits(self, texts: list[tuple[str, ...]], batch_size: int = 256) -> np.ndarray:
        """Logits [N, C] in input order (length-sorted batches)."""
        enc = self.encode(texts)
        return batched_logits(lambda rows: self.student.module(*self.student.inputs(enc, rows, self.device)), enc,
                              self.task.num_labels, self.device, batch_size).numpy()

    def predict(self, texts: list[tuple[str, ...]]) -> tuple[list[str], np.ndarray]:
        """Labels (names) and probabilities [N, C] (or scores [N, 1] for regression)."""
        logits = self.logits(texts)
        if self.task.is_regression:
            return [f"{v:.4f}" for v in logits[:, 0]], logits
        probs = torch.softmax(torch.from_numpy(logits), -1).numpy()
        return [self.task.names[i] for i in probs.argmax(-1)], probs

    def evaluate(self, data: Dataset) -> dict:
        self.check_task(data.task)
        logits = self.logits(data.texts)
        out = {"metrics": task_metrics(data.task, logits, data.labels), "examples": len(data)}
        if not data.task.is_regression:
            out["report"] = class_report(data.task, logits, data.labels)
        return out


def read_inputs(lines: Iterable[str], fields: int, source: str) -> list[tuple[str, ...]]:
    """Tab-separated lines with exactly `fields` columns (1: sentence, 2: pair); blank lines are skipped."""
    out = []
    n = 0
    stray = StrayControls()
    names = [f"column {i + 1}" for i in range(fields)]
    try:
        for n, line in enumerate(lines, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) != fields:
                raise AdabertError(f"{source}:{n}: expected {fields} tab-separated column{'s' if fields > 1 else ''}"
                                   f" ({'sentence' if fields == 1 else 'sentence A, sentence B'}), found {len(cols)}")
            out.append(stray.row(cols, f"{source}:{n}", names))
    except UnicodeDecodeError as e:
        raise AdabertError(f"{source}:{n + 1}: not UTF-8 text ({e.reason}); save the file as UTF-8") from None
    stray.report(source)
    if not out:
        raise AdabertError(f"{source}: no input lines")
    return out


def read_table(path: Path, fields: list[str]) -> tuple[list[tuple[str, ...]], list[dict[str, str]]]:
    """Examples from a CSV, TSV (with a header line) or JSONL file: the `fields` columns of every row, and the rows
    themselves (written back beside the predictions)."""
    from adabert.data.dataset import missing_column, read_rows
    from adabert.data.tasks import file_format_of

    rows = read_rows(Path(path), file_format_of(str(path)))
    missing = [f for f in fields if f not in rows[0][1]]
    if missing:
        raise missing_column(path, missing[0], rows[0][1], " (--text-fields)")
    texts = []
    stray = StrayControls()
    for n, row in rows:
        text = stray.row([row[f] for f in fields], f"{path}:{n}", fields)
        if not all(text):
            raise AdabertError(f"{path}:{n}: field {fields[[bool(t) for t in text].index(False)]!r} is empty")
        texts.append(text)
    stray.report(path)
    return texts, [r for _, r in rows]


def names_fields(path: Path, fields: list[str]) -> bool:
    """Whether the first non-blank line of a tab-separated file is a header naming every one of `fields` (a
    labelled GLUE file such as dev.tsv), so that it reads as a table rather than as plain lines."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for line in f:
            if line.strip():
                return set(fields) <= {c.strip() for c in line.rstrip("\r\n").split("\t")}
    return False


def write_predictions(path: Path, rows: list[dict[str, str]], labels: list[str], scores: np.ndarray,
                      names: tuple[str, ...]) -> None:
    """Each input row with `label` and the class probabilities (`p_NAME`) or the regression `score`, as JSONL, CSV
    or TSV (unquoted, as GLUE's files) by the suffix of `path`, written atomically. Input columns are never
    overwritten: where the input already has one of those names (a labelled dev file's `label`, say), every
    prediction column is named `predicted_...`."""
    import csv
    import io
    import json

    from adabert.core.fileio import atomic_write_bytes

    extra = [{"label": lab, **({f"p_{n}": round(float(v), 6) for n, v in zip(names, p)} if names
                               else {"score": float(p[0])})} for lab, p in zip(labels, scores)]
    if rows and extra and set(extra[0]) & set(rows[0]):
        extra = [{f"predicted_{k}": v for k, v in e.items()} for e in extra]
    out = [{**r, **e} for r, e in zip(rows, extra)]
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json"):
        data = "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in out)
    elif suffix == ".csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(out[0]))
        writer.writeheader()
        writer.writerows(out)
        data = buf.getvalue()
    elif suffix == ".tsv":  # GLUE's convention, which `read_rows` reads: tab-separated, nothing quoted
        lines = ["\t".join(out[0])]
        for n, o in enumerate(out, 1):
            values = [str(v) for v in o.values()]
            bad = next((k for k, v in zip(o, values) if any(c in v for c in "\t\r\n")), None)
            if bad is not None:
                raise AdabertError(f"--output: {path}: row {n}, column {bad!r} holds a tab or a line break, which "
                                   "a .tsv file cannot; write .jsonl or .csv")
            lines.append("\t".join(values))
        data = "\n".join(lines) + "\n"
    else:
        raise AdabertError(f"--output: {path}: expected a .jsonl, .csv or .tsv file")
    atomic_write_bytes(Path(path), data.encode("utf-8"))


def open_input(path: str | None) -> tuple[TextIO, str]:
    if path in (None, "-"):
        return sys.stdin, "<stdin>"
    p = Path(path)
    if not p.is_file():
        raise AdabertError(f"{path}: input file not found")
    return open(p, encoding="utf-8"), str(p)
