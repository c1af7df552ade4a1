"""How steady the latency cost table is: the ops of a space timed one after another (each in its own block of
calls, as the cost model did before) against timed in turn, round-robin (`costs.interleaved_median_ms`, as it
does now), over repeated measurements in one process, the two ways alternating.

    python scripts/bench_cost_model.py --space adabert --repeats 12 --threads 2
    python scripts/bench_cost_model.py --student runs/study/qqp-g/runs/searched/seed0 --repeats 8


Each measurement times every non-zero op of the space at batch 1 (`--pair`: 2) and the space's `cost_length`,
5 warm-up calls and 30 timed ones per op, as the cost model does. Reported per way: the spread (coefficient of
variation over the repeats) of each op's share of the summed op times, which is what decides the searched
architecture under a latency budget, and of the summed time itself.

With `--student FOLDER` (a saved searched student) it checks the cost model's prediction for that student
against its measured forward instead (the study's latency check), the two ways alternating: the student timed
after the table ("apart", as the study did) and in the same rounds as the table's parts ("together",
`costs.latency_table(..., alongside=...)`, as it does now). Reported: the relative error predicted / measured - 1
of every repeat.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from adabert.nas.costs import interleaved_median_ms, latency_table
from adabert.nas.ops import build_op
from adabert.nas.search_space import load_search_space


def check_student(folder: Path, repeats: int) -> None:
    """The cost model's relative error for the student in `folder`, timed apart from and together with the table."""
    from adabert.study import student_forward
    from adabert.students.student import Student

    student, cfg = Student.from_pretrained(folder)
    space, pair, cpu = student.arch.space, bool(cfg["pair"]), torch.device("cpu")
    forward = student_forward(folder, space.cost_length)
    errors: dict[str, list[float]] = {"apart": [], "together": []}
    for _ in range(repeats):
        model, _ = latency_table(space, cfg["num_labels"], pair, cpu)
        with torch.no_grad():
            measured = interleaved_median_ms([forward], cpu)[0]
        errors["apart"].append(model.arch_cost(student.arch) / measured - 1)
        model, [measured] = latency_table(space, cfg["num_labels"], pair, cpu, alongside=[forward])
        errors["together"].append(model.arch_cost(student.arch) / measured - 1)
    for way, e in errors.items():
        print(f"{way:>8}: predicted / measured - 1 = {', '.join(f'{x:+.1%}' for x in e)}; "
              f"mean {np.mean(e):+.1%}, spread (std) {np.std(e):.1%}, worst {max(e, key=abs):+.1%}")
    print(json.dumps({"student": str(folder), "genotype": student.arch.genotype(), "repeats": repeats, **errors}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="adabert")
    ap.add_argument("--repeats", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pair", action="store_true")
    ap.add_argument("--student", type=Path, help="a saved searched student: check the prediction for it instead")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.student:
        return check_student(args.student, args.repeats)
    space = load_search_space(args.space)
    cpu = torch.device("cpu")
    x = torch.randn(2 if args.pair else 1, space.cost_length, space.hidden_size)
    mask = torch.ones(x.shape[:2], dtype=torch.bool)
    names = [o for o in space.ops if o != "zero"]
    ops = [build_op(o, space.hidden_size).eval() for o in names]
    fns = [lambda op=op: op(x, mask) for op in ops]
    tables: dict[str, list[list[float]]] = {"block": [], "interleaved": []}
    with torch.no_grad():
        for _ in range(args.repeats):
            tables["block"].append([interleaved_median_ms([fn], cpu)[0] for fn in fns])  # one op at a time
            tables["interleaved"].append(interleaved_median_ms(fns, cpu))
    result = {}
    for way, rows in tables.items():
        t = np.array(rows)
        share = t / t.sum(1, keepdims=True)
        cv = share.std(0) / share.mean(0)
        result[way] = {"share_cv": dict(zip(names, cv.round(3).tolist())), "mean_share_cv": float(cv.mean()),
                       "total_ms": t.sum(1).round(3).tolist(), "total_cv": float(t.sum(1).std() / t.sum(1).mean())}
        print(f"{way:>11}: op shares vary by {cv.mean():.1%} on average (worst {names[int(cv.argmax())]} "
              f"{cv.max():.1%}); summed op time {t.sum(1).mean():.2f} ms +- {result[way]['total_cv']:.1%}")
    print(json.dumps({"space": args.space, "pair": args.pair, "threads": args.threads, "repeats": args.repeats,
                      **result}, indent=1))


if __name__ == "__main__":
    main()
