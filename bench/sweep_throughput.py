"""Sweep throughput: trials per hour of a Table 12 slice (MAMix-DRW, omegas x seeds x E epochs) with
1, 2, 4, 8 trials packed per device, through the real sweep runner (``core.sweep.run_sweep`` on a
local Ray instance started by ``sweeps.cli.init_ray``; MLflow tracking and checkpoints included).

Packing k trials per device means ``--gpus-per-trial 1/k`` on a GPU (and ``cpus_per_trial =
ncpu/k``, so the CPUs do not limit the packing), and ``cpus_per_trial = ncpu/k`` on the CPU. Each
packing runs the whole slice as its own sweep (its own name, in a scratch results folder), and the
wall time is the ``run_sweep`` call: trial start-up, data loading, training, evaluation, tracking.

    python bench/sweep_throughput.py --dataset cifar10 --data-root DIR --device cuda --epochs 2 \\
        --packing 1 2 4 8 --json OUT/sweep.jsonl
    python bench/sweep_throughput.py --dataset digits --epochs 1 --packing 1 2      # smoke check (CPU)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from core.config import TrainConfig  # noqa: E402
from search_spaces import OMEGA_GRID  # noqa: E402

# Table 12's setting per dataset (CIFAR-10 long-tailed, ratio 300); digits is the smoke check.
RATIOS = {"cifar10": 300.0, "digits": 10.0}


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


def run_packing(k: int, base: dict[str, Any], grid: dict[str, list[Any]], results_dir: str, gpu: bool,
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
    import torch

    return {"packing": k, "trials": trials, "finished": finished, "wall_s": round(wall, 1),
            "trials_per_hour": round(finished / wall * 3600, 1), "mean_trial_s": round(float(per_trial), 1),
            "concurrent": min(k, trials), "cpus_per_trial": round(ncpu / k, 3),
            "gpus_per_trial": round(1.0 / k, 3) if gpu else 0.0, "dataset": base["dataset"],
            "ratio": base["ratio"], "epochs": base["epochs"], "device": base["device"], "torch": torch.__version__,
            "ray": ray.__version__, "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'packing':>7} {'trials':>6} {'finished':>8} {'wall s':>8} {'trials/hour':>11} {'mean trial s':>12}"]
    lines += [f"{r['packing']:>7} {r['trials']:>6} {r['finished']:>8} {r['wall_s']:>8.1f} {r['trials_per_hour']:>11.1f} "
              f"{r['mean_trial_s']:>12.1f}" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="cifar10", choices=sorted(RATIOS))
    p.add_argument("--data-root", help="directory holding <dataset>.npz (not needed for digits)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--omegas", type=float, nargs="+", default=OMEGA_GRID)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--packing", type=int, nargs="+", default=[1, 2, 4, 8], help="trials per device")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--results-dir", help="scratch folder for the sweeps (default: a new one under the temp dir)")
    p.add_argument("--json", help="append one JSON line per packing to this file")
    args = p.parse_args(argv)

    import ray

    from sweeps import cli

    if args.dataset != "digits" and not args.data_root:
        raise SystemExit(f"{args.dataset} needs --data-root DIR holding {args.dataset}.npz")
    base = slice_base(args.dataset, args.data_root, args.epochs, args.device)
    cli.check_data(base["dataset"], base["data_root"])
    results_dir = os.path.abspath(args.results_dir or tempfile.mkdtemp(prefix="sweep_bench_"))
    cli.init_ray(args.num_cpus)
    cluster = ray.cluster_resources()
    gpu = args.device == "cuda"
    if gpu and cluster.get("GPU", 0) < 1:
        raise SystemExit("--device cuda: the Ray cluster has no GPU")
    ncpu = float(cluster.get("CPU", 1))
    grid = {"omega": list(args.omegas), "seed": list(range(args.seeds))}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rows = []
    for k in args.packing:
        row = run_packing(k, base, grid, results_dir, gpu, ncpu, stamp)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")
    print(f"\nTable 12 slice: {len(args.omegas)} omegas x {args.seeds} seed(s) x {args.epochs} epoch(s), "
          f"{args.dataset} ratio {base['ratio']:g}, {args.device}, {ncpu:g} CPUs, results in {results_dir}")
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
