#!/usr/bin/env bash
# The CPU measurements of docs/PERFORMANCE.md's "CPU" sections, one after another, each command's output
# (and JSON lines) kept under OUT_DIR (default docs/results/cpu), with the machine it ran on:
#
#   bash bench/cpu_results.sh DATA_DIR [OUT_DIR]
#
# DATA_DIR holds the whole CIFAR-10 as cifar10.npz (python /work/shared/data/cifar10/to_npz.py
# DATA_DIR/cifar10.npz, 176 MiB), of which the project builds the long-tailed ratio-100 subset. It took
# 9 minutes on 2 cores (the steps' walls in the logs); the throughput runs wait for idle CPUs, so run
# nothing else meanwhile.
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 1
DATA=${1:?usage: bash bench/cpu_results.sh DATA_DIR [OUT_DIR]}
OUT=${2:-docs/results/cpu}
PY=${PYTHON:-.venv/bin/python}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
{ date -u; uptime; nproc; grep -m1 'model name' /proc/cpuinfo; git rev-parse HEAD
  "$PY" -c "import torch, torchvision, ray; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'ray', ray.__version__, 'threads', torch.get_num_threads())"; } > "$OUT/env.txt" 2>&1

step() {  # step LOG COMMAND...: the command and its output into OUT/LOG, with its exit status and wall time
    local log=$1 start=$SECONDS
    shift
    echo "\$ $*" > "$OUT/$log"
    "$@" >> "$OUT/$log" 2>&1
    local status=$?
    echo "exit $status; wall $((SECONDS - start)) s" >> "$OUT/$log"
    echo "$log: exit $status, $((SECONDS - start)) s"
}

rm -f "$OUT"/*.jsonl
step throughput.txt "$PY" bench/cpu_suite.py --data-root "$DATA" --steps 20 --warmup 3 --reps 3 \
    --json "$OUT/throughput.jsonl" --max-wait 300 --retries 3
step components.txt "$PY" bench/components.py --dataset cifar10 --data-root "$DATA" --rounds 8 --reps 3 --count-ops \
    --json "$OUT/components.jsonl"
step ab.txt "$PY" bench/components.py --dataset cifar10 --data-root "$DATA" --methods erm --rounds 1 --reps 1 \
    --ab mamix_drw --ab-blocks 4 --ab-reps 10
step profile.txt "$PY" bench/components.py --dataset cifar10 --data-root "$DATA" --methods erm mamix_drw --rounds 1 \
    --reps 1 --profile mamix_drw --profile-steps 5
step sweep.txt "$PY" bench/sweep_throughput.py --dataset digits --epochs 1 --packing 1 2 4 --json "$OUT/sweep_ray.jsonl"
step sweep_processes.txt "$PY" bench/sweep_throughput.py --dataset digits --epochs 1 --packing 1 2 4 --runner processes \
    --json "$OUT/sweep_processes.jsonl"
# the bound and the grid's duration at this run's MAMix-DRW and ERM medians (device pipeline)
rates=$("$PY" -c "
import statistics, sys
from bench.summarise import disturbed, read
rows = [r for r in read([sys.argv[1]]) if r['impl'] == 'device' and not disturbed(r, 0.1)]
print(*(round(statistics.median(r['img_per_s'] for r in rows if r['method'] == m), 1) for m in ('mamix_drw', 'erm')))
" "$OUT/throughput.jsonl")
# shellcheck disable=SC2086
step budget.txt "$PY" bench/budget.py --img-per-s $rates
