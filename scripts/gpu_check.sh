#!/usr/bin/env bash
# The checks a GPU machine is lent for, in one short run (docs/benchmarks.md, "GPU"):
#   0. the latency cost table measured on the GPU, alone (timed beside the tests, on the H100 of the forty-second
#      session, cnn3 read 0.38 ms against cnn7's 0.21);
#   1. tests/test_cuda.py: every stage on the GPU (bf16 autocast) against the CPU, resume after a kill, a
#      pair-regression search in the cross space with input moves, and data parallel over two GPUs (nccl) where
#      there are two; it runs beside step 2 (each on 8 CPU threads), so the timings are not solo ones;
#   2. the default `adabert search` of a task on the GPU with the pick's input moves (--move-steps MOVES), then a
#      3-epoch finetune of the arch it wrote, each timed.
# The whole run takes at most 9.5 minutes; give the device call 580 s.
#
#     bash scripts/gpu_check.sh TASK DATA_DIR TEACHER PROBES MOVES OUT
#
# OUT receives gpu.txt (machine, cost table), pytest.log, search.log, arch.json, search_summary.json and
# finetune.log. Each step has a time limit so that a slow one still leaves the others their turn.
set -uo pipefail
task=$1 data=$2 teacher=$3 probes=$4 moves=$5 out=$6
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
m = measure_cost_model(space, "latency_ms", task.num_labels, task.is_pair, torch.device("cuda"))
print("cuda", json.dumps({**m.as_dict(), "bounds": m.bounds(space)}))
EOF
} >"$out/gpu.txt" 2>&1
cat "$out/gpu.txt"
OMP_NUM_THREADS=8 timed 420 "$out/pytest.log" python3 -m pytest -q -rA tests/test_cuda.py &
timed 450 "$out/search.log" python3 -m adabert search --task "$task" --data-dir "$data" --teacher "$teacher" \
    --probes "$probes" --move-steps "$moves" --device cuda --threads 8 --output-dir "$run/search"
cp "$run/search/arch.json" "$out/" 2>/dev/null
cp "$run/search/search_metrics.json" "$out/search_summary.json" 2>/dev/null
timed 90 "$out/finetune.log" python3 -m adabert finetune --arch "$run/search/arch.json" --task "$task" \
    --data-dir "$data" --teacher "$teacher" --probes "$probes" --epochs 3 --device cuda --threads 8 \
    --output-dir "$run/student"
wait
