"""The sweep platform through the real Ray Tuner and a real MLflow store (one Ray instance per session)."""

import logging
import os
import re
from dataclasses import replace

import pytest
import torch
from mlflow.tracking import MlflowClient

from core.progress import SweepProgress
from core.tracking import STOPPED_TAG
from core.sweep import (SweepSpec, auto_cpus, grid_configs, packs, run_sweep, saved_trials, trial_resources,
                        trial_table)
from core.train import train_pack
from core.tune import pack_summary
from sweeps import cli, omega_sensitivity, report

TINY = ["--preset", "demo", "--omegas", "0.25", "4", "--seeds", "1", "--epochs", "2", "--num-cpus", "2"]


def runs_of(results_dir, name):
    client = MlflowClient(f"sqlite:///{results_dir}/mlflow.db")
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def steps(client, run, key):
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, key))


def test_tiny_omega_sweep_logs_parent_and_children(ray_session, tmp_path, caplog, capfd):
    caplog.set_level(logging.INFO)
    table = omega_sensitivity.main(TINY + ["--results-dir", str(tmp_path)])[0].frame
    # What the user sees: a line per trial named by its swept values, and no Tune chatter.
    assert "trial omega=0.25 seed=0 finished: test_acc " in caplog.text
    assert "trial omega=4 seed=0 finished: test_acc " in caplog.text and "margin_gap" in caplog.text
    assert "status: 2/2 done, 0 running, 0 pending" in caplog.text
    shown = capfd.readouterr()
    assert "tensorboard" not in (shown.out + shown.err).lower()
    assert "Checkpoint successfully created" not in shown.out + shown.err
    assert sorted(table["omega"]) == [0.25, 4.0]
    assert (table["n"] == 1).all()
    client, parents, children = runs_of(tmp_path, "omega_sensitivity-demo")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["preset"] == "demo" and parents[0].data.tags["git_commit"]
    assert len(children) == 2
    assert {c.info.run_name for c in children} == {"mamix_drw omega=0.25 seed=0", "mamix_drw omega=4 seed=0"}
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert steps(client, child, "margin_gap") == [1, 2]
        assert steps(client, child, "test_acc") == [1, 2]
        assert {"per_class.json", "per_class.csv", "per_class_margin.png"} <= \
            {a.path for a in client.list_artifacts(child.info.run_id)}
    assert float(children[0].data.params["omega"]) in (0.25, 4.0)
    saved = os.path.join(tmp_path, "omega_sensitivity-demo")
    assert {"table12.csv", "table12.md", "table12.tex", "accuracy_vs_omega.png"} <= set(os.listdir(saved))

    # The table rebuilt from MLflow alone equals the one the sweep printed.
    rebuilt = report.main(["--experiment", "omega_sensitivity-demo", "--results-dir", str(tmp_path)])
    with open(os.path.join(saved, "table12.md")) as f:
        assert rebuilt[0].markdown() + "\n" == f.read()
    assert os.path.exists(os.path.join(saved, "report", "table12.tex"))

    # Re-runs never relabel: other settings under the same name are refused, naming what differs and
    # the two ways on; the same settings resume (nothing runs again).
    with pytest.raises(ValueError) as refused:
        omega_sensitivity.main(TINY + ["--results-dir", str(tmp_path), "--epochs", "1"])
    assert "epochs 2 -> 1" in str(refused.value) and "--name" in str(refused.value)
    assert "--restart" in str(refused.value) and "omega (grid)" not in str(refused.value)
    with pytest.raises(ValueError, match="clean_forward .*-> true"):
        omega_sensitivity.main(TINY + ["--results-dir", str(tmp_path), "--set", "clean_forward=true"])
    # A grid that grows (a second seed) trains its new cells alone, in a round of their own under the same
    # parent run, and tables every cell; run again, it trains nothing (the same settings resume).
    grown = TINY + ["--results-dir", str(tmp_path), "--seeds", "2"]
    bigger = omega_sensitivity.main(grown)[0].frame
    assert sorted(bigger["omega"]) == [0.25, 4.0] and (bigger["n"] == 2).all()
    client, parents, children = runs_of(tmp_path, "omega_sensitivity-demo")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(c.info.run_name for c in children) == [f"mamix_drw omega={omega} seed={seed}"
                                                        for omega in ("0.25", "4") for seed in (0, 1)]
    assert all(steps(client, c, "test_acc") == [1, 2] for c in children)  # each trained once
    assert os.path.exists(os.path.join(tmp_path, "omega_sensitivity-demo-more2", "sweep.json"))
    rebuilt = report.main(["--experiment", "omega_sensitivity-demo", "--results-dir", str(tmp_path)])
    assert rebuilt[0].frame.equals(bigger) and "unfinished" not in rebuilt[0].title
    assert omega_sensitivity.main(grown)[0].frame.equals(bigger)
    assert len(runs_of(tmp_path, "omega_sensitivity-demo")[2]) == 4
    with pytest.raises(ValueError, match=r"seed \(grid\) \[0, 1\] -> \[0\]"):  # a grid that shrinks
        omega_sensitivity.main(TINY + ["--results-dir", str(tmp_path)])

    # --restart archives the old folders (the grown grid's round too) and parent run; the new sweep is
    # the one reported (and --set reaches every trial: the authors' clean forward, here).
    new = omega_sensitivity.main(TINY + ["--results-dir", str(tmp_path), "--epochs", "1", "--omegas", "1",
                                         "--set", "clean_forward=true", "--restart"])[0].frame
    assert new["omega"].tolist() == [1.0]
    archived, more = sorted(os.listdir(os.path.join(tmp_path, "archived")), key=lambda name: "-more" in name)
    assert more.startswith("omega_sensitivity-demo-more2-")
    assert {"table12.md", "sweep.json"} <= set(os.listdir(os.path.join(tmp_path, "archived", archived)))
    client, parents, children = runs_of(tmp_path, "omega_sensitivity-demo")
    old = client.get_run(parents[0].info.run_id) if "archived" in client.get_run(parents[0].info.run_id).data.tags \
        else client.get_run(parents[1].info.run_id)
    assert old.data.tags["archived"].endswith(archived) and "(archived" in old.info.run_name
    assert len(parents) == 2 and len(children) == 5
    assert sorted(c.data.params["clean_forward"] for c in children) == ["False"] * 4 + ["True"]
    rebuilt = report.main(["--experiment", "omega_sensitivity-demo", "--results-dir", str(tmp_path)])
    assert rebuilt[0].frame["omega"].tolist() == [1.0]


def test_a_sweep_started_before_a_default_changed_what_trials_compute_does_not_resume(tmp_path):
    """A sweep folder of the code before the authors' bias-free head (its settings lack ``head_bias``
    and ``head_init``) held trials with Cao et al.'s head: re-run after the upgrade, it is refused by name."""
    import json

    from core.sweep import STATE_FILE, SettingsChanged, claim_folder, sweep_settings

    spec = SweepSpec(name="old", base=dict(dataset="digits", method="mamix_drw"), grid={"omega": [1.0]},
                     results_dir=str(tmp_path))
    settings = sweep_settings(spec)
    assert (settings["head_bias"], settings["head_init"]) == (False, "pytorch")  # recorded, though not set
    os.makedirs(spec.path)
    former = {k: v for k, v in settings.items() if k not in ("head_bias", "head_init")}
    with open(os.path.join(spec.path, STATE_FILE), "w") as f:
        json.dump({"settings": former, "tracking_uri": spec.uri}, f)
    with pytest.raises(SettingsChanged, match='head_bias true -> false; head_init "kaiming_normal" -> "pytorch"'):
        claim_folder(spec)
    with open(os.path.join(spec.path, STATE_FILE), "w") as f:
        json.dump({"settings": settings, "tracking_uri": spec.uri}, f)
    claim_folder(spec)  # this code's own record resumes


def test_a_grid_grown_in_two_fields_trains_each_new_cell_once_in_rounds_recorded_before_they_run(tmp_path):
    """The rounds of a grown grid are Ray Tune grids (products of values), together exactly the new
    cells, none twice; the same command again finds them recorded and adds none."""
    import json

    from core.sweep import (STATE_FILE, SettingsChanged, claim_folder, grid_cells, grid_rounds, sweep_label,
                            sweep_settings)

    def spec(**grid):
        return SweepSpec(name="grow", base=dict(dataset="digits", method="mamix_drw"), grid=grid,
                         results_dir=str(tmp_path))

    first = spec(omega=[0.25], seed=[0])
    os.makedirs(first.path)
    with open(os.path.join(first.path, STATE_FILE), "w") as f:  # as the first run's _parent_run writes it
        json.dump({"parent_run_id": "p", "settings": sweep_settings(first), "tracking_uri": first.uri}, f)
    bigger = spec(omega=[0.25, 1.0, 4.0], seed=[0, 1, 2])
    claim_folder(bigger)
    rounds = grid_rounds(bigger)
    assert [(r.name, r.grid, r.parent_run_id) for r in rounds] == [
        ("grow", {"omega": [0.25], "seed": [0]}, None),
        ("grow-more1", {"omega": [1.0, 4.0], "seed": [0]}, "p"),
        ("grow-more3", {"omega": [0.25, 1.0, 4.0], "seed": [1, 2]}, "p")]
    cells = [json.dumps(c, sort_keys=True) for r in rounds for c in grid_cells(r)]
    assert sorted(cells) == sorted(json.dumps(c, sort_keys=True) for c in grid_cells(bigger))  # each once
    assert {r.experiment or r.name for r in rounds} == {"grow"}
    # The driver's lines (an interruption) name a round by the sweep the user ran, then by its folder.
    assert [sweep_label(r) for r in rounds] == ["grow", "grow (its round grow-more1)", "grow (its round grow-more3)"]
    assert [(r.name, r.grid) for r in grid_rounds(bigger)] == [(r.name, r.grid) for r in rounds]  # none added
    for changed, difference in ((spec(omega=[0.25, 1.0], seed=[0, 1, 2]), "omega (grid) [0.25, 1.0, 4.0] -> "),
                                (replace(bigger, base=dict(bigger.base, epochs=3)), "epochs ")):
        with pytest.raises(SettingsChanged, match=re.escape(difference)):
            claim_folder(changed)


def test_empty_grids_and_unknown_fault_drills_are_refused():
    with pytest.raises(ValueError, match="^omega: the grid holds no value"):
        grid_configs(SweepSpec(name="x", base=dict(dataset="digits", method="mamix_drw"), grid={"omega": []}))
    with pytest.raises(ValueError, match="^method: the grid holds 'erm' twice; give each value once"):
        grid_configs(SweepSpec(name="x", base=dict(dataset="digits"), grid={"method": ["erm", "drw", "erm"]}))
    with pytest.raises(ValueError, match="^num_samples: "):
        grid_configs(SweepSpec(name="x", base=dict(dataset="digits"), num_samples=0))
    with pytest.raises(ValueError, match="^fault: got 'sigterm'; allowed: .*'sigkill_before_log'"):
        grid_configs(SweepSpec(name="x", base=dict(dataset="digits"), fault=("sigterm", 1)))


def test_a_sweep_whose_trials_all_failed_ends_with_their_reasons(ray_session, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    spec = SweepSpec(name="all-fail", base=dict(dataset="digits", method="erm", epochs=1, milestones=[],
                                                drw_epoch=1, warmup_epochs=0, device="cpu"),
                     grid={"seed": [0, 1]}, results_dir=str(tmp_path), max_failures=0, fault=("raise", 1))
    result = run_sweep(spec)
    assert result.num_errors == 2
    assert "trial seed=0 failed: InjectedFault: injected crash after epoch 1" in caplog.text
    with pytest.raises(SystemExit) as ended:
        cli.finished_or_exit(result, spec)
    first, *rest = str(ended.value).splitlines()
    assert first == "error: all 2 trials of all-fail failed; there is no table to make."
    rows = [line for line in rest if "InjectedFault: injected crash after epoch 1" in line]
    assert len(rows) == 2 and {"seed=0", "seed=1"} == {row.split("|")[1].strip() for row in rows}


def test_a_table_the_grid_leaves_empty_is_named_and_the_others_are_written(ray_session, tmp_path, capsys):
    """Table 6 shows Remix-DRW and MAMix-DRW only; a grid of Mixup-DRW alone used to end, after its last
    trial, in tabulate's IndexError, with no table written (a 6-hour real-data run ended so)."""
    from sweeps import extreme_imbalance

    extreme_imbalance.main(["--preset", "demo", "--methods", "mixup_drw", "--ratios", "20", "--seeds", "1",
                            "--epochs", "1", "--num-cpus", "2", "--results-dir", str(tmp_path)])
    skipped = "Table 6: margin gap on long-tailed digits, ratio 20 (mean ± std over seeds)" \
              "\n\nnot made: none of the 1 finished trials is one of this table's rows"
    printed = capsys.readouterr().out
    assert printed.index("| mixup_drw |") < printed.index(skipped)  # after the tables that are made
    folder = tmp_path / "extreme_imbalance-demo"
    assert {"table2.md", "table2.csv", "trials.csv"} <= set(os.listdir(folder))
    assert not any(name.startswith("table6") for name in os.listdir(folder))
    [table2] = report.main(["--experiment", "extreme_imbalance-demo", "--results-dir", str(tmp_path)])
    printed = capsys.readouterr().out
    assert table2.stem == "table2" and printed.index("| mixup_drw |") < printed.index(skipped)


class FakeTrial:
    def __init__(self, status, **config):
        self.status, self.config, self.last_result, self.trial_id = status, config, {}, str(id(self))


def test_progress_status_counts_trials_and_estimates_the_time_left(caplog):
    caplog.set_level(logging.INFO)
    now = [0.0]
    progress = SweepProgress(total=4, every=30, clock=lambda: now[0])
    trials = [FakeTrial("TERMINATED", omega=0.5), FakeTrial("RUNNING", omega=1.0), FakeTrial("PENDING", omega=2.0)]
    trials[0].last_result = {"test_acc": 0.8125, "margin_gap": 0.5, "time_total_s": 12.0}
    now[0] = 60.0
    progress.on_trial_complete(1, trials, trials[0])
    progress.on_step_end(1, trials)
    assert caplog.messages == [
        "trial omega=0.5 finished: test_acc 0.8125, margin_gap 0.5000, 12 s",
        "status: 1/4 done, 1 running, 2 pending; elapsed 0:01:00, about 0:03:00 left",
    ]
    now[0] = 70.0
    progress.on_step_end(2, trials)  # within 30 s of the last status: nothing
    assert len(caplog.messages) == 2
    trials[1].status = "TERMINATED"  # Ctrl+C: Ray stops the running trial with no event; it did not end
    progress.on_experiment_end(trials)
    assert caplog.messages[-1] == "status: 1/4 done, 0 running, 3 pending; elapsed 0:01:10, about 0:03:30 left"


def test_progress_estimates_the_time_left_from_the_epochs_trained_before_any_trial_ends(caplog):
    """A paper cell trains for hours: its sweep's status lines had no estimate until a trial ended, nor
    had a resumed sweep's. The rate counts the epochs reported in this invocation, not those before it."""
    caplog.set_level(logging.INFO)
    now = [0.0]
    progress = SweepProgress(total=1, clock=lambda: now[0])
    trial = FakeTrial("RUNNING", omega=1.0)
    for epoch, t in [(1, 100.0), (2, 200.0), (3, 300.0)]:
        now[0], trial.last_result = t, {"epoch": epoch, "epochs": 200}
        progress.on_trial_result(epoch, [trial], trial, trial.last_result)
    assert progress.status([trial]) == "status: 0/1 done, 1 running, 0 pending; elapsed 0:05:00, about 5:28:20 left"

    # Resumed from the checkpoint of epoch 3: its first two epochs here took 50 s each.
    now[0] = 0.0
    progress.setup()
    assert progress.status([trial]) == "status: 0/1 done, 1 running, 0 pending; elapsed 0:00:00"
    for epoch, t in [(4, 50.0), (5, 100.0)]:
        now[0], trial.last_result = t, {"epoch": epoch, "epochs": 200}
        progress.on_trial_result(epoch, [trial], trial, trial.last_result)
    assert progress.status([trial]).endswith("elapsed 0:01:40, about 2:42:30 left")  # 195 epochs at 50 s

    # A fused pack of two cells at epoch 1 of 4 beside an ended trial: 1.5 of 3 trials' worth done.
    pack = FakeTrial("RUNNING", members=[{"omega": 0.5}, {"omega": 2.0}])
    ended = FakeTrial("TERMINATED", omega=4.0)
    ended.last_result = {"epoch": 4, "epochs": 4, "test_acc": 0.5, "margin_gap": 1.0, "time_total_s": 40.0}
    now[0] = 0.0
    progress = SweepProgress(total=3, clock=lambda: now[0])
    now[0], pack.last_result = 60.0, {"epoch": 1, "epochs": 4}
    progress.on_trial_result(1, [pack, ended], pack, pack.last_result)
    progress.on_trial_result(4, [pack, ended], ended, ended.last_result)
    progress.on_trial_complete(4, [pack, ended], ended)
    # trained here: 2 x 1/4 + 1/4 (its last epoch) = 0.75 of a trial in 60 s; 1.5 left
    assert progress.status([pack, ended]).endswith(
        "1/3 done, 2 running, 0 pending; elapsed 0:01:00, about 0:02:00 left")


def test_gpu_request_without_gpus_is_refused_or_falls_back(ray_session):
    with pytest.raises(ValueError, match="gpus_per_trial"):
        trial_resources(SweepSpec(name="x", base={}, gpus_per_trial=1))
    assert trial_resources(SweepSpec(name="x", base={}, gpus_per_trial=0.5, cpu_fallback=True))["gpu"] == 0


def test_bad_grid_value_fails_before_any_trial(ray_session, tmp_path):
    with pytest.raises(ValueError, match="omega"):
        run_sweep(SweepSpec(name="bad", base=dict(dataset="digits", method="mamix_drw"), grid={"omega": [0.5, -1]},
                            results_dir=str(tmp_path)))
    assert not os.path.exists(os.path.join(tmp_path, "bad"))


def test_search_selects_on_validation_logs_importances_and_extends_its_study(ray_session, tmp_path):
    """A fused search (2 configurations per Ray trial) ranks on validation accuracy with the test
    accuracy beside, logs the importances and plots to its parent run; a re-run with more samples adds
    trials to the same study (through Ray's OptunaSearch with --fuse 1) without re-running the old ones."""
    import optuna

    from sweeps import tune_hparams

    args = ["--preset", "demo", "--method", "mamix_drw", "--epochs", "2", "--results-dir", str(tmp_path),
            "--name", "search", "--num-cpus", "2"]
    table = tune_hparams.main(args + ["--num-samples", "4", "--fuse", "2"])
    assert len(table) == 4 and table["val_acc"].is_monotonic_decreasing
    assert {"omega", "alpha", "drw_epoch", "val_acc", "test_acc"} <= set(table.columns) and "tau" not in table.columns
    client, parents, children = runs_of(tmp_path, "search")
    assert len(parents) == 1 and len(children) == 4
    assert len({c.data.tags["ray.trial_id"] for c in children}) == 2  # two packs of two
    assert all(c.data.params["val_split"] == "20" for c in children)
    logged = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"importances.png", "history.png", "importances.csv", "trials_ranked.md"} <= logged
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{tmp_path}/search.optuna.db")
    first = sorted((t.number, t.params["omega"]) for t in study.trials)
    assert len(first) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    # the study was told each member's final validation accuracy; the table's first row has the best
    assert sorted(t.value for t in study.trials) == pytest.approx(sorted(table["val_acc"]))
    assert table.iloc[0]["val_acc"] == max(t.value for t in study.trials)

    more = tune_hparams.main(args + ["--num-samples", "5", "--fuse", "1"])
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{tmp_path}/search.optuna.db")
    assert len(study.trials) == 5 and sorted((t.number, t.params["omega"]) for t in study.trials)[:4] == first
    # its sampler has a seed of its own: seeded as the first pack's, it asked that pack's first trial again
    assert study.trials[4].params not in [t.params for t in study.trials[:4]]
    assert len(more) == 5 and len(runs_of(tmp_path, "search")[1]) == 2  # a second round, same experiment

    # --restart sets the old study and both its rounds aside: the new search's table held the second's trial
    fresh = tune_hparams.main(args + ["--num-samples", "1", "--fuse", "1", "--restart"])
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{tmp_path}/search.optuna.db")
    assert len(study.trials) == 1 and len(fresh) == 1
    # the study, and the two rounds' folders (<round>-<date>-<time>)
    assert sorted(n.rsplit("-", 2)[0] for n in os.listdir(tmp_path / "archived")) == ["search", "search", "search-more4"]


def test_asha_stops_trials_early_and_the_study_and_mlflow_agree_which(ray_session, tmp_path):
    """--asha ranks trials from --grace-period on: those it stops enter the study PRUNED with their last
    value, end in MLflow with the reason and that value, and stay out of the ranked table. One trial at a
    time (--max-concurrent 1), so which trials stop is decided the same way on every run (of 4: some, not all)."""
    import optuna

    from sweeps import tune_hparams

    table = tune_hparams.main(["--preset", "demo", "--method", "mamix", "--epochs", "4", "--num-samples", "4",
                               "--fuse", "1", "--asha", "--grace-period", "2", "--max-concurrent", "1",
                               "--cpus-per-trial", "1", "--results-dir", str(tmp_path), "--name", "asha"])
    study = optuna.load_study(study_name="asha", storage=f"sqlite:///{tmp_path}/asha.optuna.db")
    pruned = {t.params["omega"]: t.value for t in study.trials if t.state == optuna.trial.TrialState.PRUNED}
    complete = [t.params["omega"] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert pruned and complete and len(pruned) + len(complete) == 4
    client, _, children = runs_of(tmp_path, "asha")
    stopped = {float(c.data.params["omega"]): c for c in children if STOPPED_TAG in c.data.tags}
    assert set(stopped) == set(pruned)
    for omega, run in stopped.items():  # grace 2 and ASHA's reduction factor 4 leave one rung, epoch 2, of 4
        assert run.data.tags[STOPPED_TAG] == "stopped by the scheduler after epoch 2 of 4"
        assert steps(client, run, "val_acc") == [1, 2] and run.data.metrics["val_acc"] == pytest.approx(pruned[omega])
    assert sorted(table["omega"]) == sorted(complete)


def test_search_on_validation_needs_a_split():
    from sweeps import tune_hparams

    with pytest.raises(ValueError, match="^objective: val_acc needs a validation split"):
        tune_hparams.main(["--preset", "demo", "--val-split", "none", "--objective", "val_acc"])


def test_trials_per_gpu_packs_by_measured_memory():
    from core.sweep import trials_per_gpu

    gib = 2 ** 30
    assert trials_per_gpu(2 * gib, 80 * gib) == 8  # capped
    assert trials_per_gpu(20 * gib, 80 * gib) == 3  # 0.8 * 80 / 20
    assert trials_per_gpu(90 * gib, 80 * gib) == 1


def test_auto_gpus_on_a_cluster_without_gpus_means_cpu(ray_session):
    assert trial_resources(SweepSpec(name="x", base={}, gpus_per_trial="auto"))["gpu"] == 0


def test_auto_cpus_give_the_trials_at_once_every_core_and_a_gpu_trial_one(ray_session, monkeypatch):
    """On a node of 2 CPUs: one paper cell alone trains on both cores (it had one, the other idle)."""
    monkeypatch.setattr("core.sweep.ray.nodes", lambda: [{"Alive": True, "Resources": {"CPU": 2.0}}])
    spec, on_cpus = SweepSpec(name="x", base={}), {"cpu": 1.0, "gpu": 0.0}
    assert trial_resources(spec) == on_cpus
    assert [auto_cpus(spec, on_cpus, trials) for trials in (1, 2, 14)] == [2.0, 1.0, 1.0]
    assert auto_cpus(SweepSpec(name="x", base={}, max_concurrent=1), on_cpus, 14) == 2.0
    assert auto_cpus(spec, {"cpu": 1.0, "gpu": 0.25}, 1) == 1.0
    assert auto_cpus(SweepSpec(name="x", base={}, cpus_per_trial=0.5), {"cpu": 0.5, "gpu": 0.0}, 1) == 0.5
    for bad in (0, -1.0, "all"):
        with pytest.raises(ValueError, match="cpus_per_trial: got .*; allowed: a number > 0 or 'auto'"):
            grid_configs(SweepSpec(name="x", base={}, cpus_per_trial=bad))


# ----------------------------------------------------------------------------- fused packs

def trained_alone(spec: SweepSpec) -> dict[tuple[float, int], dict]:
    """Each (omega, seed) cell of the spec's grid trained alone in this process, on one thread as Ray runs
    a one-CPU trial (OMP_NUM_THREADS=1): the same kernels' rounding."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {(c["omega"], c["seed"]): train_pack([c]).metrics[0] for c in grid_configs(spec)}
    finally:
        torch.set_num_threads(threads)


def test_a_fused_sweep_keeps_a_run_and_a_row_per_member_and_resumes_every_member(ray_session, tmp_path):
    """--fuse 2: four cells of one shape train as two Ray trials. Each pack crashes once after epoch 1
    and resumes from its checkpoint: every member keeps one MLflow run with one continuous history, and
    (per-member executor: bit for bit) the numbers are those of each cell trained alone, uninterrupted."""
    base = dict(dataset="digits", method="mamix_drw", epochs=2, milestones=[1], drw_epoch=1, warmup_epochs=1,
                device="cpu", fuse_executor="per_member")
    spec = SweepSpec("fused", base, {"omega": [0.5, 2.0], "seed": [0, 1]}, results_dir=str(tmp_path), fuse=2,
                     fault=("raise", 1))
    fused = run_sweep(spec)
    alone = trained_alone(spec)
    assert fused.num_errors == 0 and len(fused.trials) == 4 and (fused.trials["status"] == "FINISHED").all()
    # Ray's clock of each trial stands in every member's row: two packs, so two values, for two members each
    assert (fused.trials["time_total_s"] > 0).all() and fused.trials["time_total_s"].value_counts().tolist() == [2, 2]
    by_cell = fused.trials.set_index(["omega", "seed"])
    for key in ("test_acc", "margin_gap"):
        assert by_cell[key].to_dict() == {cell: metrics[key] for cell, metrics in alone.items()}, key
    client, parents, children = runs_of(tmp_path, "fused")
    assert len(children) == 4 and len({c.data.tags["ray.trial_id"] for c in children}) == 2
    assert {c.data.tags["member"] for c in children} == {"0", "1"}
    assert {c.info.run_name for c in children} == {f"mamix_drw omega={w} seed={s}" for w in ("0.5", "2") for s in (0, 1)}
    for child in children:
        assert child.info.status == "FINISHED"
        assert steps(client, child, "test_acc") == [1, 2], "a resumed member logs each epoch once"
        assert "per_class.json" in {a.path for a in client.list_artifacts(child.info.run_id)}


def test_cpu_trials_run_one_after_another_in_one_process_give_the_numbers_of_cells_trained_alone(ray_session, tmp_path):
    """Ray keeps a CPU trial's process for the next trial (reuse_actors: no new process importing torch,
    seconds a trial); nothing of one trial may carry over into the next: each cell's numbers are those of
    it alone."""
    base = dict(dataset="digits", method="mamix_drw", epochs=1, warmup_epochs=0, milestones=[], drw_epoch=0,
                device="cpu")
    spec = SweepSpec("reused", base, {"omega": [0.5, 2.0], "seed": [0, 1]}, results_dir=str(tmp_path),
                     max_concurrent=1, cpus_per_trial=1)
    table = run_sweep(spec).trials.set_index(["omega", "seed"])
    assert len({t.last_result["pid"] for t in saved_trials(spec.path)}) == 1  # one process
    alone = trained_alone(spec)
    for key in ("test_acc", "margin_gap"):
        assert table[key].to_dict() == {cell: metrics[key] for cell, metrics in alone.items()}, key


def grid_spec(fuse):
    base = dict(dataset="digits", epochs=2, milestones=[1], drw_epoch=1, warmup_epochs=1)
    return SweepSpec("x", base, {"method": ["erm", "mixup_drw", "drw", "mamix_drw"], "seed": [0, 1, 2]}, fuse=fuse)


def test_packs_hold_cells_of_one_shape_in_grid_order():
    sizes = lambda fuse, slots: [[(c["method"], c["seed"]) for c in p] for p in packs(grid_spec(fuse), slots)]
    four = sizes(4, 2)
    assert [len(p) for p in four] == [4, 2, 4, 2]
    assert four[0] == [("erm", 0), ("erm", 1), ("erm", 2), ("drw", 0)]  # erm and drw fuse; mixing methods apart
    assert all({m for m, _ in p} <= {"erm", "drw"} or {m for m, _ in p} <= {"mixup_drw", "mamix_drw"} for p in four)
    assert [len(p) for p in sizes("auto", 2)] == [3, 3, 3, 3]  # each shape's 6 cells over 2 concurrent trials
    assert [len(p) for p in sizes("auto", 100)] == [1] * 12
    assert [len(p) for p in sizes(1, 2)] == [1] * 12
    with pytest.raises(ValueError, match="^fuse: got 0"):
        grid_configs(grid_spec(0))


def test_a_packs_result_gives_each_member_its_row_and_status():
    from types import SimpleNamespace

    metrics = [{"epoch": 2, "test_acc": 0.75, "margin_gap": 1.0}, {"epoch": 1, "test_acc": 0.25, "margin_gap": 3.0}]
    failures = {1: "train_loss is nan at epoch 2"}
    summary = pack_summary(metrics, failures, epochs=2)
    assert summary["epoch"] == 2 and summary["members_alive"] == 1
    assert summary["test_acc"] == 0.75 and summary["margin_gap"] == 1.0  # the live member's, not a mean with the failed
    result = SimpleNamespace(config={"members": [{"omega": 0.5}, {"omega": 2.0}]}, metrics=summary, error=None)
    table = trial_table([result])
    assert table[["omega", "status", "test_acc"]].values.tolist() == [[0.5, "FINISHED", 0.75], [2.0, "DIVERGED", 0.25]]
    assert table["error"].tolist() == ["", "train_loss is nan at epoch 2"]
    # the same report in a run of 3 epochs: a scheduler stopped the pack after epoch 2
    result.metrics = pack_summary(metrics, failures, epochs=3)
    table = trial_table([result])
    assert table["status"].tolist() == ["STOPPED", "DIVERGED"]
    assert table["error"].tolist() == ["stopped by the scheduler after epoch 2 of 3", "train_loss is nan at epoch 2"]


def test_progress_names_each_member_of_a_fused_trial(caplog):
    caplog.set_level(logging.INFO)
    trial = FakeTrial("TERMINATED", members=[{"omega": 0.5, "seed": 0}, {"omega": 2.0, "seed": 0}])
    trial.last_result = {"time_total_s": 8.0, "member_failures": {"1": "train_loss is nan at epoch 2"},
                         "member_metrics": [{"test_acc": 0.5, "margin_gap": 1.25}, {"test_acc": 0.1}]}
    progress = SweepProgress(total=3, clock=lambda: 0.0)
    progress.on_trial_complete(1, [trial], trial)
    assert caplog.messages == ["trial omega=0.5 seed=0 finished: test_acc 0.5000, margin_gap 1.2500, 8 s",
                               "trial omega=2 seed=0 diverged: train_loss is nan at epoch 2"]
    assert progress.status([trial]).startswith("status: 2/3 done, 0 running, 1 pending")
    caplog.clear()
    trial.last_result.update(epochs=3, member_metrics=[{"epoch": 2, "test_acc": 0.5, "margin_gap": 1.25}, {}])
    progress.on_trial_complete(2, [trial], trial)
    assert caplog.messages[0] == ("trial omega=0.5 seed=0 stopped by the scheduler after epoch 2 of 3: "
                                  "test_acc 0.5000, margin_gap 1.2500, 8 s")
