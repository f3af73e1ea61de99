"""The Ray Tune trainable: one ``core.train.train_pack`` call per trial, with checkpoints and MLflow.

A trial trains a pack of members (one or more grid cells that share a fusable key; ``core.sweep``
forms them). Each evaluation becomes one ``tune.report`` carrying a checkpoint of the whole pack
(weights, optimiser, schedule position, every member's generator state, epoch, best accuracies), and,
once Ray holds that checkpoint, one step of each member's MLflow child run. A crashed trial restarts
from its last checkpoint (``FailureConfig(max_failures=...)``) and every member continues its MLflow
run, found again by the Ray trial id and its member index, so MLflow and Ray keep the same attempt's
values of every epoch. Ray calls live here and in ``core.sweep``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from typing import Any, Callable

import ray
import torch
from ray import tune

from core import stage_cache, tracking
from core.config import TrainConfig
from core.progress import stop_reason, trial_label
from core.reporting import margin_bar_chart, per_class_table
from core.train import PackResult, train_pack

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"


class InjectedFault(RuntimeError):
    """Raised on purpose by the ``fault`` drill, to rehearse recovery from a crashed trial."""


# Fault drills, to rehearse recovery from a crashed trial: each strikes once, on the trial's first
# attempt, in the report of the epoch it names, at a point of that report:
#   raise                  an exception, once the epoch is reported to Ray and logged to MLflow;
#   sigkill                SIGKILL of the trial's own process a moment later, while the next epoch trains
#                          (no clean-up runs, as when a node dies or the OOM killer strikes);
#   sigkill_before_report  SIGKILL with the epoch's checkpoint written but not yet reported to Ray;
#   sigkill_before_log     SIGKILL once Ray holds the epoch's checkpoint, before MLflow has the epoch.
FAULT_POINTS = {"raise": "done", "sigkill": "done", "sigkill_before_report": "before_report",
                "sigkill_before_log": "before_log"}


def inject_fault(kind: str, epoch: int) -> None:
    """Strike the fault drill ``kind`` (one of ``FAULT_POINTS``) after epoch ``epoch``."""
    if kind == "raise":
        raise InjectedFault(f"injected crash after epoch {epoch}")
    if kind == "sigkill":
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGKILL)).start()
        return
    os.kill(os.getpid(), signal.SIGKILL)


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
    """Ray Tune function trainable of a grid or searcher sweep: one pack of members.

    ``config["members"]`` lists each member's swept fields (e.g. omega, seed); a config without it is
    one member's fields (a searcher's suggestion). ``base`` holds the rest of the TrainConfig, and
    ``platform`` the sweep's settings: tracking_uri, experiment_id, parent_run_id and, for drills only,
    ``fault`` = (kind, epoch): crash once, on the first attempt, after that epoch's report.
    """
    train_members(config.get("members", [config]), base, platform, load_checkpoint_state(tune.get_checkpoint()))


def search_trial(config: dict[str, Any], *, base: dict[str, Any], platform: dict[str, Any],
                 search: dict[str, Any]) -> None:
    """Ray Tune function trainable of a fused search: asks the stored Optuna study (``core.study``)
    for ``search["members"]`` configurations, trains them as one pack, and tells the study each
    member's objective (``FAIL`` for a member that diverged). A retried trial continues the members it
    asked (they are in its checkpoint); one that crashed before its first checkpoint fails them.

    ``search``: the study's ``path`` and ``name``, the define-by-run ``space``, ``members`` per slot
    and ``total``, the ``objective`` metric, the search's ``seed`` and the trials the study held when
    the round began (``asked_before``): each slot of each round seeds its own sampler.
    """
    from core import study as studies

    opened = studies.open_study(search["path"], search["name"],
                                studies.sampler_seed(search["seed"], search["asked_before"], config["slot"]))
    resume = load_checkpoint_state(tune.get_checkpoint())
    count = min(search["members"], search["total"] - config["slot"] * search["members"])  # the last slot: the rest
    asked = resume["asked"] if resume else [(t.number, cell) for t, cell in
                                            studies.ask(opened, search["space"], count)]
    checkpoints: list[int] = []
    try:
        result = train_members([cell for _, cell in asked], base, platform, resume, {"asked": asked},
                               on_checkpoint=lambda: checkpoints.append(1))
    except BaseException:
        if resume is None and not checkpoints:  # no checkpoint holds them: nobody will finish these trials
            for number, _ in asked:
                studies.tell(opened, number, None, finished=True)
        raise
    for m, (number, _) in enumerate(asked):
        value = None if m in result.failures else result.metrics[m].get(search["objective"])
        studies.tell(opened, number, value, finished=True)


def drop_exit_requests(unraisable) -> None:
    """``sys.unraisablehook`` of a trial's process: Ray ends the process of a finished trial with SIGTERM,
    whose handler raises SystemExit wherever Python is. Landing in a weakref or ``__del__`` callback,
    it cannot be raised, and Python printed "Exception ignored in ... Traceback ... SystemExit: 1" on
    the driver's terminal after a trial that had finished well (seen in a one-trial demo sweep). Ray
    ends the process all the same; only that print goes. Any other exception is printed as before."""
    if not isinstance(unraisable.exc_value, SystemExit):
        sys.__unraisablehook__(unraisable)


def train_members(cells: list[dict[str, Any]], base: dict[str, Any], platform: dict[str, Any],
                  resume: dict[str, Any] | None, extra: dict[str, Any] | None = None,
                  on_checkpoint: Callable[[], None] | None = None) -> PackResult:
    """Train the members ``cells`` (swept fields over ``base``) as one pack, from ``resume`` if given,
    with an MLflow child run per member, and a Ray report and checkpoint (holding ``extra`` too) per
    evaluation, after which ``on_checkpoint()`` is called.

    A member that diverges (NaN or inf loss) is frozen and its run ends FAILED with the reason while the
    others go on; a pack whose members all diverged is not retried (its checkpoint would diverge again)
    and reports ``diverged`` to Ray.
    """
    # Ray logs every checkpoint it persists, MLflow every run's URL; the driver's SweepProgress
    # reports what matters instead.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    tracking.quiet()
    sys.unraisablehook = drop_exit_requests
    trial_id, node = tune.get_context().get_trial_id(), ray.get_runtime_context().get_node_id()
    cfgs, runs, stage_s = [], [], 0.0
    for m, cell in enumerate(cells):
        cfg = TrainConfig.from_dict({**base, **cell})
        run = tracking.TrialRun(platform["tracking_uri"], platform["experiment_id"], platform["parent_run_id"],
                                trial_id, run_name(cfg.method, cell), cfg.to_dict(), member=m)
        run.set_tag("ray.node_id", node)
        # Stages the method needs (M2m's g, DeepSMOTE's autoencoder): found in MLflow, trained there once.
        cfg, stages = stage_cache.with_stages(cfg, platform)
        for name, stage_run in stages.items():
            run.set_tag(f"stage.{name}", stage_run.info.run_id)
        # The one-off time of the stages a member needs (the same for every member of a pack).
        stage_s = max(stage_s, sum(r.data.metrics.get("wall_s", 0.0) for r in stages.values()))
        cfgs.append(cfg)
        runs.append(run)
    # The pack's wall time counts every attempt up to the checkpoint it resumes from, so that a crash
    # does not make a trial look cheaper; the work an attempt lost after its last checkpoint is not kept,
    # so its time is not counted either.
    before_s = resume.get("pack_wall_s", 0.0) if resume else 0.0
    # What the attempt that wrote the checkpoint had not logged when it stopped (steps MLflow holds are skipped).
    for run, rows in zip(runs, resume.get("unlogged", []) if resume else []):
        for row in rows:
            run.queue(row)
        run.flush(attempts=3)
    started = time.perf_counter()
    latest: dict[str, Any] = {}

    def save_state(state: dict[str, Any]) -> None:
        latest.clear()
        latest.update(state)

    def report(metrics: list[dict[str, float]], failures: dict[int, str]) -> None:
        # A member's cost: its share of the pack's wall time, and its stages' one-off time.
        pack_wall_s = before_s + time.perf_counter() - started
        timing = {"wall_s": pack_wall_s / len(cfgs), "stage_s": stage_s}
        metrics = [{**m, **timing} if m else m for m in metrics]
        for m, run in enumerate(runs):
            if m not in failures:
                run.queue(metrics[m])
        fault = platform.get("fault")
        epoch = max(int(m.get("epoch", 0)) for m in metrics)

        def drill(point: str) -> None:
            if fault and resume is None and epoch == fault[1] and FAULT_POINTS[fault[0]] == point:
                inject_fault(fault[0], epoch)

        # The last epoch's per-class artifacts go before its report: Ray may end the process as soon as it
        # has that report (ASHA stops every trial at max_t), and a trial's exit kills this thread. Drawing
        # then, a trial lost them; inside matplotlib's C++ code it aborted with a stack trace on the
        # driver's terminal. A retry of this epoch logs them again, with the same values.
        if epoch == cfgs[0].epochs:
            for m, run in enumerate(runs):
                if m not in failures:
                    log_trial_artifacts(run, metrics[m], latest["counts"], latest["classes"], cfgs[m].method,
                                        cfgs[m].dataset, cfgs[m].ratio)
        # MLflow gets an epoch only once Ray holds its checkpoint: a retry resumes from Ray's last
        # checkpoint, and an epoch logged before Ray had it would keep a lost attempt's values where
        # Ray's results keep the retry's. The steps not logged yet travel in the checkpoint instead.
        with tempfile.TemporaryDirectory() as d:
            torch.save({**latest, **(extra or {}), "pack_wall_s": pack_wall_s,
                        "unlogged": [[row for _, row in run.pending] for run in runs]}, os.path.join(d, STATE_FILE))
            drill("before_report")
            try:
                # The training set's class counts and names: the driver draws an early-stopped run's artifacts.
                tune.report({**pack_summary(metrics, failures, cfgs[0].epochs), "member_cells": cells,
                             "class_counts": [int(n) for n in latest["counts"]], "classes": list(latest["classes"])},
                            checkpoint=tune.Checkpoint.from_directory(d))
            except SystemExit:  # Ray stopped the trial after this report (a scheduler's or stopper's decision)
                finish(PackResult(metrics, failures), stopped=True)
                raise
        drill("before_log")
        for m, run in enumerate(runs):
            if m in failures:
                run.finish("FAILED", f"DivergenceError: {failures[m]}")
            else:
                run.flush(attempts=3)
        if on_checkpoint is not None:
            on_checkpoint()
        drill("done")

    def finish(result: PackResult, stopped: bool = False) -> None:
        # A trial Ray stopped (``stopped``) loses its process a moment later (a CPU trial's process may go
        # on to the next trial): each member's last step goes first (the driver logs it if the process
        # did not). Its runs stay RUNNING: a scheduler stops a trial the way Ctrl+C does, and only the
        # driver knows which it was (core.sweep.close_orphans ends them FINISHED and tagged stopped early,
        # or KILLED until the same command resumes them).
        for m, run in enumerate(runs):
            if m in result.failures:
                run.finish("FAILED", f"DivergenceError: {result.failures[m]}")
            elif stopped:
                run.queue(result.metrics[m])
                run.flush()
            else:
                run.finish("FINISHED")

    try:
        result = train_pack(cfgs, report, resume=resume, save_state=save_state)
        finish(result)
        if len(result.failures) == len(cfgs):
            summary = pack_summary(result.metrics, result.failures, cfgs[0].epochs)
            tune.report({**summary, "member_cells": cells, "diverged": 1.0,
                         "error": "; ".join(sorted(set(result.failures.values())))})
        return result
    except SystemExit:  # Ray stopped the trial at a report (``finish(stopped=True)``): its runs are the driver's
        raise  # to end; marked FAILED here, they were whenever the process outlived this line (a reused one does)
    except BaseException as err:
        for run in runs:
            run.finish("FAILED", f"{type(err).__name__}: {err}")
        raise


# What a pack reports to Ray besides each member's metrics: the mean over its live members, which is
# the member's own value for a pack of one (what a searcher or scheduler reads).
HEADLINE = ("test_acc", "test_balanced_acc", "margin_gap", "test_acc_best", "val_acc", "val_acc_best",
            "test_acc_at_val_best", "train_loss", "wall_s", "stage_s")


def pack_summary(metrics: list[dict[str, float]], failures: dict[int, str], epochs: int) -> dict[str, Any]:
    """The Ray result of a pack: epoch of ``epochs``, members alive, the headline metrics' mean over the
    live members, every member's metrics (``member_metrics``) and the failures (``member_failures``)."""
    alive = [m for i, m in enumerate(metrics) if i not in failures and m]
    summary: dict[str, Any] = {"epoch": max((int(m.get("epoch", 0)) for m in metrics), default=0),
                               "epochs": epochs, "members_alive": len(alive)}
    for key in HEADLINE:
        values = [m[key] for m in alive if key in m]
        if values:
            summary[key] = sum(values) / len(values)
    summary["member_metrics"] = [dict(m) for m in metrics]
    summary["member_failures"] = {str(k): v for k, v in failures.items()}
    return summary


def run_name(method: str, config: dict[str, Any]) -> str:
    """The MLflow child run's name: the method and the swept values, e.g. ``mamix_drw omega=0.125 seed=0``."""
    label = trial_label(config)
    return label if "method" in config else f"{method} {label}"


def end_stopped_run(run: tracking.TrialRun, report: dict[str, Any], member: int, params: dict[str, str]) -> None:
    """End the run of ``member`` of a trial a scheduler stopped after ``report`` (its last Ray result;
    the step is logged here unless the run holds it), saying so on the run when that came before its last
    epoch (an early stop: its metrics are not a full run's). A trial logs its last epoch's per-class
    artifacts itself; an early-stopped run gets those of the epoch it stopped at here, from the report's
    classes (none in a report of a trial begun before reports carried them), as its process ended first."""
    metrics = report["member_metrics"][member]
    run.queue(metrics)
    run.flush()
    reason = stop_reason(metrics["epoch"], int(params["epochs"]))
    if reason:
        run.set_tag(tracking.STOPPED_TAG, reason)
        if "classes" in report:
            log_trial_artifacts(run, metrics, report["class_counts"], report["classes"], params["method"],
                                params["dataset"], float(params["ratio"]))
    run.finish("FINISHED")


def log_trial_artifacts(run: tracking.TrialRun, metrics: dict[str, float], counts: list[int],
                        classes: list[str], method: str, dataset: str, ratio: float) -> None:
    """Per-class accuracy and margin table (JSON and CSV) and the per-class margin bar chart."""
    table = per_class_table(metrics, counts, classes)
    title = f"{method} on {dataset} (ratio {ratio:g}), epoch {int(metrics['epoch'])}"
    tracking.log_artifacts(run.uri, run.run_id, {
        "per_class.json": json.dumps(table.to_dict(orient="records"), indent=1).encode(),
        "per_class.csv": table.to_csv(index=False).encode(),
        "per_class_margin.png": margin_bar_chart(table, title),
    })
