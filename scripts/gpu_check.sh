#!/usr/bin/env bash
# The checks a GPU machine is lent for, in one short run (docs/benchmarks.md, "GPU"):
#   1. tests/test_cuda.py: every stage on the GPU (bf16 autocast) against the CPU, resume after a kill, and data
#      parallel over two GPUs (nccl) where there are two; it runs beside step 2 (each on 8 CPU threads), so the
#      timings are not solo ones;
#   2. the latency cost table measured on the GPU, and the whole `adabert pipeline` of a task on it (probes,
#      the default search, a 3-epoch finetune, evaluate, export, bench), timed;
#   3. side by side: a search on a training subset with a latency budget 30% into the GPU table's range, and a
#      small `adabert study` (2 random cells, 1 seed, 1 epoch) of the pipeline's arch on the GPU.
# The whole run takes about 9 minutes (thirty-second session); give the device call 560 s or more.
#
#     bash scripts/gpu_check.sh TASK DATA_DIR TEACHER OUT
#
# OUT receives gpu.txt (machine, cost table), pytest.log, pipeline.log, summary.json, arch.json, latency.log and
# study.log. Each step has a time limit so that a slow one still leaves the others their turn.
set -uo pipefail
task=$1 data=$2 teacher=$3 out=$4
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$out"
run=$(mktemp -d)
timed() {  # timed LIMIT LOG CMD...: run CMD under `timeout LIMIT`, its output and wall seconds into LOG
    local limit=$1 log=$2 start=$SECONDS
    shift 2
    timeout "$limit" "$@" >"$log" 2>&1
    echo "exit $?, wall $((SECONDS - start)) s" >>"$log"
    tail -n 3 "$log"
}
OMP_NUM_THREADS=8 timed 420 "$out/pytest.log" python3 -m pytest -q -rA tests/test_cuda.py &
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'GPUs', torch.cuda.device_count(), 'bf16', torch.cuda.is_bf16_supported())"
    nproc
    python3 - "$task" <<'EOF'
import json, sys, torch
from adabert.data.tasks import get_task
from adabert.nas.costs import measure_cost_model
from adabert.nas.search_space import load_search_space
space, task = load_search_space("adabert"), get_task(sys.argv[1])
models = {d: measure_cost_model(space, "latency_ms", task.num_labels, task.is_pair, torch.device(d))
          for d in ("cuda", "cpu")}
for device, m in models.items():
    print(device, json.dumps({**m.as_dict(), "bounds": m.bounds(space)}))
lo, hi = models["cuda"].bounds(space)
print("target", round(lo + 0.3 * (hi - lo), 4))
EOF
} >"$out/gpu.txt" 2>&1
cat "$out/gpu.txt"
target=$(awk '/^target/ {print $2}' "$out/gpu.txt")
timed 400 "$out/pipeline.log" python3 -m adabert pipeline --task "$task" --data-dir "$data" --teacher "$teacher" \
    --finetune-epochs 3 --device cuda --threads 8 --output-dir "$run/p"
cp "$run/p/summary.json" "$run/p/search/arch.json" "$out/" 2>/dev/null
{
    timed 100 "$out/latency.log" python3 -m adabert search --task "$task" --data-dir "$data" --teacher "$teacher" \
        --probes "$run/p/probes" --train-limit 6000 --min-steps 300 --target-latency-ms "${target:-1}" \
        --device cuda --threads 4 --output-dir "$run/latency"
    python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['efficiency']['budget'])" \
        "$run/latency/arch.json" >>"$out/latency.log" 2>&1
} &
timed 100 "$out/study.log" python3 -m adabert study --arch "$run/p/search/arch.json" --teacher "$teacher" \
    --probes "$run/p/probes" --task "$task" --data-dir "$data" --parts random --random 2 --seeds 1 --epochs 1 \
    --device cuda --threads 4 --output-dir "$run/study"
wait
