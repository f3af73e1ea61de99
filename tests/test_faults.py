"""Faults: a killed trial, a corrupt checkpoint, a diverging trial, an unreachable tracking store,
and many trials logging to one SQLite store at once."""

import os
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
import torch
from ray import tune
from ray.tune.schedulers import FIFOScheduler

from conftest import ROOT
from core import tracking
from core.sweep import SweepSpec, close_orphans, run_sweep
from core.tracking import STOPPED_TAG
from core.tune import STATE_FILE, load_checkpoint_state
from sweeps.cli import failures
from sweeps.report import trials_from_mlflow
from test_sweep import runs_of, steps

DIGITS = dict(dataset="digits", method="mixup_drw", epochs=3, milestones=[2], drw_epoch=2, warmup_epochs=1,
              device="cpu")


@pytest.mark.parametrize("kill, epoch", [("sigkill", 1), ("sigkill_before_report", 3), ("sigkill_before_log", 3)])
def test_a_killed_trial_resumes_with_one_continuous_history(ray_session, tmp_path, kill, epoch):
    """Killed while the next epoch trains; with the last epoch's checkpoint written but not yet reported
    to Ray (MLflow logged it first once, so the lost attempt's values stayed there while Ray's table got
    the retry's); or reported to Ray but not yet logged. Each step is in MLflow once, and the last one
    holds the values of Ray's result."""
    result = run_sweep(SweepSpec(name="sigkill", base=DIGITS, grid={"seed": [0]}, results_dir=str(tmp_path),
                                 max_failures=2, fault=(kill, epoch)))
    assert result.num_errors == 0
    client, _, children = runs_of(tmp_path, "sigkill")
    assert len(children) == 1 and children[0].info.status == "FINISHED", "the retry continues the trial's run"
    assert steps(client, children[0], "test_acc") == [1, 2, 3]
    assert result.trials["epoch"].tolist() == [3]
    history = {key: [m.value for m in sorted(client.get_metric_history(children[0].info.run_id, key),
                                             key=lambda m: m.step)] for key in ("wall_s", "test_acc")}
    assert result.trials["test_acc"].tolist() == history["test_acc"][-1:]
    # A crash does not reset the trial's wall time: the retry adds its own to its checkpoint's.
    wall = history["wall_s"]
    assert wall[0] < wall[1] < wall[2] and result.trials["wall_s"].tolist() == [wall[2]]


def test_a_diverging_trial_fails_at_once_and_the_others_finish(ray_session, tmp_path):
    result = run_sweep(SweepSpec(name="nan", base=dict(DIGITS, method="erm"), grid={"lr": [0.05, 1e30]},
                                 results_dir=str(tmp_path), max_failures=2))
    by_lr = result.trials.set_index("lr")
    assert by_lr.loc[1e30, "status"] == "DIVERGED" and "nan" in by_lr.loc[1e30, "error"]
    assert by_lr.loc[0.05, "status"] == "FINISHED" and by_lr.loc[0.05, "epoch"] == 3
    _, _, children = runs_of(tmp_path, "nan")
    statuses = sorted(c.info.status for c in children)
    assert statuses == ["FAILED", "FINISHED"], "one run per trial: a diverging trial is not retried"
    failed = next(c for c in children if c.info.status == "FAILED")
    assert failed.data.tags["error"].startswith("DivergenceError: train_loss is nan")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", None])
def test_a_corrupt_or_truncated_checkpoint_restarts_the_trial_from_scratch(tmp_path, content, caplog):
    torch.save({"epoch": 2, "model": {"w": torch.ones(3)}}, tmp_path / STATE_FILE)
    assert load_checkpoint_state(tune.Checkpoint.from_directory(str(tmp_path)))["epoch"] == 2
    if content is None:  # truncated: the first half of that real checkpoint
        data = (tmp_path / STATE_FILE).read_bytes()
        content = data[: len(data) // 2]
    (tmp_path / STATE_FILE).write_bytes(content)
    assert load_checkpoint_state(tune.Checkpoint.from_directory(str(tmp_path))) is None
    assert "unreadable" in caplog.text


def test_checkpoints_do_not_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"epoch": 1, "payload": Evil()}, tmp_path / STATE_FILE)
    assert load_checkpoint_state(tune.Checkpoint.from_directory(str(tmp_path))) is None


def test_logging_outage_is_buffered_and_delivered(tmp_path, monkeypatch):
    uri = tracking.default_tracking_uri(str(tmp_path))
    exp = tracking.experiment_id(uri, "outage")
    parent = tracking.start_parent_run(uri, exp, "outage", {})
    run = tracking.TrialRun(uri, exp, parent, "t0", "t0", {"omega": 0.25})
    real = run.client.log_batch
    down = {"on": True}

    def flaky(*a, **k):
        if down["on"]:
            raise ConnectionError("tracking server unreachable")
        return real(*a, **k)

    monkeypatch.setattr(run.client, "log_batch", flaky)
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    for epoch in (1, 2):
        run.log_epoch({"epoch": epoch, "test_acc": 0.1 * epoch})  # must not raise
    assert len(run.pending) == 2
    down["on"] = False
    run.log_epoch({"epoch": 3, "test_acc": 0.3})
    run.finish("FINISHED")
    history = tracking.client(uri).get_metric_history(run.run_id, "test_acc")
    assert sorted(m.step for m in history) == [1, 2, 3]


def test_sixteen_concurrent_trials_lose_no_metric_in_sqlite(tmp_path):
    """16 processes, each one trial logging every epoch through TrialRun, into one SQLite store."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
    from mlflow_concurrency import measure

    row = measure(trials=16, epochs=5, folder=str(tmp_path))
    assert row["arrived_steps"] == row["expected_steps"] == 80


ARTIFACTS = {"per_class.json", "per_class.csv", "per_class_margin.png"}


class StopLikeASHA(FIFOScheduler):
    """Stops the trial of seed 1 after its first epoch, as ASHA stops a trial at a rung, and every
    trial at its last epoch, as ASHA does at ``max_t``."""

    def on_trial_result(self, tune_controller, trial, result):
        seeds = [cell["seed"] for cell in trial.config.get("members", [trial.config])]
        return self.STOP if result["epoch"] == 3 or (seeds == [1] and result["epoch"] == 1) else self.CONTINUE


def test_trials_a_scheduler_stops_end_finished_with_every_reported_step(ray_session, tmp_path):
    result = run_sweep(SweepSpec(name="asha", base=DIGITS, grid={"seed": [0, 1]}, results_dir=str(tmp_path),
                                 scheduler=StopLikeASHA(), fuse=1))
    assert result.num_errors == 0 and sorted(result.trials["epoch"]) == [1, 3]
    client, parents, children = runs_of(tmp_path, "asha")
    by_seed = {c.data.params["seed"]: c for c in children}
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED"], "not FAILED with 'SystemExit: 0'"
    assert steps(client, by_seed["0"], "test_acc") == [1, 2, 3] and STOPPED_TAG not in by_seed["0"].data.tags
    assert steps(client, by_seed["1"], "test_acc") == [1]
    assert by_seed["1"].data.tags[STOPPED_TAG] == "stopped by the scheduler after epoch 1 of 3"
    # Each run has its per-class table and margin chart: of its last epoch (ASHA's stop at max_t), of the
    # epoch it was stopped at (a rung). A stopped trial's process ends before it could draw them.
    for seed, run in by_seed.items():
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == ARTIFACTS, seed
        table = pd.read_csv(client.download_artifacts(run.info.run_id, "per_class.csv", str(tmp_path / seed)))
        assert table["test_acc"].tolist() == [run.data.metrics[f"class_acc_{c}"] for c in range(10)], seed
    # The searches' report reads the trials back from MLflow and lists the stopped one with its reason.
    trials = trials_from_mlflow(result.tracking_uri, parents[0].info.experiment_id, parents[0].info.run_id)
    assert sorted(trials["status"]) == ["FINISHED", "STOPPED"]
    assert "stopped by the scheduler after epoch 1 of 3" in failures(trials)


class Ended:
    """What ``close_orphans`` reads of a Ray ``Result``."""

    def __init__(self, error, metrics):
        self.error, self.metrics = error, metrics


def test_runs_left_running_end_finished_if_ray_stopped_their_trial_else_killed(tmp_path):
    """A stopped trial's process logs its last report and leaves its runs to the driver, which alone
    knows why Ray stopped it. A scheduler's stop (the trial ended): FINISHED, tagged stopped early. A
    trial stopped by Ctrl+C reported without error too, but had not ended: its run is KILLED, not
    FINISHED at the step it was interrupted at, nor tagged stopped early; when it resumes, it goes on."""
    uri = tracking.default_tracking_uri(str(tmp_path))
    exp = tracking.experiment_id(uri, "left")
    parent = tracking.start_parent_run(uri, exp, "left", {})
    for trial_id in ("stopped", "killed", "interrupted"):
        tracking.TrialRun(uri, exp, parent, trial_id, trial_id, {"epochs": 3}).log_epoch({"epoch": 1, "test_acc": 0.5})
    report = {"epoch": 2, "test_acc": 0.6}
    close_orphans([Ended(None, {"trial_id": "stopped", "member_metrics": [report], "member_failures": {}}),
                   Ended(RuntimeError("node lost"), {"trial_id": "killed"}),
                   Ended(None, {"trial_id": "interrupted", "member_metrics": [report], "member_failures": {}})],
                  uri, exp, parent, {"stopped", "killed"}, wait_s=0)
    client = tracking.client(uri)
    runs = {r.info.run_name: r for r in tracking.child_runs(uri, exp, parent)}
    assert runs["stopped"].info.status == "FINISHED" and runs["killed"].info.status == "KILLED"
    assert runs["interrupted"].info.status == "KILLED" and STOPPED_TAG not in runs["interrupted"].data.tags
    assert [(m.step, m.value) for m in client.get_metric_history(runs["stopped"].info.run_id, "test_acc")] \
        == [(1, 0.5), (2, 0.6)]
    assert runs["stopped"].data.tags[STOPPED_TAG] == "stopped by the scheduler after epoch 2 of 3"
    # A run of a sweep begun before the driver decided carries its process's word, and drops it when resumed.
    tracking.set_tags(uri, runs["interrupted"].info.run_id, {STOPPED_TAG: "stopped by the scheduler after epoch 1 "
                                                             "of 3", "error": "SystemExit: 0"})
    tracking.TrialRun(uri, exp, parent, "interrupted", "interrupted", {"epochs": 3}).log_epoch(report)
    resumed = tracking.get_run(uri, runs["interrupted"].info.run_id)
    assert resumed.info.status == "RUNNING" and not {STOPPED_TAG, "error"} & set(resumed.data.tags)


def test_a_stopped_trial_that_logs_its_last_step_after_ray_returns_does_not_log_it_twice(tmp_path):
    """Ray's fit can return while a stopped trial's process still logs its last step; the driver waits
    for it rather than log that step too (with ``wait_s=0`` it reads step 1 as the run's last, and both
    log step 2: the history of a real sweep read [1, 2, 3, 3]), then ends the run."""
    uri = tracking.default_tracking_uri(str(tmp_path))
    exp = tracking.experiment_id(uri, "late")
    parent = tracking.start_parent_run(uri, exp, "late", {})
    own = tracking.TrialRun(uri, exp, parent, "stopped", "stopped", {"epochs": 3})
    own.log_epoch({"epoch": 1, "test_acc": 0.5})
    report = {"epoch": 2, "test_acc": 0.6}

    def the_trials_process_logs_late():
        time.sleep(1.0)
        own.log_epoch(report)

    late = threading.Thread(target=the_trials_process_logs_late)
    late.start()
    close_orphans([Ended(None, {"trial_id": "stopped", "member_metrics": [report], "member_failures": {}})],
                  uri, exp, parent, {"stopped"})
    late.join()
    (run,) = tracking.child_runs(uri, exp, parent)
    assert run.info.status == "FINISHED"
    assert [(m.step, m.value) for m in tracking.client(uri).get_metric_history(run.info.run_id, "test_acc")] \
        == [(1, 0.5), (2, 0.6)]


EXIT_IN_A_CALLBACK = """
import os, signal, sys, weakref

def ray_sigterm_handler(signum, frame):  # as a Ray worker's main loop sets it
    raise SystemExit(1)

class Thing:
    def __del__(self):
        raise ValueError("a real error in a __del__")

signal.signal(signal.SIGTERM, ray_sigterm_handler)
if sys.argv[1] == "hook":
    from core.tune import drop_exit_requests

    sys.unraisablehook = drop_exit_requests
thing = Thing()
ref = weakref.ref(thing, lambda _: os.kill(os.getpid(), signal.SIGTERM))  # the signal lands in the callback
del thing
print("went on")
"""


@pytest.mark.parametrize("hook", ["hook", "default"])
def test_a_trials_exit_request_landing_in_a_callback_prints_nothing(hook):
    """Ray ends a finished trial's process with SIGTERM; its handler's SystemExit, landing in a weakref
    callback, printed a traceback on the driver's terminal. With the trial's hook it prints nothing, and
    any other error in a callback still prints."""
    ran = subprocess.run([sys.executable, "-c", EXIT_IN_A_CALLBACK, hook], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert ran.stdout == "went on\n"
    assert "ValueError: a real error in a __del__" in ran.stderr
    assert ("SystemExit" in ran.stderr) == (hook == "default"), ran.stderr
