#!/usr/bin/env bash
# A GPU session's work in one command of under 10 minutes, most important first, each step with its own
# time limit so that a slow or failing step leaves the others' results:
#
#   bash bench/gpu_session.sh DATA_DIR [OUT_DIR]
#
# DATA_DIR holds cifar10.npz, the compact long-tailed file (ratio 300, 54.2 MiB):
#   python /work/shared/data/cifar10/to_npz.py DATA_DIR/cifar10.npz --long-tailed 300
# OUT_DIR (default: $OUT, else ./gpu_out) receives at most 8 files, as the device tool brings back:
#   table12/{members.jsonl,final.json,run.json,table12.md,replays.json}  (1) the next window of Table 12
#   graphs.jsonl                                   (2) the compiled step against eager, whole runs
#   fused.jsonl                                    (3) fused throughput, (4) executors vs vmap
#   log.txt                                        everything printed, the environment first, each step's
#                                                  seconds, and the tables of (1)'s probes and (2)-(4) last
#                                                  (bench/fused_tables.py)
#
# (1) bench/table12_fused.py: the Table 12 cells that docs/results/table12/ does not hold yet, as many as
#     fit TABLE12_S seconds (probes included), compiled with CUDA graphs (TrainConfig's default on CUDA);
#     in the time left, every member's final weights replayed up to 20 times this platform's way and the
#     authors' (--replays 20, bench/replays.py: the best of the authors' replays is the kind of number the
#     paper prints, which the GPU machine's checkpoints cannot bring back for a replay here).
#     Commit OUT_DIR/table12 as docs/results/table12/<name>/, then
#     `python bench/table12_fused.py --table docs/results/table12` writes the table over every window.
# (2) bench/graphs_check.py: 7 members (one seed's omegas), 2 epochs in lockstep, torch.compile mode
#     reduce-overhead (CUDA graphs) against eager and a float64 reference, then one timed epoch of each.
# (3) bench/fused_throughput.py: K = 1, 7, 35 fused, ResNet-32 MAMix-DRW, eager (K = 1 is also the rate
#     of K members one after another; (1)'s probes time a pack of the remaining cells compiled, and with
#     TABLE12_ARGS="--compile off" the pack of every remaining cell in four eager layouts).
# (4) bench/executors.py: one SGD step of 7 and 35 ResNet-32 members through the fused network's two
#     executors and through torch.vmap, channels-last, in fp32 and in bf16 as the engine runs on CUDA (the choice
#     core/fused.py's docstring explains); rows appended to fused.jsonl
#     (they carry "way" where (3)'s carry "mode"), as the device tool brings back 8 files at most.
# Worst case with the defaults: 5 (env) + 360 + 150 + 45 + 30 = 590 s.
# Knobs (environment): PYTHON TABLE12_S GRAPHS_S FUSED_S EXECUTORS_S FUSED_STEPS FUSED_MEMBERS DEVICE (default
# cuda; DEVICE=cpu only to dry-run this script's flow), and TABLE12_ARGS GRAPHS_ARGS FUSED_ARGS EXECUTORS_ARGS:
# extra flags of each step, where a flag given again wins (e.g. FUSED_ARGS="--dataset digits --model small_cnn").
# A step given 0 s is skipped. (2) to (4) first ran on an H200 on 2026-12-04 (docs/results/gpu-2026-12-04/):
# the graphs check of MAMix-DRW passed. Table 12's 35 cells are all trained in the default setting (2026-12-06),
# so the next session trains the grid again with the authors' clean forward pass (windows of their own setting,
# paged by `--table docs/results/table12 --set clean_forward=true` as table12-clean_forward=true.md), then
# checks the methods whose step meets the compiled network otherwise (graphs_check.py --variants; the window's
# numbers stand once its clean_forward=true variant passes), in one command:
#   TABLE12_S=300 GRAPHS_S=270 FUSED_S=0 EXECUTORS_S=0 TABLE12_ARGS="--set clean_forward=true" \
#     GRAPHS_ARGS="--members 4 --variants method=m2m method=ldam_drw method=deepsmote,deepsmote_epochs=2 \
#     clean_forward=true" bash bench/gpu_session.sh .bench_data $OUT
# and at once, on the still warm machine, measures what that one did not (fused K = 2 to 16, K packed
# processes, 35 members' executors in bf16), the largest K first, so that a step cut short keeps the fused
# packs the issue targets (each K up to 8 adds the sequential and processes modes: K one-member packs set
# up one after another, then K processes started):
#   TABLE12_S=0 GRAPHS_S=0 FUSED_S=150 EXECUTORS_S=45 FUSED_MEMBERS="35 16 8 4 2 1" \
#     FUSED_ARGS="--modes fused sequential processes --sequential-up-to 8" bash bench/gpu_session.sh .bench_data $OUT
set -u -o pipefail

DATA=${1:?usage: bash bench/gpu_session.sh DATA_DIR [OUT_DIR]}
DEST=${2:-${OUT:-gpu_out}}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
TABLE12_S=${TABLE12_S:-340}
GRAPHS_S=${GRAPHS_S:-150}
FUSED_S=${FUSED_S:-45}
EXECUTORS_S=${EXECUTORS_S:-30}
FUSED_STEPS=${FUSED_STEPS:-30}
FUSED_MEMBERS=${FUSED_MEMBERS:-1 7 35}
TABLE12_ARGS=${TABLE12_ARGS:-}
GRAPHS_ARGS=${GRAPHS_ARGS:-}
FUSED_ARGS=${FUSED_ARGS:-}
EXECUTORS_ARGS=${EXECUTORS_ARGS:-}
export PYTHONUNBUFFERED=1

# shellcheck source=bench/gpu_common.sh
. "$(dirname "$0")/gpu_common.sh"
prepare_dirs

# step SECONDS TITLE COMMAND...: TITLE, then COMMAND under `timeout SECONDS` (whose 0 would mean no limit:
# here 0 skips the step); a step that fails or runs out of time leaves the next ones their turn. Each step
# ends with the seconds it took, start-up included, by which the next session sizes its steps.
step() {
    local seconds=$1 title=$2 started=$SECONDS
    shift 2
    echo "== $title"
    if [ "$seconds" -le 0 ]; then echo "skipped (0 s)"; return; fi
    timeout "$seconds" "$@" || echo "${2##*/} stopped (exit $?)"
    echo "-- took $((SECONDS - started)) s of $seconds"
}

main() {
    echo "== environment"
    record_env

    # The limit leaves the script 20 s beyond its own budget to write its files; its members.jsonl is
    # written as training goes, so even a window cut short leaves its evaluations.
    # shellcheck disable=SC2086
    step $((TABLE12_S > 0 ? TABLE12_S + 20 : 0)) "(1) Table 12, the next window (budget $TABLE12_S s)" \
        "$PY" bench/table12_fused.py --data-root "$DATA" --out "$DEST/table12" --device "$DEVICE" \
        --budget-s "$TABLE12_S" --replays 20 $TABLE12_ARGS
    # shellcheck disable=SC2086
    step "$GRAPHS_S" "(2) the compiled step (CUDA graphs) against eager through whole runs" \
        "$PY" bench/graphs_check.py --device "$DEVICE" --data-root "$DATA" --json "$DEST/graphs.jsonl" $GRAPHS_ARGS
    # fused.jsonl gets a line per finished measurement, so a step cut short keeps those
    # shellcheck disable=SC2086
    step "$FUSED_S" "(3) fused throughput" \
        "$PY" bench/fused_throughput.py --device "$DEVICE" --dataset cifar10 --data-root "$DATA" --ratio 300 \
        --members $FUSED_MEMBERS --modes fused sequential --sequential-up-to 1 --steps "$FUSED_STEPS" --warmup 5 \
        --json "$DEST/fused.jsonl" $FUSED_ARGS
    # shellcheck disable=SC2086
    step "$EXECUTORS_S" "(4) the fused network's executors against torch.vmap" \
        "$PY" bench/executors.py --device "$DEVICE" --model resnet32 --members 7 35 --batch 128 --steps 10 --warmup 3 \
        --precisions fp32 bf16 --channels-last --json "$DEST/fused.jsonl" $EXECUTORS_ARGS
    # the tables docs/PERFORMANCE.md shows, in the log: the device tool brings back 8 files at most
    echo "== (1)'s probes, (2), (3) and (4) as tables"
    local measured=()
    for file in "$DEST/graphs.jsonl" "$DEST/fused.jsonl" "$DEST/table12/run.json"; do
        [ -s "$file" ] && measured+=("$file")
    done
    if [ ${#measured[@]} -gt 0 ]; then
        "$PY" bench/fused_tables.py "${measured[@]}" || echo "fused_tables.py stopped (exit $?)"
    else
        echo "no measurement"
    fi
    echo "== done in $SECONDS s"
}

main 2>&1 | tee "$DEST/log.txt"
