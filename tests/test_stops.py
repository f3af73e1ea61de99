"""Stopping a sweep and going on with it: Ctrl+C (while Ray starts, while a trial or a search's pack
trains), a SIGKILLed driver, SIGTERM before the trials start, and a second driver of a running sweep;
each time the same command resumes it, training and logging nothing twice."""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import ROOT, sweep_driver
from core.sweep import SweepInterrupted, SweepRunning, one_driver
from core.tracking import STOPPED_TAG
from sweeps import omega_sensitivity, report
from test_sweep import runs_of, steps


def one_at_a_time(tmp_path, name, epochs, omegas=("0.25", "4")):
    """The omega sweep's flags for demo cells (two by default) trained as Ray trials, one after the other."""
    return ["--preset", "demo", "--omegas", *omegas, "--seeds", "1", "--epochs", str(epochs),
            "--max-concurrent", "1", "--cpus-per-trial", "1", "--fuse", "1",
            "--results-dir", str(tmp_path), "--name", name]


def wait_for_runs(driver, tmp_path, name, ready, timeout=240):
    """Poll the sweep's MLflow child runs until ``ready(client, children)``, while its driver runs."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        # sweep.json is written after the driver created the store: opening it earlier would run
        # MLflow's schema migrations twice at once.
        if os.path.exists(os.path.join(tmp_path, name, "sweep.json")):
            try:
                client, _, children = runs_of(tmp_path, name)
            except Exception:  # noqa: BLE001 - the store may be mid-creation
                client, children = None, []
            if children and ready(client, children):
                return
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        time.sleep(0.3)
    pytest.fail(f"the sweep's runs were not ready in {timeout} s")


def ctrl_c_mid_trial(ray_session, tmp_path, name, args, script="omega_sensitivity.py"):
    """Start the sweep, press Ctrl+C (SIGINT to its process group) once a Ray trial has started after
    another ended (its members' runs all finished) and has reported, and return the driver's exit status
    and log."""
    def second_trial_reported(client, children):
        trials = {}
        for c in children:
            trials.setdefault(c.data.tags["ray.trial_id"], []).append(c)
        ended = [t for t, runs in trials.items() if all(r.info.status == "FINISHED" for r in runs)]
        return ended and any(c.info.status == "RUNNING" and c.data.tags["ray.trial_id"] not in ended
                             and steps(client, c, "test_acc") for c in children)

    with sweep_driver(ray_session, tmp_path, args, script) as driver:
        wait_for_runs(driver, tmp_path, name, second_trial_reported)
        os.killpg(driver.pid, signal.SIGINT)
        status = driver.wait(timeout=120)
    return status, (tmp_path / "driver.log").read_text()


def assert_resumed_once(tmp_path, name, args, epochs, omegas=(0.25, 4.0)):
    """The same command again: every cell in the table, each run FINISHED with every epoch logged once."""
    table = omega_sensitivity.main(args)[0].frame
    assert sorted(table["omega"]) == list(omegas) and (table["n"] == 1).all()
    client, parents, children = runs_of(tmp_path, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == len(omegas), [c.data.tags.get("ray.trial_id") for c in children]
    for child in children:
        assert child.info.status == "FINISHED"
        assert steps(client, child, "test_acc") == list(range(1, epochs + 1))


def test_interrupted_sweep_resumes_without_duplicates(ray_session, tmp_path):
    """The driver SIGKILLed after the first trial finished; the same command resumes the sweep. Run while
    the first driver still runs (stopped here, so that it surely does), the same command is refused with
    one message naming that driver: it would restore the same experiment and train its trials twice (tried:
    the second tabled one cell, its other trial ERROR for want of a checkpoint the first had deleted,
    and the first ended "interrupted: 0 of 2"). The killed driver's hold on the sweep dies with it."""
    args = one_at_a_time(tmp_path, "resume", epochs=2)
    with sweep_driver(ray_session, tmp_path, args) as driver:
        wait_for_runs(driver, tmp_path, "resume", lambda client, children: any(
            c.info.status == "FINISHED" for c in children))
        os.killpg(driver.pid, signal.SIGSTOP)
        with pytest.raises(SweepRunning, match=rf"^name: the sweep resume in {re.escape(str(tmp_path))} is running "
                                               rf"now \(driver pid {driver.pid} on .*omega_sensitivity.py --preset demo"):
            omega_sensitivity.main(args)
        os.killpg(driver.pid, signal.SIGKILL)
    assert_resumed_once(tmp_path, "resume", args, epochs=2)


def test_a_search_refuses_a_second_driver_before_touching_its_study(tmp_path):
    """A search holds its name for all its rounds, from before --restart would archive its study."""
    from sweeps import tune_hparams

    args = ["--preset", "demo", "--num-samples", "2", "--results-dir", str(tmp_path), "--name", "held", "--restart"]
    with one_driver(str(tmp_path), "held"):
        with pytest.raises(SweepRunning, match=r"^name: the sweep held in .* is running now \(driver pid "):
            tune_hparams.main(args)
    assert sorted(os.listdir(tmp_path)) == [".held.lock"]  # no study, no round, nothing archived


def test_ctrl_c_ends_the_sweep_with_one_line_and_the_same_command_resumes_it(ray_session, tmp_path):
    """Ctrl+C (SIGINT to the terminal's process group) while the second of two trials runs, then in a later
    round of the grown grid. Ray stops that trial and keeps its checkpoint; the sweep used to count it
    done, list it as stopped by a scheduler, end its run FINISHED at that epoch and publish a table (or,
    with no trial ended, stop on a KeyError). It must end with one line and the shell's status for
    Ctrl+C, and tabulate nothing."""
    args = one_at_a_time(tmp_path, "ctrl-c", epochs=40)
    status, log = ctrl_c_mid_trial(ray_session, tmp_path, "ctrl-c", args)
    assert status == 130, log[-3000:]
    assert ("interrupted: 1 of 2 trials of ctrl-c ended before the stop; the others resume from their last "
            "checkpoints when the same command runs again") in log.splitlines(), log[-3000:]
    assert "status: 1/2 done, 0 running, 1 pending" in log
    # The driver's own lines: a trial process that Ray ends may print "Exception ignored in ... Traceback"
    # from its exit, which Ray forwards prefixed "(trial pid=N)" (seen once in a make test).
    driver_lines = "\n".join(line for line in log.splitlines() if "(trial pid=" not in line)
    assert "Traceback" not in driver_lines and "stopped by the scheduler" not in log and "Tuner.restore" not in log
    assert not (tmp_path / "ctrl-c" / "table12.md").exists()
    client, parents, children = runs_of(tmp_path, "ctrl-c")
    assert parents[0].info.status == "KILLED"
    assert sorted(c.info.status for c in children) == ["FINISHED", "KILLED"]
    # MLflow alone tables the trials finished so far, and says the sweep is unfinished.
    (partial,) = report.main(["--experiment", "ctrl-c", "--results-dir", str(tmp_path)])[:1]
    assert partial.frame["omega"].tolist() == [0.25]
    assert partial.title.endswith("[sweep unfinished (KILLED): 1 of its 2 trials]")
    assert not any(STOPPED_TAG in c.data.tags for c in children)  # Ctrl+C is no scheduler's early stop
    assert_resumed_once(tmp_path, "ctrl-c", args, epochs=40)
    # ... and its resumed trial is no early stop either: MLflow tables both (it tabled one, as complete).
    (resumed,) = report.main(["--experiment", "ctrl-c", "--results-dir", str(tmp_path)])[:1]
    assert resumed.frame["omega"].tolist() == [0.25, 4.0] and "unfinished" not in resumed.title

    # The grid grown by an omega trains it in a round of its own (its folder ctrl-c-more2, after 2 cells) under
    # the same parent run. Ctrl+C there ends the same way, naming the round; the grown command resumes the round.
    grown = one_at_a_time(tmp_path, "ctrl-c", epochs=40, omegas=("0.25", "4", "8"))
    status, log = ctrl_c_mid_trial(ray_session, tmp_path, "ctrl-c", grown)
    assert status == 130, log[-3000:]
    assert ("interrupted: 0 of 1 trials of ctrl-c (its round ctrl-c-more2) ended before the stop; the others "
            "resume from their last checkpoints when the same command runs again") in log.splitlines(), log[-3000:]
    client, parents, children = runs_of(tmp_path, "ctrl-c")
    assert [p.info.status for p in parents] == ["KILLED"]
    assert sorted(c.info.status for c in children) == ["FINISHED", "FINISHED", "KILLED"]
    (partial,) = report.main(["--experiment", "ctrl-c", "--results-dir", str(tmp_path)])[:1]
    assert partial.title.endswith("[sweep unfinished (KILLED): 2 of its 3 trials]")
    assert_resumed_once(tmp_path, "ctrl-c", grown, epochs=40, omegas=(0.25, 4.0, 8.0))


def test_ctrl_c_while_ray_starts_ends_with_one_line_and_leaves_no_ray_process(tmp_path):
    """Ctrl+C while the driver starts its local Ray (seconds on a laptop: when a wrong flag gets
    noticed). It gave a traceback and exit status 1, and left the instance's dashboard and runtime-env
    agents running without a driver for a minute or more (tried). The start must finish, then the
    driver end with one line and the status for Ctrl+C, leaving no process of its own and nothing in
    the results folder but its hold on the sweep (a lock file, free once the driver ended)."""
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths live below it
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # no cluster: the driver starts Ray
    env.update(TMPDIR=temp, RAY_AUTH_MODE="disabled")
    args = ["--preset", "demo", "--omegas", "1", "--seeds", "1", "--epochs", "1", "--results-dir", str(tmp_path)]
    driver = subprocess.Popen([sys.executable, os.path.join(ROOT, "sweeps", "omega_sensitivity.py"), *args],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)

    def group() -> list[str]:  # the driver's process group (its terminal's job): it and what it started
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):
                if os.getpgid(int(pid)) == driver.pid and int(pid) != driver.pid:
                    found.append(open(f"/proc/{pid}/cmdline").read().replace("\0", " ")[:80])
        return found

    try:
        deadline = time.monotonic() + 60
        while not any("raylet" in command for command in group()) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(driver.pid, signal.SIGINT)  # the raylet is up, starting its agents: ray.init is under way
        _, err = driver.communicate(timeout=120)
        deadline = time.monotonic() + 15
        while group() and time.monotonic() < deadline:
            time.sleep(0.2)
        left = group()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        shutil.rmtree(temp, ignore_errors=True)
    assert "Traceback" not in err and driver.returncode == 130, err[-3000:]
    assert err.splitlines()[-1] == ("interrupted while Ray was starting, before any trial; the same command "
                                    "starts the sweep"), err[-3000:]
    assert left == [], left
    assert os.listdir(tmp_path) == [".omega_sensitivity-demo.lock"]


def test_a_signal_before_the_trials_start_ends_the_parent_run_killed(ray_session, tmp_path, monkeypatch):
    """SIGTERM (as `ray job stop` sends) after the parent run exists, before Tune's trials start (here
    as the stages would train): the driver died (Ray's SIGTERM handler) and left the parent RUNNING for
    good. It must end as Ctrl+C does there, with one line and the parent KILLED, and the same command
    go on under that parent. After a sweep has run in the process (a search's rounds), Tune's handler
    from its fit swallowed Ctrl+C and the signals taken as it outside the next fit (tried)."""
    def sweep(name):
        return ["--preset", "demo", "--omegas", "1", "--seeds", "1", "--epochs", "1", "--results-dir",
                str(tmp_path), "--name", name]

    def terminated(*_):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs at once, in this (the main) thread

    # Unheeded, SIGTERM would abort the whole test session (Ray's handler here, as in the driver).
    unheeded = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        for name in ("early", "after-a-sweep"):
            monkeypatch.setattr("core.sweep.run_stages", terminated)
            with pytest.raises(SweepInterrupted, match=f"^interrupted before the trials of {name} started; the same "
                                                       f"command starts them$") as stop:
                omega_sensitivity.main(sweep(name))
            assert stop.value.signum == signal.SIGTERM
            _, parents, children = runs_of(tmp_path, name)
            assert [p.info.status for p in parents] == ["KILLED"] and children == []
            monkeypatch.undo()
            if name == "early":  # the same command goes on; and a sweep has run in this process
                assert omega_sensitivity.main(sweep(name))[0].frame["omega"].tolist() == [1.0]
                _, again, children = runs_of(tmp_path, name)
                assert [p.info.run_id for p in again] == [parents[0].info.run_id]
                assert again[0].info.status == "FINISHED" and [c.info.status for c in children] == ["FINISHED"]
    finally:
        signal.signal(signal.SIGTERM, unheeded)


def test_ctrl_c_stops_a_search_and_the_same_command_resumes_its_round(ray_session, tmp_path):
    """Ctrl+C while the second of two packs of a search trains, then the same command. It used to leave
    that pack's two trials RUNNING in the study for good, its runs KILLED, and ask for two more in a new
    round, whose first pack, seeded as the first round's, asked the first round's configurations again.
    It must resume the round: four configurations, each trained once, in one round."""
    import optuna

    from sweeps import tune_hparams

    args = ["--preset", "demo", "--method", "mamix_drw", "--num-samples", "4", "--fuse", "2", "--epochs", "40",
            "--max-concurrent", "1", "--cpus-per-trial", "1", "--results-dir", str(tmp_path), "--name", "search"]
    status, log = ctrl_c_mid_trial(ray_session, tmp_path, "search", args, script="tune_hparams.py")
    assert status == 130 and ("interrupted: 2 of 4 trials of search ended before the stop; the others resume from "
                              "their last checkpoints when the same command runs again") in log, log[-3000:]
    table = tune_hparams.main(args)
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{tmp_path}/search.optuna.db")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4 and len(table) == 4
    client, parents, children = runs_of(tmp_path, "search")
    assert [p.info.status for p in parents] == ["FINISHED"] and len(children) == 4
    for child in children:
        assert child.info.status == "FINISHED" and steps(client, child, "val_acc") == list(range(1, 41))
