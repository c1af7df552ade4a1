"""Teacher forward passes in float32 against bfloat16 (`--bf16` of `adabert probes` and `adabert augment`), in one
process.

    python scripts/bench_teacher_bf16.py --task sst2 --data-dir ../shared/data/glue/SST-2 \
        --teacher ../shared/teachers/minilm-l6-sst2

Times `teacher_outputs` (with the per-layer hidden states, as the probes and augment passes run it) over the first
`--examples` training examples in each precision, alternating the two for `--repeats` rounds, and reports the
medians and their ratio. Then runs both precisions over the whole dev set and reports the teacher's dev metric in
each, the share of dev examples given the same label, the largest logit difference and the smallest cosine
similarity of the per-layer sentence vectors (what the probes are trained on).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from adabert.core.runtime import set_threads
from adabert.data.dataset import load_task_data
from adabert.data.encoding import encode_joint
from adabert.data.metrics import task_metrics
from adabert.data.tasks import get_task
from adabert.teacher.model import for_inference, load_classifier, load_tokenizer, teacher_outputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--examples", type=int, default=4096)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--output", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    set_threads(args.threads)
    cpu = torch.device("cpu")
    data = load_task_data(get_task(args.task), args.data_dir)
    tok = load_tokenizer(str(args.teacher))
    models = {"float32": for_inference(load_classifier(str(args.teacher)), cpu),
              "bfloat16": for_inference(load_classifier(str(args.teacher)), cpu, bf16=True)}
    sample = encode_joint(tok, data.train.subset(list(range(min(args.examples, len(data.train))))), args.max_length)
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            t0 = time.perf_counter()
            teacher_outputs(model, sample, cpu, hidden=True, desc=name)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    dev = encode_joint(tok, data.dev, args.max_length)
    out = {k: teacher_outputs(m, dev, cpu, hidden=True, desc=f"dev {k}") for k, m in models.items()}
    (ref, ref_f), (low, low_f) = out["float32"], out["bfloat16"]
    labels = data.dev.labels
    result = {
        "examples_timed": len(sample), "threads": args.threads, "repeats": args.repeats,
        "seconds_median": med, "speedup": med["float32"] / med["bfloat16"],
        "examples_per_second": {k: len(sample) / v for k, v in med.items()},
        "dev_metrics": {k: task_metrics(data.task, o[0].numpy(), labels) for k, o in out.items()},
        "dev_same_label": float((ref.argmax(-1) == low.argmax(-1)).float().mean() * 100),
        "dev_max_logit_diff": float((ref - low).abs().max()),
        "dev_min_feature_cosine": float(torch.nn.functional.cosine_similarity(ref_f.float(), low_f.float(),
                                                                              dim=-1).min()),
    }
    print(json.dumps(result, indent=2))
    if args.output:
        args.output.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
