"""Float vs int8 ONNX files of saved students, side by side in one process: dev metric, file size, latency.

    python scripts/bench_onnx_int8.py --task sst2 --data-dir ../shared/data/glue/SST-2 [--also-8bit] STUDENT_DIR [...]

Each student is exported with `adabert export --int8` (parity-checked) into a temporary folder; each ONNX file
runs the task's dev split through onnxruntime (2 intra-op threads) and is timed at batch 1 and 32 on random
inputs of 64 tokens (median of repeats after warm-up).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from adabert.data.dataset import load_task_data
from adabert.data.encoding import batch_indices
from adabert.data.metrics import task_metrics
from adabert.data.tasks import get_task
from adabert.deploy.export import export_student, quantize_onnx
from adabert.deploy.predict import Predictor


def session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0]


def latency_ms(sess: ort.InferenceSession, inputs: tuple[torch.Tensor, ...], seconds: float = 2.0) -> float:
    for _ in range(5):
        run(sess, inputs)
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 20:
        t = time.perf_counter()
        run(sess, inputs)
        times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("students", nargs="+", type=Path)
    ap.add_argument("--task", required=True)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--also-8bit", action="store_true",
                    help="also time an int8 file with full 8-bit weights (export uses 7: no int16 saturation "
                         "on CPUs without VNNI)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_task_data(get_task(args.task), args.data_dir)
    metric = data.task.main_metric
    print(f"| student | file | MB | dev {metric} | ms batch 1 | ms batch 32 |")
    print("|---|---|---|---|---|---|")
    for folder in args.students:
        pred = Predictor(folder)
        enc = pred.encode(data.dev.texts)
        with tempfile.TemporaryDirectory() as tmp:
            export_student(folder, Path(tmp), ["onnx"], int8=True)
            names = ["model.onnx", "model.int8.onnx"]
            if args.also_8bit:
                quantize_onnx(Path(tmp) / "model.onnx", Path(tmp) / "model.int8-8bit.onnx", reduce_range=False)
                names.append("model.int8-8bit.onnx")
            for name in names:
                sess = session(Path(tmp) / name, args.threads)
                logits = np.zeros((len(enc), data.task.num_labels), dtype=np.float32)
                for idx in batch_indices(enc.lengths(), 256):
                    logits[idx] = run(sess, pred.student.inputs(enc, idx, torch.device("cpu")))
                dev = task_metrics(data.task, logits, data.dev.labels)[metric]
                ms = [latency_ms(sess, pred.student.random_inputs(b, 64, seed=1)) for b in (1, 32)]
                mb = (Path(tmp) / name).stat().st_size / 1e6
                print(f"| {folder} ({pred.student.kind}) | {name} | {mb:.1f} | {dev:.2f} | {ms[0]:.2f} | "
                      f"{ms[1]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
