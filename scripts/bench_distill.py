"""Classic distillation on SST-2 (issue 5): BiLSTM without KD / with MSE KD / with MSE KD + augmentation, and a
2-layer transformer cut from the teacher with vanilla (Hinton) KD and with probe KD. Shared teacher, 2 threads.
Accuracy is dev (reported once, model chosen on the held-out slice); latency is batch 1, length 64, 2 threads,
median over repeats, all models timed in this one process.

    python scripts/bench_distill.py --shared ../shared --out runs/bench_distill

Needs the SST-2 probes of scripts/bench_foundation.py and an augment folder (made here if missing).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from common import run_adabert as cli

from adabert.deploy.bench import BenchConfig, median_ms
from adabert.students.baselines import BiLSTMStudent
from adabert.teacher.model import load_classifier

ROWS = {  # name: (student, method, with augmentation, epochs); augmented rows see 4.8x the examples per epoch
    "bilstm-nokd": ("bilstm", "none", False, 3),
    "bilstm-mse": ("bilstm", "mse", False, 3),
    "bilstm-mse-aug": ("bilstm", "mse", True, 2),
    "transformer-hinton": ("transformer", "hinton", False, 2),
    "transformer-probe": ("transformer", "probe", False, 2),
}


def latency_ms(folder: Path, student: str, threads: int, length: int = 64) -> float:
    """Batch-1 median latency of a saved student on random token ids."""
    torch.set_num_threads(threads)
    ids = torch.randint(1000, 20000, (1, length))
    mask = torch.ones(1, length, dtype=torch.bool)
    cfg = BenchConfig()
    with torch.inference_mode():
        if student == "bilstm":
            model, _ = BiLSTMStudent.from_pretrained(folder)
            return median_ms(lambda: model((ids, mask, ids, mask)), cfg)
        model = load_classifier(str(folder)).eval()
        return median_ms(lambda: model(input_ids=ids, attention_mask=mask.long()), cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    ap.add_argument("--probes", type=Path, default=Path("runs/bench_foundation/sst2-probes"))
    ap.add_argument("--augment", type=Path, default=Path("runs/aug/sst2-c4"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench_distill"))
    ap.add_argument("--only", default="", help="comma-separated rows to run (default: all)")
    ap.add_argument("--latency-only", action="store_true",
                    help="re-time the saved students and the teacher (on a quiet machine) without training")
    args = ap.parse_args()
    glue, teacher = args.shared / "data" / "glue", str(args.shared / "teachers" / "minilm-l6-sst2")
    common = ["--task", "sst2", "--data-dir", str(glue / "SST-2"), "--threads", "2", "--teacher", teacher]
    if not (args.augment / "meta.json").is_file():
        cli(["augment", *common, "--copies", "4", "--probes", str(args.probes), "--output-dir", str(args.augment)])
    result_path = args.out / "result.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    rows = args.only.split(",") if args.only else list(ROWS)
    for name in rows if not args.latency_only else []:
        student, method, aug, epochs = ROWS[name]
        out = args.out / name
        flags = ["--student", student, "--method", method, "--epochs", str(epochs), "--probes", str(args.probes),
                 "--output-dir", str(out)]
        if aug:
            flags += ["--augment", str(args.augment)]
        secs = cli(["distill", *common, *flags])
        m = json.loads((out / "metrics.json").read_text())
        result[name] = {"student": student, "method": method, "augmented": aug, "epochs": epochs,
                        "dev": m["dev"], "params": m["params"], "train_examples": m["train_examples"],
                        "seconds": secs, "train_seconds": m["train_seconds"]}
        args.out.mkdir(parents=True, exist_ok=True)
        result_path.write_text(json.dumps(result, indent=2))
    for name in result:  # all timings in one process, after training
        if name in ROWS:
            result[name]["latency_ms_b1_l64_2t"] = latency_ms(args.out / name, result[name]["student"], 2)
    probe_metrics = json.loads((args.probes / "metrics.json").read_text())
    result["teacher"] = {"dev": probe_metrics["teacher_dev"],
                         "latency_ms_b1_l64_2t": latency_ms(Path(teacher), "transformer", 2),
                         "params": sum(p.numel() for p in load_classifier(teacher).parameters())}
    result_path.write_text(json.dumps(result, indent=2))
    print(f"{'row':<20} {'dev acc':>8} {'params':>11} {'ms b1':>7} {'train s':>8}")
    for name, r in result.items():
        if name != "teacher":
            print(f"{name:<20} {r['dev']['accuracy']:8.2f} {r['params']:11,} {r['latency_ms_b1_l64_2t']:7.2f} "
                  f"{r['seconds']:8.0f}")
    t = result["teacher"]
    print(f"{'teacher':<20} {t['dev']['accuracy']:8.2f} {t['params']:11,} {t['latency_ms_b1_l64_2t']:7.2f}")


if __name__ == "__main__":
    main()
