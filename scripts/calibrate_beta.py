"""Study: how the efficiency weight beta shapes the searched cell (collapse to parameter-free ops or not).

    python scripts/calibrate_beta.py --betas 0,0.5,2,4 --train-limit 8000 --out runs/calibrate_beta

Short searches (a slice of the training data, 1 epoch, 2 threads) on SST-2 and MRPC with the shared teachers;
prints, per task and beta, the derived genotype, the convolutions kept, the share of probability on
parameter-free ops, the expected depth and the held-out metric.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    ap.add_argument("--probes-sst2", type=Path, default=Path("runs/bench_foundation/sst2-probes"))
    ap.add_argument("--probes-mrpc", type=Path, default=Path("runs/mrpc/probes"))
    ap.add_argument("--betas", default="0,0.5,2,4")
    ap.add_argument("--train-limit", type=int, default=8000)
    ap.add_argument("--tasks", default="sst2,mrpc")
    ap.add_argument("--out", type=Path, default=Path("runs/calibrate_beta"))
    args, extra = ap.parse_known_args()
    glue, teachers = args.shared / "data" / "glue", args.shared / "teachers"
    setups = {"sst2": (glue / "SST-2", teachers / "minilm-l6-sst2", args.probes_sst2),
              "mrpc": (glue / "MRPC", teachers / "minilm-l6-mrpc", args.probes_mrpc)}
    rows = []
    for task in args.tasks.split(","):
        data, teacher, probes = setups[task]
        for beta in args.betas.split(","):
            out = args.out / f"{task}-beta{beta}"
            subprocess.run([sys.executable, "-m", "adabert", "search", "--task", task, "--data-dir", str(data),
                            "--teacher", str(teacher), "--probes", str(probes), "--output-dir", str(out),
                            "--beta", beta, "--train-limit", str(args.train_limit), "--threads", "2", "--force",
                            *extra], check=True, stdout=subprocess.DEVNULL)
            m = json.loads((out / "search_metrics.json").read_text())
            arch = json.loads((out / "arch.json").read_text())
            ops = [i["op"] for node in arch["cell"] for i in node]
            depth = arch["depth_probs"]
            row = {"task": task, "beta": float(beta), "genotype": arch["genotype"],
                   "convs_kept": sum("cnn" in o for o in ops), "param_free_share": m["history"][-1]["param_free_share"],
                   "edge_entropy": m["history"][-1]["edge_entropy_mean"],
                   "expected_depth": sum((k + 1) * p for k, p in enumerate(depth)),
                   "holdout": m["selection"]["holdout"][m["selection"]["metric"]], "params": m["efficiency"]["params"],
                   "seconds": m["seconds_this_run"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    (args.out / "result.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
