#!/usr/bin/env bash
# Every sweep's demo preset, one after another, on a local Ray: the tables, trial tables, plots and logs
# that docs/RESULTS.md quotes, copied to OUT_DIR (default docs/results/demo) with each command's wall time.
#
#   bash bench/demo_results.sh [OUT_DIR]
#
# The sweeps write their MLflow store and Ray folders to a scratch results folder, not to OUT_DIR.
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${1:-docs/results/demo}
PY=${PYTHON:-.venv/bin/python}
SCRATCH=$(mktemp -d)
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
{ date -u; nproc; grep -m1 'model name' /proc/cpuinfo; git rev-parse HEAD; "$PY" -c "import torch, ray, mlflow, optuna; print('torch', torch.__version__, 'ray', ray.__version__, 'mlflow', mlflow.__version__, 'optuna', optuna.__version__)"; } > "$OUT/env.txt" 2>&1

run() {  # run NAME ARGS...: sweeps/NAME.py --preset demo ARGS, its outputs into OUT/NAME
    local name=$1 folder=$2
    shift 2
    mkdir -p "$OUT/$name"
    local start=$SECONDS
    "$PY" "sweeps/$name.py" --preset demo --results-dir "$SCRATCH" "$@" > "$OUT/$name/log.txt" 2>&1
    local status=$?
    echo "command: python sweeps/$name.py --preset demo $* ; exit $status; wall $((SECONDS - start)) s" >> "$OUT/$name/log.txt"
    cp "$SCRATCH/$folder"/*.md "$SCRATCH/$folder"/*.csv "$SCRATCH/$folder"/*.png "$OUT/$name/" 2>/dev/null
    echo "$name: exit $status, $((SECONDS - start)) s"
}

run omega_sensitivity omega_sensitivity-demo
run method_comparison method_comparison-demo
run extreme_imbalance extreme_imbalance-demo
run extreme_cinic10 extreme_cinic10-demo
run extreme_kinds extreme_kinds-demo
run smote_study smote_study-demo
run margin_study margin_study-demo
run tune_hparams tune_mamix_remix_drw-demo --method mamix_remix_drw --num-samples 24
rm -rf "$SCRATCH"
