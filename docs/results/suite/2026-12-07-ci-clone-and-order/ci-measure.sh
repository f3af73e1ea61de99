#!/usr/bin/env bash
# What CI does with a submission, timed: a fresh clone of main in CLONE (its own venv), `make install`, then
# `bash .ci/run` with CI=true. Outputs go to OUT. Run it as a script started in the background would be
# (`setsid bash ci-measure.sh ... &`): the first run, so started, also found the Ctrl+C test's defect.
#   bash ci-measure.sh CLONE OUT        e.g. CLONE=/tmp/ci-clone (run 1), /work/ci-clone (beside ../shared)
set -u
clone=$1 out=$2
mkdir -p "$out"
rm -rf "$clone" && git clone -q "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)" "$clone" && cd "$clone" || exit 1
git log -1 --format=%H > "$out/commit.txt"
s=$(date +%s.%N)
make install > "$out/ci-install.txt" 2>&1
m=$(date +%s.%N)
CI=true PYTEST_ADDOPTS="--durations=40" bash .ci/run > "$out/ci-run.txt" 2>&1
rc=$?
e=$(date +%s.%N)
echo "install $(echo "$m - $s" | bc) s; .ci/run after install $(echo "$e - $m" | bc) s (exit $rc); total $(echo "$e - $s" | bc) s" > "$out/ci-times.txt"
