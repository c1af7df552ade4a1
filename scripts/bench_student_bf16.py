"""Student training in float32 against bfloat16 autocast on the CPU (`--bf16` of `adabert finetune` and
`adabert search`), in one process; then, optionally, the finetuned dev score in each precision.

    python scripts/bench_student_bf16.py --arch runs/arch.json --teacher ../shared/teachers/minilm-l6-sst2 \
        --out runs/bench_student_bf16 [--finetune-seeds 3 --task sst2 --data-dir ../shared/data/glue/SST-2 \
        --probes runs/probes/sst2 --finetune-args "--epochs 1"]

Timing: a student of `--arch` and the supernet of its search space (a random path per step, every depth), each over
embedding tables of the teacher's shape, take AdamW training steps (forward, losses of every head, backward,
step) on random batches of `--batch-size` x `--length` tokens, single sentences and pairs; the two precisions
alternate for `--repeats` rounds of `--steps` steps and the medians and their ratio are reported.
Accuracy (`--finetune-seeds N`): `adabert finetune` of `--arch` with and without `--bf16` for seeds 0..N-1, the dev
metric's mean +- std and the wall times of each precision.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import run_adabert
from transformers import AutoConfig

from adabert.core.runtime import autocast, set_threads
from adabert.nas.arch import load_arch
from adabert.nas.supernet import Sample, Supernet
from adabert.students.student import Student


def step_seconds(model: torch.nn.Module, run, bf16: bool, batch: int, length: int, steps: int) -> float:
    """Mean seconds of one training step; `run(ids, mask)` -> the heads' logits."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.randint(1000, 30000, (batch, length))
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[:, int(0.75 * length):] = False  # a quarter of padding, as length-grouped batches leave little more
    y = torch.randint(0, 2, (batch,))
    t0 = time.perf_counter()
    for _ in range(steps):
        with autocast(torch.device("cpu"), cpu=bf16):
            heads = run(ids, mask)
        loss = sum(F.cross_entropy(h.float(), y) for h in heads)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def timing(args: argparse.Namespace) -> dict:
    arch = load_arch(args.arch)
    conf = AutoConfig.from_pretrained(args.teacher)
    word = torch.randn(conf.vocab_size, conf.hidden_size) * 0.05
    pos = torch.randn(conf.max_position_embeddings, conf.hidden_size) * 0.05
    out = {}
    for pair in (False, True):
        torch.manual_seed(0)
        student = Student.from_teacher_tables(arch, word, pos, 2, pair).train()
        supernet = Supernet(arch.space, word, pos, 2, pair=pair).train()
        n_ops, edges = len(arch.space.ops), arch.space.num_edges
        models = {
            "student": (student, lambda ids, mask: student.forward_all(ids, mask, ids, mask)),
            "supernet": (supernet, lambda ids, mask: supernet(
                ids, mask, ids, mask, Sample(torch.randint(0, n_ops, (edges,)).tolist(), arch.space.max_cells))),
        }
        for name, (model, run) in models.items():
            for bf16 in (False, True):  # warm-up
                step_seconds(model, run, bf16, args.batch_size, args.length, 2)
            times: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.repeats):
                for bf16 in (False, True):
                    times[bf16].append(step_seconds(model, run, bf16, args.batch_size, args.length, args.steps))
            fp32, bf16 = statistics.median(times[False]), statistics.median(times[True])
            key = f"{name}_{'pair' if pair else 'single'}"
            out[key] = {"float32_ms": 1000 * fp32, "bf16_ms": 1000 * bf16, "speedup": fp32 / bf16}
            print(f"{key}: float32 {1000 * fp32:.1f} ms, bf16 {1000 * bf16:.1f} ms per step, "
                  f"{fp32 / bf16:.2f}x", flush=True)
    return out


def accuracy(args: argparse.Namespace) -> dict:
    common = ["finetune", "--arch", args.arch, "--teacher", args.teacher, "--probes", args.probes, "--task",
              args.task, "--data-dir", args.data_dir, "--threads", args.threads, "--force",
              *args.finetune_args.split()]
    out: dict = {}
    for bf16 in (False, True):
        runs = []
        for seed in range(args.finetune_seeds):
            folder = args.out / f"{'bf16' if bf16 else 'float32'}-s{seed}"
            secs = run_adabert([*common, "--seed", seed, "--output-dir", folder, *(["--bf16"] if bf16 else [])])
            dev = json.loads((folder / "metrics.json").read_text())["dev"]
            runs.append({"seed": seed, "dev": dev, "seconds": secs})
        scores = [r["dev"][args.metric] for r in runs]
        out["bf16" if bf16 else "float32"] = {
            "runs": runs, "mean": statistics.mean(scores),
            "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
            "mean_seconds": statistics.mean(r["seconds"] for r in runs)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=Path, required=True)
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_student_bf16"))
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--length", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--finetune-seeds", type=int, default=0, help="0: timing only")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--metric", default="accuracy", help="the dev metric to compare")
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--probes", type=Path)
    ap.add_argument("--finetune-args", default="--epochs 1", help="extra options of every finetune")
    args = ap.parse_args()
    set_threads(args.threads)
    result = {"threads": args.threads, "batch": [args.batch_size, args.length], "timing": timing(args)}
    if args.finetune_seeds:
        result["finetune"] = accuracy(args)
        for name, r in result["finetune"].items():
            print(f"finetune {name}: dev {args.metric} {r['mean']:.2f} +- {r['std']:.2f} over {len(r['runs'])} seeds, "
                  f"{r['mean_seconds']:.0f} s a run")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
