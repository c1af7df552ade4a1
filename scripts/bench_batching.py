"""Training-step time of a student with length-grouped batches against plain random batches, in one process.

    python scripts/bench_batching.py --arch runs/s/sst2-v2/arch.json --task sst2 \
        --data-dir ../shared/data/glue/SST-2 --teacher ../shared/teachers/minilm-l6-sst2

For each batching (`epoch_batches` with group_by_length true / false) it counts the padded tokens of one whole
epoch of the fit split, then times `--steps` training steps (forward of every head, the task loss on each, backward,
AdamW) on that epoch's first batches; the two batchings alternate for `--repeats` rounds and the medians are
reported, with their ratio. Accuracy is not measured here: that needs finetune runs (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from adabert.core.losses import hard_loss
from adabert.core.runtime import set_seed, set_threads
from adabert.data.dataset import load_task_data
from adabert.data.encoding import epoch_batches, student_batch
from adabert.data.tasks import get_task
from adabert.nas.arch import load_arch
from adabert.students.student import Student
from adabert.teacher.bundle import TaskBundle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=Path, required=True)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--output", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    set_threads(args.threads)
    task = get_task(args.task)
    bundle = TaskBundle(load_task_data(task, args.data_dir), args.teacher)
    enc = bundle.encoded("fit", args.max_length)
    lengths = enc.lengths()
    arch = load_arch(args.arch)
    word, pos = bundle.tables
    labels = torch.as_tensor(bundle.data.fit.labels)
    device = torch.device("cpu")
    result: dict = {"arch": arch.genotype(), "task": task.name, "examples": len(enc), "batch_size": args.batch_size,
                    "steps": args.steps, "repeats": args.repeats, "threads": args.threads,
                    "real_tokens": int(lengths.sum())}
    plans = {}
    for group in (True, False):
        batches = epoch_batches(lengths, args.batch_size, seed=0, epoch=0, group_by_length=group)
        name = "grouped" if group else "plain"
        plans[name] = batches[: args.steps]
        result[f"{name}_padded_tokens"] = int(sum(lengths[b].max() * len(b) for b in batches))
    times: dict[str, list[float]] = {name: [] for name in plans}
    for _ in range(args.repeats):
        for name, batches in plans.items():
            set_seed(0)
            model = Student.from_teacher_tables(arch, word, pos, task.num_labels, task.is_pair).to(device)
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
            t0 = time.perf_counter()
            for rows in batches:
                heads = model.forward_all(*student_batch(enc, rows, device))
                loss = sum(hard_loss(h, labels[rows]) for h in heads)
                opt.zero_grad()
                loss.backward()
                opt.step()
            times[name].append((time.perf_counter() - t0) / len(batches))
    for name, ts in times.items():
        result[f"{name}_s_per_step"] = statistics.median(ts)
    result["padding_ratio"] = result["plain_padded_tokens"] / result["grouped_padded_tokens"]
    result["step_time_ratio"] = result["plain_s_per_step"] / result["grouped_s_per_step"]
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
