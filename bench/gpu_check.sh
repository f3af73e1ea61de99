#!/usr/bin/env bash
# The GPU measurements of docs/PERFORMANCE.md in one script. Each step has its own time limit
# (throughput runs 45 s each, components 120 s, sweep SWEEP_TIMEOUT), so without the sweep part the
# script ends within 2 x 5 x 45 + 120 = 570 s even when every step runs out of time.
#
#   bash bench/gpu_check.sh DATA_DIR [OUT_DIR]
#
# DATA_DIR holds cifar10.npz, the compact long-tailed file (ratio 300, about 54 MiB):
#   python /work/shared/data/cifar10/to_npz.py DATA_DIR/cifar10.npz --long-tailed 300
# OUT_DIR (default: $OUT, else ./bench_out) receives env.txt, throughput.jsonl, summary.md,
# components.jsonl, sweep.jsonl (if run) and log.txt.
#
# Steps: (1) bench/throughput.py on cuda, device pipeline for erm, mixup_drw, remix_drw, mamix_drw and
# loader pipeline for mamix_drw, REPS rounds; (2) bench/summarise.py; (3) bench/components.py (batch
# maker alone vs whole step, per method); (4) bench/sweep_throughput.py, a Table 12 slice (7 omegas x 1
# seed x SWEEP_EPOCHS epochs) packed 1, 2, 4, 8 trials per GPU, only where ray and mlflow import (the
# project's environment, e.g. a node of cluster/gpu.yaml; the bare lent GPU image has neither).
# Knobs (environment): PYTHON STEPS WARMUP REPS WORKERS COMPONENT_REPS SWEEP (0: skip) SWEEP_EPOCHS PACKING
# SWEEP_TIMEOUT, and DEVICE (default cuda; DEVICE=cpu only to dry-run this script's flow without a GPU)
set -u -o pipefail

DATA=${1:?usage: bash bench/gpu_check.sh DATA_DIR [OUT_DIR]}
DEST=${2:-${OUT:-bench_out}}
PY=${PYTHON:-python3}
STEPS=${STEPS:-200}
WARMUP=${WARMUP:-20}
REPS=${REPS:-2}
WORKERS=${WORKERS:-8}
SWEEP_EPOCHS=${SWEEP_EPOCHS:-1}
PACKING=${PACKING:-1 2 4 8}
SWEEP_TIMEOUT=${SWEEP_TIMEOUT:-300}
COMPONENT_REPS=${COMPONENT_REPS:-20}
SWEEP=${SWEEP:-1}
DEVICE=${DEVICE:-cuda}
export PYTHONUNBUFFERED=1 RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}

cd "$(dirname "$0")/.." || exit 1
DATA=$(cd "$DATA" && pwd) || exit 1
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
if [ ! -f "$DATA/cifar10.npz" ]; then
    echo "no $DATA/cifar10.npz; make it with: python /work/shared/data/cifar10/to_npz.py $DATA/cifar10.npz --long-tailed 300"
    exit 2
fi

main() {
    echo "== environment"
    { date -u; nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv
      "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
      echo "cpus $(nproc)"; grep -m1 'model name' /proc/cpuinfo; git rev-parse HEAD 2>/dev/null; } 2>&1 | tee "$DEST/env.txt"

    echo "== throughput (steps $STEPS, warm-up $WARMUP, $REPS rounds)"
    for rep in $(seq "$REPS"); do
        for cfg in "device erm" "device mixup_drw" "device remix_drw" "device mamix_drw" "loader mamix_drw"; do
            set -- $cfg
            timeout 45 "$PY" bench/throughput.py --method "$2" --pipeline "$1" --dataset cifar10 --data-root "$DATA" \
                --device "$DEVICE" --steps "$STEPS" --warmup "$WARMUP" --workers "$WORKERS" --json "$DEST/throughput.jsonl" \
                || echo "throughput $cfg failed (exit $?)"
        done
    done
    "$PY" bench/summarise.py "$DEST/throughput.jsonl" | tee "$DEST/summary.md"

    echo "== components (batch maker alone vs whole step)"
    timeout 120 "$PY" bench/components.py --dataset cifar10 --data-root "$DATA" --device "$DEVICE" --rounds 3 --reps "$COMPONENT_REPS" --count-ops \
        --json "$DEST/components.jsonl" || echo "components failed (exit $?)"

    echo "== sweep throughput"
    if [ "$SWEEP" = 0 ]; then
        echo "sweep_throughput skipped (SWEEP=0)"
    elif "$PY" -c "import ray, mlflow, optuna" 2>/dev/null; then
        timeout "$SWEEP_TIMEOUT" "$PY" bench/sweep_throughput.py --dataset cifar10 --data-root "$DATA" --device "$DEVICE" \
            --epochs "$SWEEP_EPOCHS" --packing $PACKING --results-dir /tmp/sweep_bench --json "$DEST/sweep.jsonl" \
            || echo "sweep_throughput stopped (exit $?); finished packings are in sweep.jsonl"
    else
        echo "sweep_throughput skipped: ray, mlflow or optuna does not import with $PY (install the project there: pip install -e .)"
    fi
}

main 2>&1 | tee "$DEST/log.txt"
