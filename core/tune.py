"""The Ray Tune trainable: one ``core.train.train`` call per trial, with checkpoints and MLflow.

Each evaluation becomes one ``tune.report`` carrying a checkpoint (model, optimiser, schedule
position, generator state, epoch, best accuracy), and one step of the trial's MLflow child run.
A crashed trial restarts from its last checkpoint (``FailureConfig(max_failures=...)``) and continues
its MLflow run, which is found again by the Ray trial id. Ray calls live here and in ``core.sweep``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import threading
import time
from typing import Any

import ray
import torch
from ray import tune

from core import stage_cache, tracking
from core.config import TrainConfig
from core.progress import trial_label
from core.reporting import margin_bar_chart, per_class_table
from core.train import DivergenceError, train

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"


class InjectedFault(RuntimeError):
    """Raised on purpose by the ``fault`` drill, to rehearse recovery from a crashed trial."""


def inject_fault(kind: str, epoch: int) -> None:
    """Fault drills: ``raise`` an exception now, or ``sigkill`` the trial's own process a moment later,
    while the next epoch trains (no clean-up runs, as when a node dies or the OOM killer strikes)."""
    if kind == "sigkill":
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGKILL)).start()
        return
    raise InjectedFault(f"injected crash after epoch {epoch}")


def load_checkpoint_state(checkpoint: tune.Checkpoint | None) -> dict[str, Any] | None:
    """The training state in a checkpoint, or None. A corrupt or truncated file is reported and the
    trial starts from scratch rather than crashing the sweep."""
    if checkpoint is None:
        return None
    try:
        with checkpoint.as_directory() as d:
            # weights_only: a checkpoint is data, never code to run.
            return torch.load(os.path.join(d, STATE_FILE), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is handled the same way
        log.error("checkpoint %s is unreadable (%s); starting the trial from scratch", checkpoint.path, err)
        return None


def trial(config: dict[str, Any], *, base: dict[str, Any], platform: dict[str, Any]) -> None:
    """Ray Tune function trainable.

    ``config`` holds the swept fields (e.g. omega, seed), ``base`` the rest of the TrainConfig, and
    ``platform`` the sweep's settings: tracking_uri, experiment_id, parent_run_id and, for drills
    only, ``fault`` = (kind, epoch): crash once, on the first attempt, after that epoch's report.

    A diverging run (NaN or inf loss) is not retried: retrying from its checkpoint would diverge
    again. It ends at once, FAILED in MLflow with the reason, and reports ``diverged`` to Ray.
    """
    # Ray logs every checkpoint it persists, MLflow every run's URL; the driver's SweepProgress
    # reports what matters instead.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    tracking.quiet()
    cfg = TrainConfig.from_dict({**base, **config})
    run = tracking.TrialRun(platform["tracking_uri"], platform["experiment_id"], platform["parent_run_id"],
                            tune.get_context().get_trial_id(), run_name(cfg.method, config), cfg.to_dict())
    run.set_tag("ray.node_id", ray.get_runtime_context().get_node_id())
    # Stages the method needs (M2m's g, DeepSMOTE's autoencoder): found in MLflow, trained there once.
    cfg, stages = stage_cache.with_stages(cfg, platform)
    for name, stage_run in stages.items():
        run.set_tag(f"stage.{name}", stage_run.info.run_id)
    # The cost of a trial: its own wall time (this attempt) and the one-off time of its stages.
    started, stage_s = time.perf_counter(), sum(r.data.metrics.get("wall_s", 0.0) for r in stages.values())
    resume = load_checkpoint_state(tune.get_checkpoint())
    latest: dict[str, Any] = {}

    def save_state(state: dict[str, Any]) -> None:
        latest.clear()
        latest.update(state)

    def report(metrics: dict[str, float]) -> None:
        metrics = {**metrics, "wall_s": time.perf_counter() - started, "stage_s": stage_s}
        run.log_epoch(metrics)
        with tempfile.TemporaryDirectory() as d:
            torch.save(latest, os.path.join(d, STATE_FILE))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        fault = platform.get("fault")
        if fault and resume is None and metrics["epoch"] == fault[1]:
            inject_fault(fault[0], metrics["epoch"])

    try:
        metrics = train(cfg, report, resume=resume, save_state=save_state)
        state = latest or resume or {}
        if metrics and state:
            log_trial_artifacts(run, metrics, state["counts"], state["classes"], cfg)
        run.finish("FINISHED")
    except DivergenceError as err:
        run.set_tag("error", f"DivergenceError: {err}")
        run.finish("FAILED")
        tune.report({"diverged": 1.0, "error": str(err)})
    except BaseException as err:
        run.set_tag("error", f"{type(err).__name__}: {err}"[:5000])
        run.finish("FAILED")
        raise


def run_name(method: str, config: dict[str, Any]) -> str:
    """The MLflow child run's name: the method and the swept values, e.g. ``mamix_drw omega=0.125 seed=0``."""
    label = trial_label(config)
    return label if "method" in config else f"{method} {label}"


def log_trial_artifacts(run: tracking.TrialRun, metrics: dict[str, float], counts: list[int],
                        classes: list[str], cfg: TrainConfig) -> None:
    """Per-class accuracy and margin table (JSON and CSV) and the per-class margin bar chart."""
    table = per_class_table(metrics, counts, classes)
    title = f"{cfg.method} on {cfg.dataset} (ratio {cfg.ratio:g}), epoch {int(metrics['epoch'])}"
    tracking.log_artifacts(run.uri, run.run_id, {
        "per_class.json": json.dumps(table.to_dict(orient="records"), indent=1).encode(),
        "per_class.csv": table.to_csv(index=False).encode(),
        "per_class_margin.png": margin_bar_chart(table, title),
    })
