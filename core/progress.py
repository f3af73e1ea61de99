"""What a user sees while a sweep runs: one line per finished trial and a periodic status.

``SweepProgress`` is a Ray Tune callback on the driver. It replaces Tune's own console output (the
configuration box, the TensorBoard hint, the per-checkpoint messages), which ``core.sweep`` turns
off. A trial is named by its swept values (``omega=0.125 seed=0``), as its MLflow child run is.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

import cloudpickle
from ray import tune

log = logging.getLogger(__name__)

DONE = ("TERMINATED", "ERROR")


def trial_label(config: dict[str, Any]) -> str:
    """The swept values of a trial, e.g. ``omega=0.125 seed=0``."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items())


def members(trial) -> list[dict[str, Any]]:
    """The swept values of each member a Ray trial trains (one, unless the sweep fuses cells): as the
    trial reported them (a fused search asks its members once it runs), else from its config."""
    return member_cells(trial.config or {}, trial.last_result or {})


def member_cells(config: dict[str, Any], result: dict[str, Any]) -> list[dict[str, Any]]:
    return result.get("member_cells") or config.get("members", [config])


def stop_reason(epoch: float | None, epochs: int | None) -> str:
    """Why a member's run ended at ``epoch`` of ``epochs`` when that is before its last: a scheduler
    (ASHA) stopped its trial. Empty for a full run, or when either is unknown."""
    if epoch is None or epochs is None or epoch >= epochs:
        return ""
    return f"stopped by the scheduler after epoch {int(epoch)} of {int(epochs)}"


def error_reason(error: BaseException | str | None) -> str:
    """One line saying why a trial failed: the original exception inside Ray's wrapper, first line."""
    cause = getattr(error, "cause", None) or error
    text = f"{type(cause).__name__}: {cause}" if isinstance(cause, BaseException) else str(cause or "unknown")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[0] if lines else "unknown")[:300]


def last_error(trial) -> BaseException | None:
    """The exception that ended a trial, from the driver's copy of its error file (the copy in the
    storage path is written later)."""
    path = trial.pickled_error_file
    if not path or not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return cloudpickle.load(f)


def clock_text(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def epoch_share(trial) -> float | None:
    """How much of its training a trial has done by its last report (epoch of epochs), if it said."""
    result = trial.last_result or {}
    return result["epoch"] / result["epochs"] if result.get("epochs") and "epoch" in result else None


class SweepProgress(tune.Callback):
    """Logs a line per finished or failed trial (each member of a fused pack is a trial here), and
    every ``every`` seconds a status line: trials done / running / pending, time elapsed, and the time
    left at the rate the sweep has trained so far. The rate counts epochs, not only trials ended: a
    paper-scale sweep's trials take hours each, and its first status lines had no estimate until one
    ended (nor had a resumed sweep's)."""

    def __init__(self, total: int, every: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.total, self.every, self.clock = total, every, clock
        self.setup()

    def setup(self, **info) -> None:
        """Called when the sweep starts or resumes (a resumed sweep unpickles this callback)."""
        self.start = self.last_status = self.clock()
        self.ended: set[str] | None = None  # trials that finished, were stopped or failed for good
        self.ended_here: set[str] = set()  # ... in this invocation
        self.first_epoch: dict[str, int] = {}  # each trial's first epoch reported in this invocation

    def ended_trials(self, trials: list) -> set[str]:
        """The trials that ended. Ray marks the trials it stops on Ctrl+C TERMINATED as well, with no
        event, so a trial ends by its event here; those a resumed sweep had ended are done when it
        first steps."""
        if self.ended is None:
            self.ended = {t.trial_id for t in trials if t.status in DONE}
        return self.ended

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        self.ended_trials(trials)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict[str, Any], **info) -> None:
        if "epoch" in result:
            self.first_epoch.setdefault(trial.trial_id, int(result["epoch"]))

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self.ended_trials(trials).add(trial.trial_id)
        self.ended_here.add(trial.trial_id)
        result = trial.last_result or {}
        cells = members(trial)
        member_metrics = result.get("member_metrics") or [result] * len(cells)
        failures = result.get("member_failures") or {}
        for m, cell in enumerate(cells):
            if str(m) in failures:
                log.info("trial %s diverged: %s", trial_label(cell), failures[str(m)])
                continue
            metrics = member_metrics[m]
            how = stop_reason(metrics.get("epoch"), result.get("epochs")) or "finished"
            log.info("trial %s %s: test_acc %.4f, margin_gap %.4f, %.0f s", trial_label(cell), how,
                     metrics.get("test_acc", float("nan")), metrics.get("margin_gap", float("nan")),
                     result.get("time_total_s", float("nan")))

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self.ended_trials(trials).add(trial.trial_id)
        self.ended_here.add(trial.trial_id)
        cells = members(trial)
        reason = error_reason(last_error(trial))
        for cell in cells:
            log.info("trial %s failed: %s", trial_label(cell), reason)

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if self.clock() - self.last_status >= self.every:
            log.info(self.status(trials))

    def on_experiment_end(self, trials: list, **info) -> None:
        log.info(self.status(trials))

    def status(self, trials: list) -> str:
        self.last_status = now = self.clock()
        ended = self.ended_trials(trials)
        done = sum(len(members(t)) for t in trials if t.trial_id in ended)
        running = sum(len(members(t)) for t in trials if t.status == "RUNNING" and t.trial_id not in ended)
        pending = max(self.total - done - running, 0)
        elapsed = now - self.start
        line = f"status: {done}/{self.total} done, {running} running, {pending} pending; elapsed {clock_text(elapsed)}"
        # In trials' worth of training: an ended trial counts whole (a scheduler's stop leaves it nothing
        # to train), another by the epochs it has reported, here or before a resume.
        progress = done + sum(len(members(t)) * (epoch_share(t) or 0) for t in trials if t.trial_id not in ended)
        trained_here = sum(len(members(t)) * self.share_here(t) for t in trials)
        if 0 < progress < self.total and trained_here > 0:
            line += f", about {clock_text(elapsed / trained_here * (self.total - progress))} left"
        return line

    def share_here(self, trial) -> float:
        """How much of a trial's training was done in this invocation: the epochs it reported here, or,
        for a trial that ended here without saying its epochs, all of it."""
        share, first = epoch_share(trial), self.first_epoch.get(trial.trial_id)
        if share is not None and first is not None:
            return share - (first - 1) / trial.last_result["epochs"]
        return 1.0 if trial.trial_id in self.ended_here else 0.0
