"""Search benchmark: the default search on SST-2 and on MRPC with the shared teachers, 2 CPU threads.

    python scripts/bench_search.py --shared ../shared --probes-sst2 runs/bench_foundation/sst2-probes \
        --probes-mrpc runs/mrpc/probes --out runs/bench_search [--beta B ...]

Records wall time, examples/s, the derived architecture, its edge entropy and depth distribution in
OUT/result.json.
Probes must have been computed with the same data settings (see scripts/bench_foundation.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import run_adabert


def search(task: str, data: Path, teacher: Path, probes: Path, out: Path, extra: list[str]) -> dict:
    cmd = ["search", "--task", task, "--data-dir", str(data), "--teacher", str(teacher), "--probes", str(probes),
           "--output-dir", str(out), "--threads", "2", "--force", *extra]
    secs = run_adabert(cmd)
    m = json.loads((out / "search_metrics.json").read_text())
    arch = json.loads((out / "arch.json").read_text())
    ops = [i["op"] for node in arch["cell"] for i in node]
    return {"wall_seconds": secs, "search_seconds": m["seconds_this_run"], "steps": m["steps"],
            "examples_per_second": m["examples_per_second"], "genotype": arch["genotype"],
            "convs_kept": sum("cnn" in o for o in ops), "selection": m["selection"], "efficiency": m["efficiency"],
            "edge_entropy_last": m["history"][-1]["edge_entropy_mean"], "depth_probs": arch["depth_probs"],
            "param_free_share_last": m["history"][-1]["param_free_share"], "command": "adabert " + " ".join(cmd)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    ap.add_argument("--probes-sst2", type=Path, default=Path("runs/bench_foundation/sst2-probes"))
    ap.add_argument("--probes-mrpc", type=Path, default=Path("runs/mrpc/probes"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench_search"))
    ap.add_argument("--tasks", default="sst2,mrpc")
    args, extra = ap.parse_known_args()
    glue, teachers = args.shared / "data" / "glue", args.shared / "teachers"
    result = {}
    if "sst2" in args.tasks:
        result["sst2"] = search("sst2", glue / "SST-2", teachers / "minilm-l6-sst2", args.probes_sst2,
                                args.out / "sst2", extra)
    if "mrpc" in args.tasks:
        # Pairs run both sentences through all cells: batch 64 pairs (128 sequences) keeps a step near SST-2's.
        result["mrpc"] = search("mrpc", glue / "MRPC", teachers / "minilm-l6-mrpc", args.probes_mrpc,
                                args.out / "mrpc", ["--batch-size", "64", *extra])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: {kk: v[kk] for kk in ("wall_seconds", "examples_per_second", "genotype", "convs_kept",
                                                "edge_entropy_last", "depth_probs")} for k, v in result.items()},
                     indent=2))


if __name__ == "__main__":
    main()
