"""Task definitions: which columns hold the text and the label, the label set, and the metrics.

A task is plain data (`TaskSpec`). The GLUE tasks are registered by name; a custom task is built from the
user's column names (`custom_task`). Columns are named by the file's header; for header-less files (CoLA) the
spec gives the column names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from adabert.core.errors import AdabertError

METRICS = ("accuracy", "f1", "matthews", "pearson", "spearman")


@dataclass(frozen=True)
class TaskSpec:
    """What a task's files look like and how it is scored.

    name: registry name (lower case). text_fields: one column (single sentence) or two (a pair).
    label_field: the label column. labels: the label values as they appear in the file, in class-index order,
    or None for regression. label_names: human-readable names in the same order (defaults to `labels`).
    metrics: the first one is the task metric used for model selection.
    columns: column names for header-less files (None when the file has a header line).
    train_file / dev_file: file names inside the task's data folder.
    """

    name: str
    text_fields: tuple[str, ...]
    label_field: str
    labels: tuple[str, ...] | None
    metrics: tuple[str, ...]
    label_names: tuple[str, ...] | None = None
    columns: tuple[str, ...] | None = None
    train_file: str = "train.tsv"
    dev_file: str = "dev.tsv"
    file_format: str = "glue-tsv"
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if len(self.text_fields) not in (1, 2):
            raise AdabertError(f"task {self.name}: text_fields must name 1 or 2 columns, got {self.text_fields}")
        if self.labels is not None and len(self.labels) < 2:
            raise AdabertError(f"task {self.name}: a classification task needs at least 2 labels")
        if self.label_names is not None and self.labels is not None and len(self.label_names) != len(self.labels):
            raise AdabertError(f"task {self.name}: label_names and labels differ in length")
        for m in self.metrics:
            if m not in METRICS:
                raise AdabertError(f"task {self.name}: unknown metric {m!r}; expected one of {', '.join(METRICS)}")

    @property
    def is_pair(self) -> bool:
        return len(self.text_fields) == 2

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        """Number of classifier outputs (1 for regression)."""
        return 1 if self.labels is None else len(self.labels)

    @property
    def names(self) -> tuple[str, ...]:
        """Human-readable class names (empty for regression)."""
        if self.labels is None:
            return ()
        return self.label_names or self.labels

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    def describe(self) -> dict:
        """A JSON-able description (written into run folders and fingerprints)."""
        return {"name": self.name, "text_fields": list(self.text_fields), "label_field": self.label_field,
                "labels": None if self.labels is None else list(self.labels), "label_names": list(self.names),
                "metrics": list(self.metrics), "train_file": self.train_file, "dev_file": self.dev_file,
                "file_format": self.file_format}

    @staticmethod
    def from_description(d: object, source: str) -> "TaskSpec":
        """The inverse of `describe`, for a description read from a file: every field is checked."""
        def strings(v: object) -> bool:
            return isinstance(v, list) and all(isinstance(x, str) for x in v)

        if not isinstance(d, dict):
            raise AdabertError(f"{source}: expected a task description object")
        checks = {"name": isinstance(d.get("name"), str), "text_fields": strings(d.get("text_fields")),
                  "label_field": isinstance(d.get("label_field"), str),
                  "labels": d.get("labels") is None or strings(d.get("labels")),
                  "label_names": strings(d.get("label_names", [])), "metrics": strings(d.get("metrics"))}
        for key, ok in checks.items():
            if not ok:
                raise AdabertError(f"{source}: field {key!r} is missing or of the wrong type")
        labels = None if d["labels"] is None else tuple(d["labels"])
        return TaskSpec(d["name"], tuple(d["text_fields"]), d["label_field"], labels, tuple(d["metrics"]),
                        label_names=tuple(d.get("label_names", [])) or None)


GLUE_TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        TaskSpec("cola", ("sentence",), "label", ("0", "1"), ("matthews", "accuracy"),
                 label_names=("unacceptable", "acceptable"),
                 columns=("source", "label", "original_label", "sentence")),
        TaskSpec("sst2", ("sentence",), "label", ("0", "1"), ("accuracy", "f1"),
                 label_names=("negative", "positive")),
        TaskSpec("mrpc", ("#1 String", "#2 String"), "Quality", ("0", "1"), ("f1", "accuracy"),
                 label_names=("not_equivalent", "equivalent")),
        TaskSpec("stsb", ("sentence1", "sentence2"), "score", None, ("pearson", "spearman")),
        TaskSpec("qqp", ("question1", "question2"), "is_duplicate", ("0", "1"), ("f1", "accuracy"),
                 label_names=("not_duplicate", "duplicate")),
        TaskSpec("mnli", ("sentence1", "sentence2"), "gold_label", ("contradiction", "entailment", "neutral"),
                 ("accuracy",), dev_file="dev_matched.tsv"),
        TaskSpec("mnli-mm", ("sentence1", "sentence2"), "gold_label", ("contradiction", "entailment", "neutral"),
                 ("accuracy",), dev_file="dev_mismatched.tsv"),
        TaskSpec("qnli", ("question", "sentence"), "label", ("entailment", "not_entailment"), ("accuracy",)),
        TaskSpec("rte", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment"), ("accuracy",)),
        TaskSpec("wnli", ("sentence1", "sentence2"), "label", ("0", "1"), ("accuracy",),
                 label_names=("not_entailment", "entailment")),
    ]
}


def normalize_task_name(name: str) -> str:
    """'SST-2' -> 'sst2', 'STS-B' -> 'stsb', 'MNLI-MM' -> 'mnli-mm'."""
    n = name.strip().lower().replace("_", "-")
    if n in GLUE_TASKS:
        return n
    return re.sub(r"-(?!mm$)", "", n)


def get_task(name: str) -> TaskSpec:
    """Look up a GLUE task by name (case and dashes do not matter)."""
    key = normalize_task_name(name)
    if key not in GLUE_TASKS:
        raise AdabertError(f"--task: unknown task {name!r}; expected one of {', '.join(GLUE_TASKS)} or 'custom'")
    return GLUE_TASKS[key]


def file_format_of(path: str) -> str:
    """'csv', 'tsv' or 'jsonl' from a custom data file's suffix."""
    fmt = {"csv": "csv", "tsv": "tsv", "jsonl": "jsonl", "json": "jsonl"}.get(str(path).rsplit(".", 1)[-1].lower())
    if fmt is None:
        raise AdabertError(f"--train-file: {path}: expected a .csv, .tsv or .jsonl file")
    return fmt


def custom_task(text_fields: list[str], label_field: str, labels: list[str] | None, metrics: list[str] | None,
                train_file: str, dev_file: str, regression: bool = False) -> TaskSpec:
    """A task over the user's own CSV / TSV / JSONL files with named columns.

    labels: the label values in class-index order (see `data.infer_labels` to read them from a file).
    """
    if not text_fields:
        raise AdabertError("--text-fields: name one column (single sentence) or two (a pair)")
    fmt = file_format_of(train_file)
    if metrics is None:
        metrics = ["pearson", "spearman"] if regression else ["accuracy"]
    return TaskSpec("custom", tuple(text_fields), label_field, None if regression else tuple(labels or ()),
                    tuple(metrics), train_file=train_file, dev_file=dev_file, file_format=fmt)
