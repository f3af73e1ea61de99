#!/usr/bin/env bash
# The GPU measurements of docs/PERFORMANCE.md in one script, most important first, each step with its own
# time limit so that one slow or failing step leaves the others' results:
#
#   bash bench/gpu_check.sh DATA_DIR [OUT_DIR]
#
# DATA_DIR holds cifar10.npz, the compact long-tailed file (ratio 300, about 54 MiB):
#   python /work/shared/data/cifar10/to_npz.py DATA_DIR/cifar10.npz --long-tailed 300
# OUT_DIR (default: $OUT, else ./bench_out) receives env.txt, throughput.jsonl, summary.md, sweep.jsonl,
# components.jsonl, variants.jsonl and log.txt.
#
# A GPU session's first command is bench/gpu_session.sh (the next Table 12 window, the CUDA-graph check,
# fused throughput); this script holds the longer measurements that come after Table 12 is complete.
#
# Steps:
# (0) bench/fused_throughput.py on cuda: K fused members against K one after another (1 ... 35) and K packed
#     processes (1 ... 8), ResNet-32 on the compact file;
# (1) bench/throughput.py on cuda: the device pipeline for erm, mixup_drw, remix_drw, mamix_drw and the loader
#     pipeline for mamix_drw, REPS rounds, then bench/summarise.py;
# (2) bench/sweep_throughput.py, a Table 12 slice (7 omegas x 1 seed x SWEEP_EPOCHS epochs) packed 1, 2, 4, 8
#     trials per GPU, through Ray where ray, mlflow and optuna import, else with --runner processes (the bare
#     lent GPU image has none of the three);
# (3) bench/components.py: the batch maker alone against the whole step, per method (the mixing overhead);
# (4) variants of the mamix_drw device step: fp32 (--no-amp), --compile (mode default) and --compile
#     reduce-overhead (CUDA graphs).
# Worst case with the defaults: 5 x 45 + 240 + 90 + 45 + 2 x 150 = 900 s; on an H100 the whole script took
# 514 s with SWEEP_TIMEOUT=300 (bench/results/2026-11-27-h100), the sweep step being 290 s of it.
# Knobs (environment): PYTHON STEPS WARMUP REPS WORKERS COMPONENT_REPS SWEEP (0: skip) SWEEP_EPOCHS PACKING
# SWEEP_TIMEOUT SWEEP_RUNNER (ray|processes; default: ray where it imports) VARIANTS (0: skip), and DEVICE
# (default cuda; DEVICE=cpu only to dry-run this script's flow without a GPU)
set -u -o pipefail

DATA=${1:?usage: bash bench/gpu_check.sh DATA_DIR [OUT_DIR]}
DEST=${2:-${OUT:-bench_out}}
PY=${PYTHON:-python3}
STEPS=${STEPS:-300}
WARMUP=${WARMUP:-30}
REPS=${REPS:-1}
WORKERS=${WORKERS:-8}
SWEEP=${SWEEP:-1}
SWEEP_EPOCHS=${SWEEP_EPOCHS:-3}
PACKING=${PACKING:-1 2 4 8}
SWEEP_TIMEOUT=${SWEEP_TIMEOUT:-240}
COMPONENT_REPS=${COMPONENT_REPS:-20}
VARIANTS=${VARIANTS:-1}
DEVICE=${DEVICE:-cuda}
FUSED_STEPS=${FUSED_STEPS:-50}
export PYTHONUNBUFFERED=1 RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}

# shellcheck source=bench/gpu_common.sh
. "$(dirname "$0")/gpu_common.sh"
prepare_dirs
if [ -z "${SWEEP_RUNNER:-}" ]; then
    if "$PY" -c "import ray, mlflow, optuna" 2>/dev/null; then SWEEP_RUNNER=ray; else SWEEP_RUNNER=processes; fi
fi

throughput() {  # throughput JSONL PIPELINE METHOD [extra flags]
    local out=$1 pipeline=$2 method=$3
    shift 3
    timeout 45 "$PY" bench/throughput.py --method "$method" --pipeline "$pipeline" --dataset cifar10 --data-root "$DATA" --ratio 300 \
        --device "$DEVICE" --steps "$STEPS" --warmup "$WARMUP" --workers "$WORKERS" --json "$out" "$@" \
        || echo "throughput $pipeline $method $* failed (exit $?)"
}

main() {
    echo "== environment"
    record_env "$DEST/env.txt"

    echo "== (0) fused throughput"
    timeout 240 "$PY" bench/fused_throughput.py --device "$DEVICE" --dataset cifar10 --data-root "$DATA" --ratio 300 \
        --members 1 2 4 8 16 35 --modes fused sequential --steps "$FUSED_STEPS" --warmup 10 --json "$DEST/fused.jsonl" \
        || echo "fused_throughput (fused, sequential) stopped (exit $?); finished lines are in fused.jsonl"
    timeout 120 "$PY" bench/fused_throughput.py --device "$DEVICE" --dataset cifar10 --data-root "$DATA" --ratio 300 \
        --members 1 2 4 8 --modes processes --steps "$FUSED_STEPS" --warmup 10 --json "$DEST/fused.jsonl" \
        || echo "fused_throughput (processes) stopped (exit $?)"

    echo "== (1) throughput (steps $STEPS, warm-up $WARMUP, $REPS round(s))"
    for rep in $(seq "$REPS"); do
        for cfg in "device erm" "device mixup_drw" "device remix_drw" "device mamix_drw" "loader mamix_drw"; do
            throughput "$DEST/throughput.jsonl" $cfg
        done
    done
    "$PY" bench/summarise.py "$DEST/throughput.jsonl" | tee "$DEST/summary.md"

    echo "== (2) sweep throughput (runner $SWEEP_RUNNER)"
    if [ "$SWEEP" = 0 ]; then
        echo "sweep_throughput skipped (SWEEP=0)"
    else
        timeout "$SWEEP_TIMEOUT" "$PY" bench/sweep_throughput.py --dataset cifar10 --data-root "$DATA" --device "$DEVICE" \
            --runner "$SWEEP_RUNNER" --epochs "$SWEEP_EPOCHS" --packing $PACKING --results-dir /tmp/sweep_bench \
            --json "$DEST/sweep.jsonl" || echo "sweep_throughput stopped (exit $?); finished packings are in sweep.jsonl"
    fi

    echo "== (3) components (batch maker alone vs whole step)"
    timeout 90 "$PY" bench/components.py --dataset cifar10 --data-root "$DATA" --ratio 300 --device "$DEVICE" --rounds 3 \
        --reps "$COMPONENT_REPS" --count-ops --json "$DEST/components.jsonl" || echo "components failed (exit $?)"

    echo "== (4) variants of the mamix_drw device step"
    if [ "$VARIANTS" = 0 ]; then
        echo "variants skipped (VARIANTS=0)"
    else
        throughput "$DEST/variants.jsonl" device mamix_drw --no-amp
        for mode in default reduce-overhead; do
            timeout 150 "$PY" bench/throughput.py --method mamix_drw --dataset cifar10 --data-root "$DATA" --ratio 300 \
                --device "$DEVICE" --steps "$STEPS" --warmup $((WARMUP + 30)) --compile "$mode" \
                --json "$DEST/variants.jsonl" || echo "throughput --compile $mode failed (exit $?)"
        done
    fi
}

main 2>&1 | tee "$DEST/log.txt"
