"""Reading a task's files into memory, and the deterministic held-out split.

GLUE TSV files are tab-separated with no quoting (sentences hold stray `"`), MRPC's header starts with a BOM,
CoLA has no header. Custom files may be CSV (standard quoting), TSV (no quoting) or JSON Lines. Every problem
is an `AdabertError` naming the file and line.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from adabert.core.errors import AdabertError
from adabert.core.fileio import hash_files, hash_obj
from adabert.core.runtime import log
from adabert.data.tasks import TaskSpec


@dataclass
class Dataset:
    """One split of a task in memory.

    texts: one tuple per example, holding 1 (single sentence) or 2 (pair) strings.
    labels: int64 class indices [N], or float32 scores [N] for regression.
    """

    task: TaskSpec
    split: str
    path: Path
    texts: list[tuple[str, ...]]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: np.ndarray) -> "Dataset":
        return Dataset(self.task, self.split, self.path, [self.texts[i] for i in idx], self.labels[idx])


# C0 controls other than tab, newline and carriage return; DEL; lone UTF-16 surrogates (from JSON escapes).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
# What `StrayControls` refuses rather than replaces: NUL (a UTF-16 or binary file read as UTF-8) and lone surrogates.
_REFUSED = re.compile("[\x00\ud800-\udfff]")


def check_text(value: str, where: str, field: str) -> str:
    """`value` unless it holds a control character (then an error naming `where` and `field`): for text the tool
    wrote itself, which `StrayControls` has already cleaned."""
    bad = _CONTROL.search(value)
    if bad:
        raise AdabertError(f"{where}: field {field!r} holds control character U+{ord(bad.group()):04X}; expected "
                           "plain text")
    return value


class StrayControls:
    """Cleans a user's text row by row: each control character but NUL (C0 other than tab, newline and carriage
    return; DEL) becomes a space, since official data holds a few (GLUE's STS-B train.tsv: a U+0012 for an
    apostrophe) that one row should not stop a run for, and BERT's tokenizers drop them anyway. The rows changed
    are counted for one warning per file (`report`). NUL, the mark of a UTF-16 or binary file, and lone surrogates
    are errors naming the line and field."""

    def __init__(self) -> None:
        self.rows = 0
        self.first = ""  # where, field and code point of the first replacement

    def row(self, text: Sequence[str], where: str, fields: Sequence[str]) -> tuple[str, ...]:
        """`text` (one string per field) cleaned and stripped."""
        out, changed = [], False
        for value, field in zip(text, fields):
            bad = _REFUSED.search(value)
            if bad:
                raise AdabertError(f"{where}: field {field!r} holds control character U+{ord(bad.group()):04X}; "
                                   "expected plain UTF-8 text (a UTF-16 or binary file?)")
            found = _CONTROL.search(value)
            if found is not None:
                self.first = self.first or f"{where}, field {field!r} (U+{ord(found.group()):04X})"
                value, changed = _CONTROL.sub(" ", value), True
            out.append(value.strip())
        self.rows += changed
        return tuple(out)

    def report(self, path: Path | str) -> None:
        if self.rows:
            log.warning("%s: control characters replaced by spaces in %d row(s), the first at %s", path, self.rows,
                        self.first)


def _decode(path: Path) -> str:
    if not path.is_file():
        raise AdabertError(f"{path}: data file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise AdabertError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save the file as UTF-8")
    if not text.strip():
        raise AdabertError(f"{path}: file is empty; expected a header line and data rows")
    return text


# Official files can hold a few broken rows among hundreds of thousands (GLUE's QQP train.tsv has rows with a
# question missing or a tab inside one): up to this share of a file's rows is skipped with a warning; more is an error.
MALFORMED_MAX_SHARE = 0.01


def read_rows(path: Path, fmt: str, columns: tuple[str, ...] | None = None) -> list[tuple[int, dict[str, str]]]:
    """Rows of a data file as (line number, {column: value}).

    fmt: 'glue-tsv' or 'tsv' (tab-separated, no quoting), 'csv' (standard quoting) or 'jsonl'.
    columns: names for a header-less file; None reads them from the first line. Rows with another number of
    fields are skipped with a warning naming the first, if at most `MALFORMED_MAX_SHARE` of the rows; else an
    error names it.
    """
    path = Path(path)
    text = _decode(path)
    if fmt == "jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise AdabertError(f"{path}:{n}: not a JSON object ({e.msg})") from None
            except RecursionError:
                raise AdabertError(f"{path}:{n}: JSON nested too deeply; expected a flat object") from None
            if not isinstance(obj, dict):
                raise AdabertError(f"{path}:{n}: expected a JSON object per line, got {type(obj).__name__}")
            rows.append((n, {k: v if isinstance(v, str) else json.dumps(v) for k, v in obj.items()}))
        if not rows:
            raise AdabertError(f"{path}: no data rows")
        return rows
    if fmt == "csv":
        reader = csv.reader(io.StringIO(text, newline=""))
        records = []
        try:
            for fields in reader:
                records.append((reader.line_num, fields))
        except csv.Error as e:
            raise AdabertError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
    elif fmt in ("glue-tsv", "tsv"):
        records = [(n, line.rstrip("\r").split("\t")) for n, line in enumerate(text.split("\n"), 1)]
    else:
        raise AdabertError(f"{path}: unknown file format {fmt!r}; expected csv, tsv or jsonl")
    records = [(n, f) for n, f in records if f and any(x.strip() for x in f)]
    if columns is None:
        if not records:
            raise AdabertError(f"{path}: file is empty; expected a header line")
        _, header = records.pop(0)
        columns = tuple(h.strip() for h in header)
    if not records:
        raise AdabertError(f"{path}: no data rows after the header")
    out, malformed = [], []
    for n, fields in records:
        if len(fields) != len(columns):
            malformed.append((n, len(fields)))
        else:
            out.append((n, dict(zip(columns, fields))))
    if malformed:
        (n, found), more = malformed[0], len(malformed) - 1
        first = f"{path}:{n}: expected {len(columns)} fields ({', '.join(columns)}), found {found}"
        if len(malformed) > MALFORMED_MAX_SHARE * len(records):
            raise AdabertError(first + (f" (and {more} more such rows)" if more else ""))
        log.warning("%s; skipped it%s (%d of %d rows)", first, f" and {more} more such rows" if more else "",
                    len(malformed), len(records))
    return out


def missing_column(path: Path, column: str, header: Iterable[str], flag: str = "") -> AdabertError:
    """The one-line error for a column that a file lacks, naming the header found. A file without a header line
    shows its first data row as the header: where a name reads like data (a number, or four words or more), the
    error says that the file needs a first line naming its columns."""
    header = list(header)
    shown = [h if len(h) <= 40 else h[:37] + "..." for h in header]
    data_like = any(len(h.split()) >= 4 or re.fullmatch(r"[-+]?\d+(\.\d+)?", h.strip()) for h in header)
    hint = (f"; line 1 reads like data, not a header: the file needs a first line naming its columns, {column!r} "
            "among them") if data_like else ""
    return AdabertError(f"{path}: no column {column!r}{flag}; found {', '.join(shown)}{hint}")


def read_split(task: TaskSpec, path: Path, split: str,
               rows: list[tuple[int, dict[str, str]]] | None = None) -> Dataset:
    """Read one split of `task` from `path` (or take its `rows`, already read by `read_rows`), checking columns and
    labels.

    Control characters in the text are replaced by spaces and counted in a warning (NUL is an error naming the line
    and field: `StrayControls`); a row whose text field is empty is skipped, and the skipped rows are counted in a
    warning."""
    path = Path(path)
    rows = read_rows(path, task.file_format, task.columns) if rows is None else rows
    needed = (*task.text_fields, task.label_field)
    first = rows[0][1]
    for col in needed:
        if col not in first:
            raise missing_column(path, col, first)
    texts: list[tuple[str, ...]] = []
    labels: list = []
    index = {v: i for i, v in enumerate(task.labels or ())}
    empty: list[int] = []
    stray = StrayControls()
    for n, row in rows:
        text = stray.row([row[c] for c in task.text_fields], f"{path}:{n}", task.text_fields)
        if not all(text):
            empty.append(n)
            continue
        texts.append(text)
        raw = row[task.label_field].strip()
        if task.is_regression:
            try:
                value = float(raw)
            except ValueError:
                raise AdabertError(f"{path}:{n}: field {task.label_field!r} = {raw!r} is not a number") from None
            if not math.isfinite(value):
                raise AdabertError(f"{path}:{n}: field {task.label_field!r} = {raw!r} is not a finite number")
            labels.append(value)
        else:
            if raw not in index:
                raise AdabertError(f"{path}:{n}: field {task.label_field!r} = {raw!r} is not a label of task "
                                   f"{task.name}; expected one of {', '.join(task.labels)}")
            labels.append(index[raw])
    stray.report(path)
    if empty:
        if not texts:
            raise AdabertError(f"{path}: every row has an empty text field ({', '.join(task.text_fields)})")
        log.warning("%s: skipped %d row(s) with an empty text field (line %s%s)", path, len(empty), empty[0],
                    f" and {len(empty) - 1} more" if len(empty) > 1 else "")
    dtype = np.float32 if task.is_regression else np.int64
    return Dataset(task, split, path, texts, np.asarray(labels, dtype=dtype))


def infer_labels(rows: list[tuple[int, dict[str, str]]], path: Path, label_field: str) -> list[str]:
    """The sorted distinct values of `label_field` in the rows of file `path` (`read_rows`; for custom tasks given
    no --labels)."""
    if label_field not in rows[0][1]:
        raise missing_column(path, label_field, rows[0][1])
    values = sorted({r[label_field].strip() for _, r in rows})
    if len(values) < 2:
        raise AdabertError(f"{path}: column {label_field!r} has fewer than 2 distinct labels")
    return values


@dataclass
class TaskData:
    """A task's train and dev splits plus the held-out slice of train used for model selection."""

    task: TaskSpec
    train: Dataset
    dev: Dataset
    train_idx: np.ndarray
    holdout_idx: np.ndarray
    fingerprint: str
    holdout_kind: str  # "random" or "disjoint": how the held-out slice was cut (`load_task_data`)
    holdout_fraction: float  # the rest of how it was cut
    holdout_max: int
    holdout_seed: int

    @property
    def fit(self) -> Dataset:
        """The training examples minus the held-out slice."""
        return self.train.subset(self.train_idx)

    @property
    def holdout(self) -> Dataset:
        return self.train.subset(self.holdout_idx)

    def widened(self, fraction: float) -> tuple[TaskData, np.ndarray]:
        """The same data with the held-out slice cut as this one was (kind, cap, seed) at a larger `fraction`, and
        the positions in `train_idx` of the fit rows it keeps. Both splits take the first rows of one permutation,
        so the wider slice holds this one (joined to it all the same); the fit split loses the new held-out rows
        and, with whole texts, the rows inside them. Unchanged (self, every position) when `fraction` is not
        larger; the fingerprint names the new fraction. For the search's `--selection-fraction`, which errors name."""
        if fraction <= self.holdout_fraction:
            return self, np.arange(len(self.train_idx))
        if self.holdout_kind == "disjoint":
            fit, held = disjoint_holdout_split(self.train.texts, fraction, self.holdout_max, self.holdout_seed,
                                               f"held-out slice at {fraction:g}", "--selection-fraction")
        else:
            fit, held = holdout_split(len(self.train), fraction, self.holdout_max, self.holdout_seed)
        kept = np.flatnonzero(np.isin(self.train_idx, fit))
        data = replace(self, train_idx=self.train_idx[kept], holdout_idx=np.union1d(self.holdout_idx, held),
                       fingerprint=hash_obj([self.fingerprint, "held out", fraction]), holdout_fraction=fraction)
        return data, kept


def holdout_split(n: int, fraction: float, max_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic split of range(n) into (train, held-out) index arrays, both sorted.

    size = min(max_size, round(n * fraction)), at least 1 when n > 1; a permutation from `seed` picks them.
    """
    if not 0 < fraction < 1:
        raise AdabertError(f"--holdout-fraction: expected a number in (0, 1), got {fraction}")
    size = max(1, min(max_size, int(round(n * fraction)))) if n > 1 else 0
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[size:]), np.sort(perm[:size])


HOLDOUT_SPLITS = ("random", "disjoint")


def text_key(text: tuple[str, ...]) -> str:
    """An example's text as lower-cased word tokens joined by single spaces, a pair's two sides apart by U+241E."""
    return " \u241e ".join(" ".join(side.lower().split()) for side in text)


def sentence_groups(texts: list[tuple[str, ...]]) -> list[int] | None:
    """For sentence pairs, the group of each row: rows joined, directly or through others, by a shared sentence
    (as word tokens, lower-cased) fall in one group, numbered by first appearance. None where no sentence is shared
    by two distinct pairs (every group one text, its duplicates aside) and for single sentences: nothing to keep
    together then. MNLI holds each premise with about three hypotheses, QNLI each question with several sentences;
    MRPC, STS-B and RTE reuse a sentence in 14-30% of their pairs."""
    if not texts or len(texts[0]) < 2:
        return None
    from networkx.utils import UnionFind

    sides = [[" ".join(side.lower().split()) for side in t] for t in texts]
    uf = UnionFind()
    for row in sides:
        uf.union(*row)
    number: dict[str, int] = {}
    groups = [number.setdefault(uf[row[0]], len(number)) for row in sides]
    distinct: dict[int, set[str]] = {}
    for g, t in zip(groups, texts):
        distinct.setdefault(g, set()).add(text_key(t))
    return groups if any(len(v) > 1 for v in distinct.values()) else None


def disjoint_holdout_split(texts: list[tuple[str, ...]], fraction: float, max_size: int, seed: int | list[int],
                           what: str = "held-out split", flag: str = "--holdout-fraction",
                           groups: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A held-out slice that shares no text with the fit split: (fit, held-out) index arrays, both sorted.

    Treebank-derived sets (SST-2) hold every sub-phrase of a sentence as its own row, so a random slice is mostly
    text the fit split already holds inside a longer row (89% of SST-2's default slice), and its score measures
    recall of training text rather than generalisation. Here the held-out rows are the whole texts (rows whose
    text, as word tokens, lies inside no other row's; one row per distinct text) among the first round(fraction * N)
    rows of a permutation from `seed` (or the first whole text after them), at most `max_size` of them. Every other
    row whose text lies inside a held-out text (its sub-phrases, its duplicates) leaves the fit split. On data
    without nested rows this is the random split less the duplicates of held-out rows.

    Sentence pairs that share a sentence (`sentence_groups`: a premise with its hypotheses) are held out together,
    a whole group at a time in a permutation of the groups from `seed`, until the slice holds round(fraction * N)
    rows (at most `max_size`): otherwise 97% of MNLI's held-out pairs would share their premise with fit pairs and
    score about a point above dev. Groups are drawn with equal odds whatever their size, so every row is about as
    likely to be held out as any other: drawn through a row, a group's odds would grow with its size, and QQP's
    held-out pairs came from groups of 15 pairs on average against 2.8, 59% of them duplicates against 37%. A group
    larger than a tenth of the slice, or than the room left in it, stays in the fit split (a stock sentence paired
    with hundreds of others would fill the slice alone); where such groups leave less than half the slice, pairs are
    held out one at a time instead, with a warning. `what` names the split in the log line, `flag` the option that
    sets `fraction` in the errors; `groups`: `sentence_groups(texts)` where the caller has it already (None: found
    here).
    """
    if not 0 < fraction < 1:
        raise AdabertError(f"{flag}: expected a number in (0, 1), got {fraction}")
    n = len(texts)
    if n < 2:
        return np.arange(n), np.arange(0)
    padded = [f" {text_key(t)} " for t in texts]
    tokens = [set(p.split()) for p in padded]
    postings: dict[str, list[int]] = {}
    for i, toks in enumerate(tokens):
        for t in toks:
            postings.setdefault(t, []).append(i)

    def whole(i: int) -> bool:
        rarest = min(tokens[i], key=lambda t: len(postings[t]))
        return not any(padded[i] in padded[j] and padded[i] != padded[j] for j in postings[rarest])

    held: list[int] = []
    seen: set[str] = set()
    scan = max(1, int(round(fraction * n)))
    groups = groups if groups is not None else sentence_groups(texts)
    held_groups: set[int] = set()
    if groups is not None:
        members: dict[int, list[int]] = {}
        for i, g in enumerate(groups):
            members.setdefault(g, []).append(i)
        target = min(scan, max_size)
        largest = max(1, target // 10)
        for g in np.random.default_rng(seed).permutation(len(members)).tolist():
            if len(held) >= target:
                break
            texts_in: dict[str, int] = {}
            for j in members[g]:
                if whole(j):
                    texts_in.setdefault(padded[j], j)
            if texts_in and len(texts_in) <= min(largest, target - len(held)):
                held += texts_in.values()
                held_groups.add(g)
        if len(held) < target / 2:
            log.warning("%s: the pairs' shared sentences join them into groups too large for a held-out slice of %d "
                        "(%d pairs fit); holding out pairs one at a time, so held-out pairs may share a sentence "
                        "with fit pairs", what, target, len(held))
            groups, held, held_groups = None, [], set()
    if groups is None:
        order = np.random.default_rng(seed).permutation(n).tolist()
        for k, i in enumerate(order):
            if (k >= scan and held) or len(held) == max_size:  # past the scan only until a first whole text is found
                break
            if padded[i] not in seen and whole(i):
                held.append(i)
                seen.add(padded[i])
    held_postings: dict[str, list[int]] = {}
    for i in held:
        for t in tokens[i]:
            held_postings.setdefault(t, []).append(i)
    longest = max(len(padded[i]) for i in held)

    def inside_held(i: int) -> bool:
        if groups is not None and groups[i] in held_groups:
            return True
        if len(padded[i]) > longest:
            return False
        lists = []
        for t in tokens[i]:
            if t not in held_postings:
                return False
            lists.append(held_postings[t])
        return any(padded[i] in padded[j] for j in min(lists, key=len))

    held_set = set(held)
    fit = np.array([i for i in range(n) if i not in held_set and not inside_held(i)], dtype=np.int64)
    if len(fit) < (n - len(held)) / 2:
        raise AdabertError(f"--holdout-split disjoint: the {len(held)} held-out texts hold {n - len(held) - len(fit)} "
                           f"of the other {n - len(held)} rows inside them (duplicates or sub-phrases), which would "
                           f"leave the fit split; use --holdout-split random or a smaller {flag}")
    if groups is not None:
        log.info("%s: %d sentence pairs held out in %d groups that share a sentence, none with the other %d rows",
                 what, len(held), len(held_groups), len(fit))
    elif len(fit) + len(held) < n:  # silent where nothing is nested, as the random split
        log.info("%s: %d whole texts of %d rows held out; %d rows inside them left out of the rest", what, len(held),
                 n, n - len(held) - len(fit))
    return fit, np.array(sorted(held), dtype=np.int64)


def file_paths(task: TaskSpec, data_dir: Path | None) -> tuple[Path, Path]:
    """Paths of the train and dev files: inside `data_dir` for GLUE tasks, as given for custom ones."""
    if data_dir is None:
        return Path(task.train_file), Path(task.dev_file)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise AdabertError(f"--data-dir: {data_dir}: no such folder")
    return data_dir / task.train_file, data_dir / task.dev_file


def load_task_data(task: TaskSpec, data_dir: Path | None, holdout_fraction: float = 0.1,
                   holdout_max: int = 2000, seed: int = 0, holdout_kind: str = "disjoint",
                   train_rows: list[tuple[int, dict[str, str]]] | None = None) -> TaskData:
    """Read train and dev, and split the held-out slice off train (it depends on the seed, not on order of use):
    `holdout_kind` "random" (`holdout_split`) or "disjoint" (`disjoint_holdout_split`). `train_rows`: the training
    file's rows where the caller has read them already (`read_rows`), so that it is read, and warned about, once."""
    if holdout_kind not in HOLDOUT_SPLITS:
        raise AdabertError(f"--holdout-split: expected one of {', '.join(HOLDOUT_SPLITS)}, got {holdout_kind!r}")
    train_path, dev_path = file_paths(task, data_dir)
    train = read_split(task, train_path, "train", train_rows)
    dev = read_split(task, dev_path, "dev")
    groups = None
    if holdout_kind == "disjoint":
        groups = sentence_groups(train.texts)
        train_idx, holdout_idx = disjoint_holdout_split(train.texts, holdout_fraction, holdout_max, seed, groups=groups)
    else:
        train_idx, holdout_idx = holdout_split(len(train), holdout_fraction, holdout_max, seed)
    # the random split's fingerprint leaves the kind out, so runs made before the option keep matching; pairs held
    # out by shared sentence are named, so runs made before that changed their split do not match
    kind = [holdout_kind] if holdout_kind != "random" else []
    if groups is not None:
        kind.append("pairs by sentence group, groups drawn alike")
    fp = hash_files([train_path, dev_path],
                    extra=hash_obj([task.describe(), holdout_fraction, holdout_max, seed, *kind]))
    return TaskData(task, train, dev, train_idx, holdout_idx, fp, holdout_kind, holdout_fraction, holdout_max, seed)
