"""Sweep throughput: trials per hour of a Table 12 slice (MAMix-DRW, omegas x seeds x E epochs) with
1, 2, 4, 8 trials packed per device.

Two runners measure the same slice:

- ``--runner ray`` (default): the real sweep runner (``core.sweep.run_sweep`` on a local Ray instance
  started by ``sweeps.cli.init_ray``; MLflow tracking and checkpoints included). Packing k trials per
  device means ``--gpus-per-trial 1/k`` on a GPU (and ``cpus_per_trial = ncpu/k``, so the CPUs do not
  limit the packing), and ``cpus_per_trial = ncpu/k`` on the CPU. The wall time is the ``run_sweep``
  call: trial start-up, data loading, training, evaluation, tracking.
- ``--runner processes``: for machines without Ray and MLflow (such as a bare GPU image). Each trial
  is its own Python process running ``core.train.train`` (the function Ray's trainable wraps), k at a
  time on the one device, each with ncpu/k CPU threads. This is what Ray's fractional GPUs do to the
  device, without Ray's scheduling and MLflow's tracking. Every trial records when each epoch ended,
  so the row also holds the steady epoch time at that packing and the start-up cost, from which the
  full Table 12 grid (7 omegas x 5 seeds x 200 epochs) is extrapolated, labelled as such.

    python bench/sweep_throughput.py --dataset cifar10 --data-root DIR --device cuda --epochs 2 \\
        --packing 1 2 4 8 --json OUT/sweep.jsonl [--runner processes]
    python bench/sweep_throughput.py --dataset digits --epochs 1 --packing 1 2      # smoke check (CPU)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from bench.summarise import emit  # noqa: E402
from core.config import TrainConfig  # noqa: E402
from search_spaces import OMEGA_GRID, PAPER_SEEDS  # noqa: E402

# Table 12's setting per dataset (CIFAR-10 long-tailed, ratio 300); digits is the smoke check.
RATIOS = {"cifar10": 300.0, "digits": 10.0}
# The full Table 12 grid that the processes runner extrapolates to: 7 omegas x 5 seeds x 200 epochs.
GRID_TRIALS = len(OMEGA_GRID) * len(PAPER_SEEDS)
GRID_EPOCHS = TrainConfig(dataset="cifar10").epochs


def slice_base(dataset: str, data_root: str | None, epochs: int, device: str) -> dict[str, Any]:
    """The Table 12 TrainConfig (MAMix-DRW, long-tailed) cut to ``epochs`` epochs: the schedule's
    milestones, DRW epoch and warm-up are clipped to the run's length."""
    full = TrainConfig(dataset=dataset)
    base = dict(dataset=dataset, method="mamix_drw", imbalance="long_tailed", ratio=RATIOS.get(dataset, full.ratio),
                model=full.model, epochs=epochs, milestones=[m for m in full.milestones if m <= epochs],
                drw_epoch=min(full.drw_epoch, epochs), warmup_epochs=min(full.warmup_epochs, epochs),
                data_root=os.path.abspath(data_root) if data_root else None, device=device)
    TrainConfig.from_dict(base)  # fail here on a bad value
    return base


def run_packing_ray(k: int, base: dict[str, Any], grid: dict[str, list[Any]], results_dir: str, gpu: bool,
                ncpu: float, stamp: str) -> dict[str, Any]:
    """One sweep of the slice with k trials per device; returns its row."""
    import ray

    from core.sweep import SweepSpec, run_sweep

    spec = SweepSpec(name=f"sweep-bench-{stamp}-pack{k}", base=base, grid=grid, results_dir=results_dir,
                     preset="bench", cpus_per_trial=ncpu / k, gpus_per_trial=1.0 / k if gpu else 0.0,
                     max_failures=0)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    result = run_sweep(spec)
    wall = time.perf_counter() - start
    trials = len(result.trials)
    finished = int((result.trials["status"] == "FINISHED").sum()) if trials else 0
    per_trial = result.trials["time_total_s"].mean() if "time_total_s" in result.trials else float("nan")
    return dict(slice_row(k, trials, finished, wall, base, gpu, ncpu), mean_trial_s=round(float(per_trial), 1),
                runner="ray", ray=ray.__version__, loadavg_1min=[round(load_before, 2), round(os.getloadavg()[0], 2)])


def run_trial(config_path: str, out_path: str) -> None:
    """One trial of the processes runner (this script with ``--trial``): train, and write the wall
    clock at the end of each epoch."""
    from core.train import train

    with open(config_path) as f:
        config = json.load(f)
    epoch_end: list[float] = []
    metrics = train(config, lambda _: epoch_end.append(time.time()))
    with open(out_path, "w") as f:
        json.dump({"epoch_end": epoch_end, "test_acc": metrics["test_acc"]}, f)


def launch_trial(config: dict[str, Any], workdir: str, name: str, threads: int) -> dict[str, Any]:
    """Run one trial as its own process with ``threads`` CPU threads; returns its launch time and epoch
    end times, or the tail of its error output."""
    config_path, out_path = (os.path.join(workdir, f"{name}.{ext}") for ext in ("config.json", "out.json"))
    with open(config_path, "w") as f:
        json.dump(config, f)
    start = time.time()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--trial", config_path, out_path],
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)}, capture_output=True, text=True)
    if proc.returncode:
        return {"ok": False, "error": proc.stderr[-3000:]}
    with open(out_path) as f:
        return {"ok": True, "start": start, **json.load(f)}


def grid_hours(k: int, startup_s: float, epoch_s: float) -> float:
    """Extrapolated hours of the full Table 12 grid (GRID_TRIALS trials of GRID_EPOCHS epochs) on one
    device at packing k: ceil(trials / k) waves, each one trial's start-up plus GRID_EPOCHS epochs at
    the epoch time measured at this packing."""
    return math.ceil(GRID_TRIALS / k) * (startup_s + GRID_EPOCHS * epoch_s) / 3600


def run_packing_processes(k: int, base: dict[str, Any], grid: dict[str, list[Any]], results_dir: str, gpu: bool,
                          ncpu: float, stamp: str) -> dict[str, Any]:
    """One pass over the slice with k trial processes at a time on the device; returns its row.

    epoch_s is the median time between two epoch ends of a trial (training plus its evaluation, the
    first epoch left out); startup_s is the mean time from a trial's launch to the end of its first
    epoch, less one epoch_s (imports, CUDA context, data loading, first-step kernels)."""
    configs = [dict(base, omega=omega, seed=seed) for omega in grid["omega"] for seed in grid["seed"]]
    workdir = tempfile.mkdtemp(prefix=f"sweep-bench-{stamp}-pack{k}-", dir=results_dir)
    threads = max(1, int(ncpu // k))
    start = time.perf_counter()
    with ThreadPoolExecutor(k) as pool:
        trials = list(pool.map(lambda i: launch_trial(configs[i], workdir, f"trial{i}", threads), range(len(configs))))
    wall = time.perf_counter() - start
    done = [t for t in trials if t["ok"]]
    if not done:
        raise SystemExit(f"every trial failed at packing {k}; the first one's error:\n{trials[0]['error']}")
    row = dict(slice_row(k, len(trials), len(done), wall, base, gpu, ncpu), runner="processes",
               threads_per_trial=threads, epoch_s=None, startup_s=None, grid_h_extrapolated=None,
               test_acc=[round(t["test_acc"], 4) for t in done])
    gaps = [b - a for t in done for a, b in zip(t["epoch_end"], t["epoch_end"][1:])]
    if gaps:  # one epoch per trial gives no epoch time
        epoch_s = statistics.median(gaps)
        startup_s = statistics.mean(t["epoch_end"][0] - t["start"] for t in done) - epoch_s
        row.update(epoch_s=round(epoch_s, 3), startup_s=round(startup_s, 2),
                   grid_h_extrapolated=round(grid_hours(k, startup_s, epoch_s), 3))
    return row


def slice_row(k: int, trials: int, finished: int, wall: float, base: dict[str, Any], gpu: bool,
              ncpu: float) -> dict[str, Any]:
    """The fields every runner reports for one packing."""
    import torch

    return {"packing": k, "trials": trials, "finished": finished, "wall_s": round(wall, 1),
            "trials_per_hour": round(finished / wall * 3600, 1), "concurrent": min(k, trials),
            "cpus_per_trial": round(ncpu / k, 3), "gpus_per_trial": round(1.0 / k, 3) if gpu else 0.0,
            "dataset": base["dataset"], "ratio": base["ratio"], "epochs": base["epochs"], "device": base["device"],
            "torch": torch.__version__,
            "gpu_name": torch.cuda.get_device_name() if gpu and torch.cuda.is_available() else None}


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a text table; the processes runner's columns are left blank for the Ray runner."""
    def cell(row: dict[str, Any], key: str, width: int, digits: int) -> str:
        value = row.get(key)
        return f"{value:>{width}.{digits}f}" if isinstance(value, (int, float)) else f"{'-':>{width}}"

    head = (f"{'packing':>7} {'trials':>6} {'finished':>8} {'wall s':>8} {'trials/hour':>11} {'mean trial s':>12} "
            f"{'epoch s':>8} {'start-up s':>10} {'Table 12 grid h (extrapolated)':>30}")
    lines = [head] + [f"{r['packing']:>7} {r['trials']:>6} {r['finished']:>8} {r['wall_s']:>8.1f} "
                      f"{r['trials_per_hour']:>11.1f} {cell(r, 'mean_trial_s', 12, 1)} {cell(r, 'epoch_s', 8, 3)} "
                      f"{cell(r, 'startup_s', 10, 2)} {cell(r, 'grid_h_extrapolated', 30, 3)}" for r in rows]
    return "\n".join(lines)


RUNNERS = {"ray": run_packing_ray, "processes": run_packing_processes}


def prepare_runner(runner: str, base: dict[str, Any], gpu: bool, num_cpus: int | None) -> float:
    """The CPUs to share among packed trials. For the Ray runner, checks the data first (a trial would
    fail inside a worker) and starts (or joins) Ray."""
    if runner == "processes":
        import torch

        if gpu and not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no GPU")
        return float(num_cpus or os.cpu_count() or 1)
    import ray

    from sweeps import cli

    cli.check_data(base["dataset"], base["data_root"])
    cli.init_ray(num_cpus)
    cluster = ray.cluster_resources()
    if gpu and cluster.get("GPU", 0) < 1:
        raise SystemExit("--device cuda: the Ray cluster has no GPU")
    return float(cluster.get("CPU", 1))


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="cifar10", choices=sorted(RATIOS))
    p.add_argument("--data-root", help="directory holding <dataset>.npz (not needed for digits)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--omegas", type=float, nargs="+", default=OMEGA_GRID)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--packing", type=int, nargs="+", default=[1, 2, 4, 8], help="trials per device")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--runner", choices=sorted(RUNNERS), default="ray")
    p.add_argument("--num-cpus", type=int, help="CPUs shared by the packed trials (default: all)")
    p.add_argument("--results-dir", help="scratch folder for the sweeps (default: a new one under the temp dir)")
    p.add_argument("--json", help="append one JSON line per packing to this file")
    # the processes runner's child: one trial
    p.add_argument("--trial", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.trial:
        run_trial(*args.trial)
        return []

    if args.runner == "processes" and args.epochs < 2:
        print("note: with --epochs 1 there is no steady epoch time, so no epoch s, start-up s or grid extrapolation")
    if args.dataset != "digits" and not args.data_root:
        raise SystemExit(f"{args.dataset} needs --data-root DIR holding {args.dataset}.npz")
    base = slice_base(args.dataset, args.data_root, args.epochs, args.device)
    results_dir = os.path.abspath(args.results_dir or tempfile.mkdtemp(prefix="sweep_bench_"))
    os.makedirs(results_dir, exist_ok=True)
    gpu = args.device == "cuda"
    ncpu = prepare_runner(args.runner, base, gpu, args.num_cpus)
    grid = {"omega": list(args.omegas), "seed": list(range(args.seeds))}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rows = []
    for k in args.packing:
        row = RUNNERS[args.runner](k, base, grid, results_dir, gpu, ncpu, stamp)
        rows.append(row)
        emit(row, args.json)
    print(f"\nTable 12 slice: {len(args.omegas)} omegas x {args.seeds} seed(s) x {args.epochs} epoch(s), "
          f"{args.dataset} ratio {base['ratio']:g}, {args.device}, runner {args.runner}, {ncpu:g} CPUs, "
          f"results in {results_dir}")
    print(table(rows))
    if any(r.get("grid_h_extrapolated") is not None for r in rows):
        print(f"Table 12 grid h (extrapolated) = ceil({GRID_TRIALS} / packing) x (start-up s + {GRID_EPOCHS} x epoch s)"
              " / 3600; an extrapolation from this slice, not a measured grid")
    return rows


if __name__ == "__main__":
    main()
