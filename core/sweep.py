"""The sweep runner shared by every script in ``sweeps/``: a sweep spec in, a trial table out.

A spec names the base TrainConfig, the swept fields (a grid, or an Optuna searcher), the results
folder, the tracking URI and the resources per trial. Running it validates every grid cell before
any trial starts, opens (or, for an interrupted sweep, reopens) the parent MLflow run, runs the Ray
Tune grid with retries from checkpoints, and returns one row per trial. Re-running the same spec
after an interruption resumes it with ``Tuner.restore``: finished trials are not run again.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import ray
from ray import tune

from core import stage_cache, stages, tracking
from core.config import TrainConfig
from core.tune import trial

log = logging.getLogger(__name__)

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class SweepSpec:
    name: str  # MLflow experiment and Ray run name
    base: dict[str, Any]  # TrainConfig fields shared by all trials
    grid: dict[str, list[Any]] = field(default_factory=dict)  # swept TrainConfig fields, full grid
    results_dir: str = os.path.join(PROJECT_DIR, "results")
    tracking_uri: str | None = None  # default: sqlite under results_dir
    preset: str = ""
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | str = 0.0  # a fraction packs trials on one GPU; "auto" measures the model
    cpu_fallback: bool = False  # run on CPUs when the cluster has no GPU, instead of refusing
    max_concurrent: int = 0  # 0: as many as the resources allow
    max_failures: int = 2  # retries of a crashed trial, each from its last checkpoint
    search_alg: Any = None  # e.g. OptunaSearch; then grid must be empty and num_samples set
    num_samples: int = 1
    scheduler: Any = None  # searcher and scheduler carry their own metric and mode
    fault: tuple[str, int] | None = None  # drill: ("raise" | "sigkill", epoch), once per trial

    @property
    def path(self) -> str:
        return os.path.join(self.results_dir, self.name)


@dataclass
class SweepResult:
    trials: pd.DataFrame
    experiment_id: str
    parent_run_id: str
    tracking_uri: str
    num_errors: int


def grid_configs(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every cell of the grid as a full, validated TrainConfig dict; a bad value fails here, before Ray."""
    keys = list(spec.grid)
    cells = [dict(zip(keys, values)) for values in itertools.product(*spec.grid.values())] or [{}]
    return [TrainConfig.from_dict({**spec.base, **cell}).to_dict() for cell in cells]


def trial_resources(spec: SweepSpec) -> dict[str, float]:
    """Resources per trial, checked against the cluster: a GPU request on a cluster without GPUs
    would leave every trial pending forever, so it is refused, or turned to CPU with ``cpu_fallback``."""
    cluster = ray.cluster_resources()
    gpus = spec.gpus_per_trial
    if gpus == "auto":
        gpus = auto_gpus_per_trial(spec.base) if cluster.get("GPU", 0) >= 1 else 0.0
        log.info("gpus_per_trial auto: %s", gpus)
    if not isinstance(gpus, (int, float)) or gpus < 0:
        raise ValueError(f"gpus_per_trial: got {gpus!r}; allowed: a number >= 0 or 'auto'")
    if gpus > 0 and cluster.get("GPU", 0) < gpus:
        if not spec.cpu_fallback:
            raise ValueError(f"gpus_per_trial: {gpus} requested but the Ray cluster has {cluster.get('GPU', 0):g} "
                             f"GPUs; use --gpus-per-trial 0, or --cpu-fallback to run on CPUs")
        log.warning("no GPU in the Ray cluster: running trials on CPUs (--cpu-fallback)")
        gpus = 0
    if cluster.get("CPU", 0) < spec.cpus_per_trial:
        raise ValueError(f"cpus_per_trial: {spec.cpus_per_trial} requested but the Ray cluster has "
                         f"{cluster.get('CPU', 0):g} CPUs")
    return {"cpu": spec.cpus_per_trial, "gpu": gpus}


def trials_per_gpu(peak_bytes: int, total_bytes: int, headroom: float = 0.8, most: int = 8) -> int:
    """How many trials of a measured peak memory fit on one GPU, keeping 20 % headroom (fractional
    GPUs share memory with no isolation), at most ``most``."""
    return max(1, min(most, int(headroom * total_bytes // max(peak_bytes, 1))))


def auto_gpus_per_trial(base: dict[str, Any]) -> float:
    """Measure one trial's peak GPU memory over a short run (one epoch) on a GPU of the cluster and
    pack as many trials per GPU as fit: ``1 / trials_per_gpu``."""

    @ray.remote(num_gpus=1)
    def probe() -> tuple[int, int]:
        import torch

        from core.train import train

        torch.cuda.reset_peak_memory_stats()
        train({**base, "epochs": 1, "warmup_epochs": 0, "milestones": [], "drw_epoch": 0})
        return torch.cuda.max_memory_allocated(), torch.cuda.get_device_properties(0).total_memory

    peak, total = ray.get(probe.remote())
    return 1.0 / trials_per_gpu(peak, total)


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_DIR, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _parent_run(spec: SweepSpec, uri: str, experiment: str, resuming: bool) -> str:
    """The sweep's parent run: reopened when resuming, else a new one with the sweep's tags."""
    state_file = os.path.join(spec.path, "sweep.json")
    if resuming and os.path.exists(state_file):
        with open(state_file) as f:
            run_id = json.load(f)["parent_run_id"]
        tracking.set_status(uri, run_id, "RUNNING")
        return run_id
    dataset = spec.base.get("dataset", "digits")
    run_id = tracking.start_parent_run(uri, experiment, spec.name, {
        "sweep": spec.name, "dataset": dataset, "preset": spec.preset, "git_commit": _git_commit(),
        "command_line": shlex.join([os.path.basename(sys.executable)] + sys.argv),
    })
    os.makedirs(spec.path, exist_ok=True)
    with open(state_file, "w") as f:
        json.dump({"parent_run_id": run_id, "experiment_id": experiment, "tracking_uri": uri}, f)
    return run_id


def run_sweep(spec: SweepSpec) -> SweepResult:
    """Run (or resume) the sweep and return its trial table. Needs ``ray.init()`` done by the caller."""
    spec.results_dir = os.path.abspath(spec.results_dir)
    grid_configs(spec)
    resources = trial_resources(spec)
    os.makedirs(spec.results_dir, exist_ok=True)
    uri = spec.tracking_uri or tracking.default_tracking_uri(spec.results_dir)
    experiment = tracking.experiment_id(uri, spec.name, os.path.join(spec.results_dir, "mlartifacts"))
    resuming = tune.Tuner.can_restore(spec.path)
    parent = _parent_run(spec, uri, experiment, resuming)

    run_stages(spec, uri, experiment, parent, resources)
    platform = {"tracking_uri": uri, "experiment_id": experiment, "parent_run_id": parent,
                "fault": spec.fault}
    trainable = tune.with_resources(tune.with_parameters(trial, base=spec.base, platform=platform), resources)
    if resuming:
        log.info("resuming the sweep in %s", spec.path)
        tuner = tune.Tuner.restore(spec.path, trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={k: tune.grid_search(v) for k, v in spec.grid.items()},
            tune_config=tune.TuneConfig(search_alg=spec.search_alg, scheduler=spec.scheduler,
                                        num_samples=spec.num_samples,
                                        max_concurrent_trials=spec.max_concurrent or None),
            run_config=tune.RunConfig(name=spec.name, storage_path=spec.results_dir, verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
        )
    try:
        grid = tuner.fit()
    except BaseException:
        tracking.set_status(uri, parent, "KILLED")
        raise
    table = trial_table(grid)
    close_orphans(uri, experiment, parent)
    tracking.set_status(uri, parent, "FINISHED" if grid.num_errors == 0 else "FAILED")
    return SweepResult(table, experiment, parent, uri, grid.num_errors)


def _ensure_stage(uri: str, experiment: str, parent: str, name: str, config: dict[str, Any]) -> str:
    return stage_cache.ensure(uri, experiment, parent, name, config).info.run_id


def run_stages(spec: SweepSpec, uri: str, experiment: str, parent: str, resources: dict[str, float]) -> None:
    """Train, before any trial starts, each stage (``core.stages``) that the grid's trials need and the
    MLflow store does not hold yet: once per stage key, as Ray tasks with a trial's resources. Trials
    then find them by key, and a re-run of the sweep finds them all and trains nothing."""
    todo: dict[str, tuple[str, dict[str, Any]]] = {}
    for config in grid_configs(spec):
        cfg = TrainConfig.from_dict(config)
        for name in stages.needed_stages(cfg):
            todo.setdefault(stages.key_digest(stages.stage_key(name, cfg)), (name, config))
    missing = [job for digest, job in todo.items() if tracking.find_stage_run(uri, digest) is None]
    if not missing:
        return
    log.info("training %d stage(s) before the trials: %s", len(missing), ", ".join(name for name, _ in missing))
    task = ray.remote(_ensure_stage).options(num_cpus=resources["cpu"], num_gpus=resources["gpu"])
    try:
        ray.get([task.remote(uri, experiment, parent, name, config) for name, config in missing])
    except BaseException:
        tracking.set_status(uri, parent, "FAILED")
        raise


def trial_table(grid: tune.ResultGrid) -> pd.DataFrame:
    """One row per trial: its swept values, its last reported metrics, and how it ended."""
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        # The swept config wins over a metric of the same name (the lr reported is the epoch's lr).
        row = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        row.update(result.config or {})
        row["status"] = "ERROR" if result.error else "DIVERGED" if metrics.get("diverged") else "FINISHED"
        row["error"] = str(result.error)[:500] if result.error else metrics.get("error", "")
        rows.append(row)
    return pd.DataFrame(rows)


def close_orphans(uri: str, experiment: str, parent: str) -> None:
    """Child runs still RUNNING after the sweep belong to trials that were killed with their process:
    mark them KILLED rather than leaving them RUNNING."""
    for run in tracking.child_runs(uri, experiment, parent):
        if run.info.status == "RUNNING":
            tracking.set_status(uri, run.info.run_id, "KILLED")
