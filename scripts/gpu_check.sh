#!/usr/bin/env bash
# The checks a GPU machine is lent for, in one short run (docs/benchmarks.md, "GPU"):
#   1. tests/test_cuda.py: every stage on the GPU (bf16 autocast), against the CPU, resume after a kill, and
#      data parallel over two GPUs (nccl) where there are two;
#   2. the default `adabert search` on a task, timed, then a 3-epoch `adabert finetune` of the arch it wrote.
#
#     bash scripts/gpu_check.sh TASK DATA_DIR TEACHER PROBES OUT
#
# OUT receives gpu.txt, pytest.log, search.log, arch.json, search_metrics.json, finetune.log and
# finetune_metrics.json. Each step has a time limit so that a slow one still leaves the others their turn.
set -uo pipefail
task=$1 data=$2 teacher=$3 probes=$4 out=$5
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$out"
timed() {  # timed LIMIT LOG CMD...: run CMD under `timeout LIMIT`, its output and wall seconds into LOG
    local limit=$1 log=$2 start=$SECONDS
    shift 2
    timeout "$limit" "$@" 2>&1 | tee "$log"
    echo "exit ${PIPESTATUS[0]}, wall $((SECONDS - start)) s" | tee -a "$log"
}
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'GPUs', torch.cuda.device_count(), 'bf16', torch.cuda.is_bf16_supported())"
    nproc
} 2>&1 | tee "$out/gpu.txt"
timed 240 "$out/pytest.log" python3 -m pytest -q -rA tests/test_cuda.py
search=$(mktemp -d)/search
timed 200 "$out/search.log" python3 -m adabert search --task "$task" --data-dir "$data" --teacher "$teacher" \
    --probes "$probes" --device cuda --output-dir "$search"
cp "$search/arch.json" "$search/search_metrics.json" "$out/" 2>/dev/null
[ -f "$search/arch.json" ] || exit 1
timed 90 "$out/finetune.log" python3 -m adabert finetune --arch "$search/arch.json" --task "$task" \
    --data-dir "$data" --teacher "$teacher" --probes "$probes" --epochs 3 --device cuda \
    --output-dir "$(dirname "$search")/student"
cp "$(dirname "$search")/student/metrics.json" "$out/finetune_metrics.json" 2>/dev/null
