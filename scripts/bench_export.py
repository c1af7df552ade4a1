"""Which exported file to serve: eager PyTorch, TorchScript, torch.export (.pt2), its AOTInductor build and ONNX
Runtime, side by side.

    python scripts/bench_export.py [--threads 2] [--rounds 50] STUDENT_DIR [...]

Each student is exported with `adabert export` (every format, parity-checked) into a temporary folder. Then, for
batch 1 and 32 at 64 tokens (random inputs), the five runtimes are timed round-robin in one process
(`costs.interleaved_median_ms`: one call each per round, median over the rounds), so a change of the machine's load
falls on all of them alike; the table gives each one's median and its ratio to eager PyTorch. Export time and file
size are listed too.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch
from torch._inductor import aoti_load_package

from adabert.deploy.export import export_student
from adabert.nas.costs import interleaved_median_ms
from adabert.students.load import load_student

RUNTIMES = ("eager", "torchscript", "pt2", "aoti", "onnxruntime")


def runners(student, folder: Path, threads: int) -> dict:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    # onnxruntime's threads otherwise spin for a while after each run and slow whatever is timed next
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    scripted = torch.jit.load(str(folder / "model.torchscript.pt"))
    program = torch.export.load(str(folder / "model.pt2")).module()
    return {"eager": student.module, "torchscript": scripted, "pt2": program,
            "aoti": aoti_load_package(str(folder / "model.aoti.pt2")),
            "onnxruntime": lambda *x: sess.run(None, {n: t.numpy() for n, t in zip(names, x)})[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("students", nargs="+", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--length", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    for folder in args.students:
        student = load_student(folder)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            seconds = {}
            for fmt in ("torchscript", "onnx", "pt2", "aoti"):
                t0 = time.perf_counter()
                export_student(folder, out, [fmt])
                seconds[fmt] = time.perf_counter() - t0
            sizes = {p.name: p.stat().st_size / 2**20 for p in out.iterdir() if p.name.startswith("model.")}
            print(f"\n{folder} ({student.kind}): export " + ", ".join(f"{f} {s:.1f} s" for f, s in seconds.items())
                  + "; files " + ", ".join(f"{n} {s:.1f} MiB" for n, s in sorted(sizes.items())))
            run = runners(student, out, args.threads)
            print(f"| batch | {' | '.join(RUNTIMES)} (ms, and x eager) |")
            for batch in (1, 32):
                inputs = student.random_inputs(batch, args.length, seed=batch)
                with torch.no_grad():
                    ms = interleaved_median_ms([lambda r=run[n]: r(*inputs) for n in RUNTIMES], cpu, args.rounds)
                print(f"| {batch} | " + " | ".join(f"{m:.2f} ({m / ms[0]:.2f}x)" for m in ms) + " |")


if __name__ == "__main__":
    main()
