"""Inference latency of derived students: every cell's head (the old `forward`, `forward_all(...)[-1]`) against
the last head only (today's `forward`), beside the cost model's prediction, for random cells of a space at each
depth, single sentences and pairs.

    python scripts/bench_inference_heads.py --space adabert --depths 1 2 4 8 --threads 2 [--train]

Batch 1 (pairs: one pair), `--length` tokens, no padding. The two forwards are timed interleaved, one call each in
turn, so that the machine's load falls on both alike; medians over `--repeats` calls after a warm-up. The cost
model times its ops in the same process just before (`costs.measure_cost_model`, unit latency_ms).

With `--train`, a finetune training step instead (train mode, batch 32, cross-entropy on the last head, backward),
timed the same way: every head, as finetune ran it before, against the last head only, as it runs now without
probe or feature KD; the cost model is not asked.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from adabert.nas.arch import Arch, random_arch
from adabert.nas.costs import interleaved_median_ms, measure_cost_model
from adabert.nas.embedding import TableEmbedding
from adabert.nas.search_space import SearchSpace, load_search_space
from adabert.students.student import Student


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="adabert")
    ap.add_argument("--depths", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", action="store_true", help="time a training step instead of inference")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.train:
        train_steps(args)
        return
    space = load_search_space(args.space)
    rng = np.random.default_rng(args.seed)
    rows, cpu = [], torch.device("cpu")
    for pair in (False, True):
        model = measure_cost_model(space, "latency_ms", 2, pair)
        for depth in args.depths:
            arch, student = random_student(space, depth, pair, rng, args.seed)
            student.eval()
            ids = torch.randint(1, 30522, (1, args.length))
            ids_b = torch.randint(1, 30522, (1, args.length))
            mask = torch.ones(1, args.length, dtype=torch.bool)
            with torch.inference_mode():
                assert torch.equal(student.forward_all(ids, mask, ids_b, mask)[-1], student(ids, mask, ids_b, mask))
                every, last = interleaved_median_ms([lambda: student.forward_all(ids, mask, ids_b, mask)[-1],
                                                     lambda: student(ids, mask, ids_b, mask)], cpu, args.repeats, 10)
            rows.append({"pair": pair, "K": depth, "genotype": arch.genotype(), "every_head_ms": every,
                         "last_head_ms": last, "predicted_ms": model.arch_cost(arch)})
            r = rows[-1]
            print(f"{'pair  ' if pair else 'single'} K={depth}: every head {every:7.2f} ms | last head {last:7.2f} ms "
                  f"({every / last:.2f}x) | predicted {r['predicted_ms']:7.2f} ms "
                  f"({r['predicted_ms'] / last - 1:+.0%} of last head)", flush=True)
    print(json.dumps({"threads": args.threads, "length": args.length, "repeats": args.repeats, "rows": rows},
                     indent=1))


def random_student(space: SearchSpace, depth: int, pair: bool, rng: np.random.Generator,
                   seed: int) -> tuple[Arch, Student]:
    """A random cell of `space` at `depth` cells, as a two-class student over a BERT-sized word table."""
    arch = Arch(space, depth, random_arch(space, rng).cell)
    torch.manual_seed(seed)
    return arch, Student(arch, TableEmbedding(30522, 512, space.hidden_size, space.dropout), 2, pair,
                         space.pair_inputs == "siamese")


def train_steps(args: argparse.Namespace) -> None:
    space = load_search_space(args.space)
    rng, cpu = np.random.default_rng(args.seed), torch.device("cpu")
    for pair in (False, True):
        for depth in args.depths:
            _, student = random_student(space, depth, pair, rng, args.seed)
            student.train()
            ids, ids_b = torch.randint(1, 30522, (32, args.length)), torch.randint(1, 30522, (32, args.length))
            mask, y = torch.ones(32, args.length, dtype=torch.bool), torch.randint(0, 2, (32,))

            def step(last_only: bool) -> None:
                student.zero_grad()
                logits = student.forward_all(ids, mask, ids_b, mask, last_only=last_only)[-1]
                torch.nn.functional.cross_entropy(logits, y).backward()

            every, last = interleaved_median_ms([lambda: step(False), lambda: step(True)], cpu, args.repeats, 3)
            print(f"{'pair  ' if pair else 'single'} K={depth} train step: every head {every:7.2f} ms | last head "
                  f"{last:7.2f} ms ({every / last:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
