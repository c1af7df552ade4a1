"""Student benchmark: finetune the searched SST-2 student with KD and without (gamma = 0), evaluate on dev,
time it against the teacher and a BERT-base-shaped model; finetune the MRPC student and record F1.

    python scripts/bench_student.py --shared ../shared --search runs/bench_search --out runs/bench_student

Needs the searches of scripts/bench_search.py and the probes of scripts/bench_foundation.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import run_adabert as cli


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    ap.add_argument("--search", type=Path, default=Path("runs/bench_search"))
    ap.add_argument("--probes-sst2", type=Path, default=Path("runs/bench_foundation/sst2-probes"))
    ap.add_argument("--probes-mrpc", type=Path, default=Path("runs/mrpc/probes"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench_student"))
    ap.add_argument("--epochs", default="5")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: kd,nokd,kd-table,bench,mrpc")
    args = ap.parse_args()
    glue, teachers = args.shared / "data" / "glue", args.shared / "teachers"
    sst2 = ["--task", "sst2", "--data-dir", str(glue / "SST-2"), "--threads", "2"]
    t_sst2 = str(teachers / "minilm-l6-sst2")
    result: dict = {}
    skip = set(args.skip.split(","))
    for name, gamma, emb in (("kd", "0.8", "projected"), ("nokd", "0", "projected"), ("kd-table", "0.8", "table")):
        if name in skip:
            continue
        out = args.out / f"sst2-{name}"
        secs = cli(["finetune", "--arch", str(args.search / "sst2" / "arch.json"), "--teacher", t_sst2, "--probes",
                    str(args.probes_sst2), "--gamma", gamma, "--embeddings", emb, "--epochs", args.epochs,
                    "--output-dir", str(out), "--force", *sst2])
        m = json.loads((out / "metrics.json").read_text())
        result[f"sst2_{name}"] = {"gamma": float(gamma), "embeddings": emb, "dev": m["dev"], "params": m["params"],
                                  "genotype": m["genotype"], "seconds": secs}
    if "bench" not in skip:
        cli(["bench", "--student", str(args.out / "sst2-kd"), "--teacher", t_sst2, "--output",
             str(args.out / "bench_sst2.json"), "--threads", "2"])
        result["bench_sst2"] = json.loads((args.out / "bench_sst2.json").read_text())
    if "mrpc" not in skip:
        out = args.out / "mrpc-kd"
        secs = cli(["finetune", "--arch", str(args.search / "mrpc" / "arch.json"), "--teacher",
                    str(teachers / "minilm-l6-mrpc"), "--probes", str(args.probes_mrpc), "--epochs", "10",
                    "--max-length", "64", "--output-dir", str(out), "--force", "--task", "mrpc", "--data-dir",
                    str(glue / "MRPC"), "--threads", "2"])
        m = json.loads((out / "metrics.json").read_text())
        result["mrpc_kd"] = {"dev": m["dev"], "params": m["params"], "genotype": m["genotype"], "seconds": secs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("bench")}, indent=2))


if __name__ == "__main__":
    main()
