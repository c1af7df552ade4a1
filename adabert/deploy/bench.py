"""`adabert bench`: size and speed of the student against its teacher and a BERT-base-shaped model.

All models run in one process on the same random inputs (latency does not depend on weights, so the
BERT-base-shaped model has random weights): for every batch size, sequence length and thread count, a warm-up
and then repeated forwards (at least `min_repeats`, and until `min_seconds` have passed); the median is
reported. Inputs are full-length single sequences (no padding). FLOPs are counted with
`torch.utils.flop_counter` at batch 1.
"""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from adabert.core.errors import AdabertError
from adabert.students.load import LoadedStudent, load_student


@dataclass
class BenchConfig:
    batch_sizes: tuple[int, ...] = (1, 32)
    lengths: tuple[int, ...] = (64, 128)
    threads: tuple[int, ...] = (1, 2)
    min_repeats: int = 5
    min_seconds: float = 1.0
    warmup: int = 2

    def __post_init__(self) -> None:
        for name in ("batch_sizes", "lengths", "threads"):
            if not getattr(self, name) or any(v < 1 for v in getattr(self, name)):
                raise AdabertError(f"--{name.replace('_', '-')}: expected positive integers")


class _HF(nn.Module):
    """A Hugging Face classifier called as (ids, mask) -> logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=mask).logits


def bert_base_shaped(num_labels: int) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return _HF(BertForSequenceClassification(BertConfig(num_labels=num_labels)))


def median_ms(fn, cfg: BenchConfig) -> float:
    for _ in range(cfg.warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < cfg.min_repeats or time.perf_counter() - start < cfg.min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def flops(module: nn.Module, length: int, vocab: int) -> int:
    ids = torch.randint(1, vocab, (1, length))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(ids, torch.ones_like(ids))
    return int(counter.get_total_flops())


def weight_megabytes(module: nn.Module) -> float:
    """Size of the module's serialised weights in MB (quantised weights as stored: int8 plus scales)."""
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)  # our own in-memory model, to count bytes; never loaded back
    return buffer.getbuffer().nbytes / 1e6


def run_bench(models: dict[str, nn.Module], vocab: int, cfg: BenchConfig,
              positions: dict[str, int | None] | None = None,
              compiled: dict[str, tuple[str, Callable]] | None = None) -> dict:
    """models: name -> module called as (ids [B, T], mask [B, T]) -> logits; positions: name -> the longest input
    it reads (None or absent: any), checked against `cfg.lengths` first; compiled: name -> (the model's name it was
    compiled from, a callable like the models), timed beside them, with that model's counts (same weights). Returns
    params (float parameters: int8-quantised layers hold packed weights instead and are not counted), weight MB,
    FLOPs (float ops only) and timings."""
    for name, limit in (positions or {}).items():
        if limit is not None and max(cfg.lengths) > limit:
            raise AdabertError(f"--lengths: {max(cfg.lengths)} tokens, but the {name} reads at most {limit} "
                               "positions")
    result: dict = {"models": {}, "timings": []}
    runners: dict[str, Callable] = {}
    for name, m in models.items():
        m.eval().requires_grad_(False)  # the FLOP counter cannot track a parameter fed in as an input (DeBERTa)
        result["models"][name] = {"params": sum(p.numel() for p in m.parameters()),
                                  "weight_mb": weight_megabytes(m),
                                  "flops": {str(length): flops(m, length, vocab) for length in cfg.lengths}}
        runners[name] = m
        for c, (source, fn) in (compiled or {}).items():  # listed and timed right after their source
            if source == name:
                result["models"][c], runners[c] = {**result["models"][name], "compiled_from": name}, fn
    old_threads = torch.get_num_threads()
    try:
        for threads in cfg.threads:
            torch.set_num_threads(threads)
            for batch in cfg.batch_sizes:
                for length in cfg.lengths:
                    g = torch.Generator().manual_seed(0)
                    ids = torch.randint(1, vocab, (batch, length), generator=g)
                    mask = torch.ones_like(ids)
                    row = {"threads": threads, "batch": batch, "length": length, "latency_ms": {}}
                    for name, m in runners.items():
                        with torch.inference_mode():
                            row["latency_ms"][name] = median_ms(lambda: m(ids, mask), cfg)
                    row["throughput_per_s"] = {n: batch * 1e3 / v for n, v in row["latency_ms"].items()}
                    result["timings"].append(row)
    finally:
        torch.set_num_threads(old_threads)
    return result


def one_sequence_inputs(student: LoadedStudent, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The student's inputs for one sequence: a pair student reads it as both sentences, the joint (transformer)
    student gets token type 0."""
    if student.encoding == "joint":
        return ids, mask, torch.zeros_like(ids)
    return (ids, mask, ids, mask) if student.task.is_pair else (ids, mask)


class _OneSequence(nn.Module):
    """Any loaded student called as (ids, mask) (`one_sequence_inputs`)."""

    def __init__(self, student: LoadedStudent) -> None:
        super().__init__()
        self.student = student
        self.module = student.module

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.module(*one_sequence_inputs(self.student, ids, mask))


def load_aoti_runner(package: Path, student: LoadedStudent, atol: float = 1e-4) -> Callable:
    """An AOTInductor package (`adabert export --format aoti`) called as (ids, mask) -> logits; it must reproduce
    the student's outputs on a batch of random inputs (a package of another student is refused)."""
    from torch._inductor import aoti_load_package

    if not Path(package).is_file():
        raise AdabertError(f"--aoti: {package}: no such file (expected model.aoti.pt2 from `adabert export --format "
                           "aoti`)")
    if not zipfile.is_zipfile(package):  # checked first: torch logs a warning before it fails on such a file
        raise AdabertError(f"--aoti: {package}: not an AOTInductor package (not a zip archive)")
    try:
        runner = aoti_load_package(str(package))
    except Exception as e:  # torch raises RuntimeError, ValueError or zipfile errors for a file it cannot read
        raise AdabertError(f"--aoti: {package}: not an AOTInductor package this machine can load "
                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    check = student.random_inputs(3, min(21, student.positions or 21), seed=3)
    with torch.no_grad():
        try:
            diff = float((runner(*check) - student.module(*check)).abs().max())
        except Exception as e:  # another kind of student: other inputs or shapes
            raise AdabertError(f"--aoti: {package} does not take this student's inputs ({type(e).__name__}); "
                               "was it exported from this student?") from None
    if diff > atol:
        raise AdabertError(f"--aoti: {package}: outputs differ from the student's by {diff:.2e}; was it exported "
                           "from this student?")
    return lambda ids, mask: runner(*one_sequence_inputs(student, ids, mask))


def bench_student(student_dir: Path, teacher: str | None, cfg: BenchConfig, bert_base: bool = True,
                  int8: bool = False, aoti: Path | None = None) -> dict:
    """With `int8`, the student's dynamically quantised copy (`deploy.quantize`) is timed beside it; with `aoti`,
    that AOTInductor package of the student (`load_aoti_runner`), as "student-aoti"."""
    student = load_student(Path(student_dir))
    models: dict[str, nn.Module] = {"student": _OneSequence(student)}
    positions = {"student": student.positions}
    compiled = {"student-aoti": ("student", load_aoti_runner(aoti, student))} if aoti else None
    if int8:
        from adabert.deploy.quantize import int8_dynamic

        models["student-int8"] = int8_dynamic(models["student"])
    if teacher:
        from adabert.teacher.model import load_classifier, teacher_tables

        hf = load_classifier(teacher)
        models["teacher"], positions["teacher"] = _HF(hf), teacher_tables(hf)[1].shape[0]
    if bert_base:
        models["bert-base-shaped"] = bert_base_shaped(student.task.num_labels)
    result = run_bench(models, student.vocab_size, cfg, positions, compiled)
    result["student_kind"] = student.kind
    return result


def format_bench(result: dict) -> str:
    names = list(result["models"])
    lines = [f"{'model':>18} {'params':>12} {'weights MB':>10} " + " ".join(f"{'GFLOPs@' + k:>11}" for k in
                                                                         result["models"][names[0]]["flops"])]
    for n in names:
        m = result["models"][n]
        lines.append(f"{n:>18} {m['params']:>12,} {m['weight_mb']:10.2f} "
                     + " ".join(f"{v / 1e9:11.3f}" for v in m["flops"].values()))
    lines.append("")
    head = f"{'threads':>7} {'batch':>5} {'len':>4} " + " ".join(f"{n + ' ms':>22}" for n in names)
    others = [n for n in names if n != "student"]
    head += " " + " ".join(f"{n + '/student':>26}" for n in others)
    lines.append(head)
    for r in result["timings"]:
        lat = r["latency_ms"]
        lines.append(f"{r['threads']:>7} {r['batch']:>5} {r['length']:>4} "
                     + " ".join(f"{lat[n]:22.2f}" for n in names) + " "
                     + " ".join(f"{lat[n] / lat['student']:25.1f}x" for n in others))
    return "\n".join(lines)
