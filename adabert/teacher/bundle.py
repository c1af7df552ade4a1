"""What the search, finetune and distill stages receive from the data and teacher stages: one `TaskBundle`.

A bundle names its inputs (the task data, the teacher, and optionally the folders of `adabert probes` and
`adabert augment`) and loads each part the first time a stage asks for it, once: the teacher classifier and its
frozen word [V, D] and position [P, D] tables, the tokenizer, the cached probe and teacher logits, the augmented
text, and the encoded splits. A stage module therefore holds its algorithm and nothing else; a study that
finetunes thirty students reads the teacher and tokenises the data once; a stage that finds its output up to
date reads nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Literal, TypeVar

import numpy as np
import torch
from torch import nn

from adabert.core.errors import AdabertError
from adabert.core.fileio import META, hash_files
from adabert.data.dataset import Dataset, TaskData
from adabert.data.encoding import Encoded, encode_joint, encode_separate
from adabert.data.tasks import TaskSpec
from adabert.teacher.augment import Augmented, load_augmented
from adabert.teacher.model import (check_teacher_for_task, load_classifier, load_tokenizer, model_source_fingerprint,
                                   teacher_tables)
from adabert.teacher.probes import ProbeLogits, load_probe_logits

T = TypeVar("T")
Split = Literal["fit", "holdout", "dev"]


@dataclass(eq=False)
class TaskBundle:
    """data: the task's splits; teacher: the fine-tuned teacher (folder or hub id); probes_dir / augment_dir:
    the outputs of `adabert probes` / `adabert augment` for this data and teacher (None: not used)."""

    data: TaskData
    teacher: str
    probes_dir: Path | None = None
    augment_dir: Path | None = None
    _cache: dict = field(default_factory=dict, repr=False)      # parts that depend on the data
    _teacher: dict = field(default_factory=dict, repr=False)    # parts that do not: shared by every variant

    def __post_init__(self) -> None:
        self.teacher = str(self.teacher)
        self.probes_dir = Path(self.probes_dir) if self.probes_dir is not None else None
        self.augment_dir = Path(self.augment_dir) if self.augment_dir is not None else None

    def _once(self, key: object, make: Callable[[], T], cache: dict | None = None) -> T:
        cache = self._cache if cache is None else cache
        if key not in cache:
            cache[key] = make()
        return cache[key]

    @property
    def task(self) -> TaskSpec:
        return self.data.task

    # -- fingerprints (what a stage's meta.json records) ------------------------------------------------------
    @property
    def teacher_fingerprint(self) -> str:
        return self._once("fingerprint", lambda: model_source_fingerprint(self.teacher), self._teacher)

    def inputs(self) -> dict[str, str]:
        """Fingerprints of the data and the teacher."""
        return {"data": self.data.fingerprint, "teacher": self.teacher_fingerprint}

    @staticmethod
    def folder_fingerprint(folder: Path | None) -> str:
        """Fingerprint of a probes or augment folder (its meta.json); '' when not given."""
        return hash_files([Path(folder) / META]) if folder is not None else ""

    # -- the teacher ------------------------------------------------------------------------------------------
    @property
    def classifier(self) -> nn.Module:
        """The teacher, frozen, in eval mode, checked against the task (labels, regression)."""
        def load() -> nn.Module:
            model = load_classifier(self.teacher)
            check_teacher_for_task(model, self.teacher, self.task)
            return model.eval().requires_grad_(False)
        return self._once("classifier", load, self._teacher)

    @property
    def tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's word [V, D] and position [P, D] embedding tables (frozen)."""
        return teacher_tables(self.classifier)

    @property
    def tokenizer(self):
        return self._once("tokenizer", lambda: load_tokenizer(self.teacher), self._teacher)

    # -- cached teacher outputs -------------------------------------------------------------------------------
    @property
    def probes(self) -> ProbeLogits | None:
        """Probe logits [N, L+1, C] and teacher logits [N, C] of every train and dev example (None without
        probes_dir); refused when made for other data or another teacher."""
        if self.probes_dir is None:
            return None
        return self._once("probes", lambda: load_probe_logits(self.probes_dir, self.data, self.teacher))

    def require_probes(self, why: str) -> ProbeLogits:
        if self.probes is None:
            raise AdabertError(f"--probes: required {why} (the folder of `adabert probes`)")
        return self.probes

    @property
    def augmented(self) -> Augmented | None:
        """The augmented training text with the teacher's logits on it (None without augment_dir)."""
        if self.augment_dir is None:
            return None
        return self._once("augmented", lambda: load_augmented(self.augment_dir, self.data, self.teacher))

    # -- encoded splits ---------------------------------------------------------------------------------------
    def split(self, which: Split, limit: int = 0, augmented: bool = False) -> Dataset:
        """'fit': the training rows minus the held-out slice (the first `limit` of them when > 0), followed by
        the augmented text when `augmented` and the bundle has some; 'holdout'; 'dev'."""
        if which == "holdout":
            return self.data.holdout
        if which == "dev":
            return self.data.dev
        fit = self.data.train.subset(self.fit_rows(limit))
        return self.augmented.after(fit) if augmented and self.augmented is not None else fit

    def fit_rows(self, limit: int = 0) -> np.ndarray:
        """Row indices (into the train split, which the cached logits follow) of the fit examples used."""
        return self.data.train_idx[:limit] if limit else self.data.train_idx

    def encoded(self, which: Split, max_length: int, limit: int = 0, augmented: bool = False,
                joint: bool = False) -> Encoded:
        """`split(which, limit, augmented)` tokenised, each sentence on its own (the student's inputs) or, with
        `joint`, as the teacher reads it ([CLS] a [SEP] b [SEP]); cached per arguments."""
        def encode() -> Encoded:
            ds = self.split(which, limit, augmented)
            return (encode_joint if joint else encode_separate)(self.tokenizer, ds, max_length)
        augmented = augmented and self.augment_dir is not None and which == "fit"
        return self._once(("encoded", which, max_length, limit if which == "fit" else 0, augmented, joint), encode)

    # -- variants ---------------------------------------------------------------------------------------------
    def with_fit_limit(self, n: int) -> TaskBundle:
        """The same bundle with the fit split cut to its first n rows (0: unchanged), as its own data (its own
        fingerprint). The teacher is shared; the cached logits are read (checked against the full data) and
        shared, since their rows follow the train split, which is unchanged."""
        if not n:
            return self
        tag = hashlib.sha256(f"{self.data.fingerprint}:first {n}".encode()).hexdigest()[:16]
        data = replace(self.data, train_idx=self.data.train_idx[:n], fingerprint=tag)
        other = TaskBundle(data, self.teacher, self.probes_dir, self.augment_dir, _teacher=self._teacher)
        other._cache.update(probes=self.probes, augmented=self.augmented)
        return other

    def with_holdout_fraction(self, fraction: float) -> TaskBundle:
        """The same bundle with the held-out slice widened to `fraction` (`TaskData.widened`; unchanged when not
        larger), as its own data. The teacher and the cached logits are shared (their rows follow the train split);
        the augmented text keeps the copies of the rows still fit."""
        data, kept = self.data.widened(fraction)
        if data is self.data:
            return self
        other = TaskBundle(data, self.teacher, self.probes_dir, self.augment_dir, _teacher=self._teacher)
        augmented = self.augmented
        other._cache.update(probes=self.probes, augmented=augmented.of_rows(kept) if augmented is not None else None)
        return other

    def with_augment(self, augment_dir: Path | None) -> TaskBundle:
        """The same data and teacher (shared) with other augmented text (None: none)."""
        other = TaskBundle(self.data, self.teacher, self.probes_dir, augment_dir, _teacher=self._teacher)
        if "probes" in self._cache:
            other._cache["probes"] = self._cache["probes"]
        return other
