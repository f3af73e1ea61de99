"""Bad input gets one clear error naming the field, before any trial starts."""

import dataclasses
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import tracking
from core.config import ConfigError, TrainConfig
from core.train import main as train_main
from core.train import train
from sweeps import method_comparison, omega_sensitivity, report, tune_hparams

FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def fails_with(capsys, main, argv, *words):
    """The sweep's command-line entry ends with SystemExit carrying a message with ``words``."""
    with pytest.raises((SystemExit, ValueError)) as err:
        main(argv)
    text = str(err.value) + capsys.readouterr().err
    for word in words:
        assert word in text, text
    return text


@pytest.mark.parametrize("argv,words", [
    (["--preset", "nope"], ["--preset", "invalid choice"]),
    (["--preset", "demo", "--dataset", "mnist"], ["--dataset", "invalid choice"]),
    (["--preset", "demo", "--omegas", "0.25", "-1"], ["omega", "> 0"]),
    (["--preset", "demo", "--omegas", "0.25", "4", "0.250"], ["omega", "0.25 twice", "more seeds"]),
    (["--preset", "demo", "--max-concurrent", "-1"], ["max_concurrent", "got -1", ">= 0"]),
    (["--preset", "demo", "--num-cpus", "0"], ["num_cpus", "got 0", ">= 1"]),
    (["--preset", "demo", "--cpus-per-trial", "0"], ["cpus_per_trial", "got 0.0", "> 0"]),
    (["--preset", "demo", "--gpus-per-trial", "-0.5"], ["gpus_per_trial", "got -0.5", ">= 0"]),
    (["--preset", "demo", "--epochs", "0"], ["epochs", ">= 1"]),
    (["--preset", "demo", "--seeds", "0"], ["seeds", ">= 1"]),
    (["--preset", "demo", "--data-root", "/no/such/dir"], ["data_root", "existing directory"]),
    (["--preset", "demo", "--set", "clean_forward"], ["set", "FIELD=VALUE"]),
    (["--preset", "demo", "--set", "clean_foward=true"], ["set", "'clean_foward' is not a TrainConfig field"]),
    (["--preset", "demo", "--set", "clean_forward=maybe"], ["clean_forward", "true or false"]),
    (["--preset", "demo", "--set", "omega=0.5"], ["set", "omega", "--omegas"]),
    (["--preset", "demo", "--set", "seed=3"], ["set", "--seeds"]),
])
def test_omega_sweep_rejects_bad_flags_before_ray(capsys, argv, words):
    import ray

    was_running = ray.is_initialized()
    fails_with(capsys, omega_sensitivity.main, argv, *words)
    assert ray.is_initialized() == was_running, "no Ray start for a bad input"


def test_unknown_method_in_a_grid_is_named(capsys):
    fails_with(capsys, method_comparison.main, ["--preset", "demo", "--methods", "erm", "mixup_remix"],
               "method", "mixup_remix", "allowed")


def test_a_field_the_search_chooses_cannot_be_set(capsys):
    fails_with(capsys, tune_hparams.main, ["--preset", "demo", "--set", "omega=0.5"], "set", "omega", "search")


@pytest.mark.parametrize("argv,words", [
    (["--method", "mamix_drw", "--asha"], ["asha", "DRW epoch is searched up to the last epoch", "--grace-period"]),
    (["--method", "mamix", "--asha", "--grace-period", "10"], ["grace_period", "got 10", "1 to 9"]),
    (["--method", "mamix", "--grace-period", "3"], ["grace_period", "only with --asha"]),
])
def test_early_stopping_that_could_stop_no_trial_is_refused(capsys, argv, words):
    fails_with(capsys, tune_hparams.main, ["--preset", "demo", "--fuse", "1", *argv], *words)


@pytest.mark.parametrize("flags,words", [
    (["--fuse", "0"], ["fuse", "got 0"]),
    (["--max-concurrent", "-1"], ["max_concurrent", "got -1"]),
    (["--num-cpus", "0"], ["num_cpus", "got 0"]),
])
def test_a_search_refuses_bad_flags_before_its_study_and_store_exist(capsys, tmp_path, flags, words):
    """These were refused only when the first round started: the study and the MLflow store were made first."""
    fails_with(capsys, tune_hparams.main, ["--preset", "demo", "--method", "mamix", "--results-dir", str(tmp_path),
                                           *flags], *words)
    assert os.listdir(tmp_path) == []


def test_unknown_method_for_the_search_is_named(capsys):
    fails_with(capsys, tune_hparams.main, ["--preset", "demo", "--method", "cutmix"], "--method", "invalid choice")


def test_paper_preset_without_data_stops_with_the_command_that_provides_it(capsys, tmp_path):
    text = fails_with(capsys, omega_sensitivity.main, ["--preset", "paper", "--data-root", str(tmp_path)],
                      "cifar10 is not available", "python -m core.prepare_data cifar10")
    assert "--data-root" in text


def test_a_report_before_any_trial_finished_says_so(tmp_path):
    """A sweep just started (or stopped by Ctrl+C before a trial ended) has no table yet: one line, not
    the KeyError of a table built over no trials."""
    uri = tracking.default_tracking_uri(str(tmp_path))
    tags = {"sweep_script": "extreme_imbalance", "settings": json.dumps({"methods": ["mixup_drw"], "seeds": 1})}
    parent = tracking.start_parent_run(uri, tracking.experiment_id(uri, "early"), "early", tags)
    with pytest.raises(ValueError, match=f"no trial of the sweep early \\(parent run {parent}, RUNNING\\) has finished yet"):
        report.main(["--experiment", "early", "--results-dir", str(tmp_path)])


def test_a_report_from_a_folder_without_a_store_says_so_and_creates_nothing(tmp_path):
    """A mistyped --results-dir used to get an empty MLflow store made there, then "no MLflow experiment"."""
    typo = tmp_path / "resutls"
    with pytest.raises(ValueError, match=f"^results_dir: no MLflow store at {typo}/mlflow.db; give the sweep's"):
        report.main(["--experiment", "x", "--results-dir", str(typo)])
    assert not typo.exists()


def test_a_report_of_a_search_says_where_its_tables_are(tmp_path):
    """sweeps.report rebuilds a grid sweep's tables; a search's used to end with "sweep_script=None"."""
    uri = tracking.default_tracking_uri(str(tmp_path))
    tracking.start_parent_run(uri, tracking.experiment_id(uri, "search"), "search", {"sweep_script": "tune_hparams"})
    with pytest.raises(ValueError, match="^experiment: search is a hyperparameter search; its tables are logged"):
        report.main(["--experiment", "search", "--results-dir", str(tmp_path)])


def test_wrong_shapes_and_labels_in_a_data_root_are_named(tmp_path):
    x = np.zeros((10, 8, 8, 1), np.uint8)
    np.savez(tmp_path / "digits.npz", x_train=x, y_train=np.arange(10), x_test=x[:, :, :, 0], y_test=np.arange(10))
    with pytest.raises(ValueError, match="data_root"):
        train(dict(dataset="digits", data_root=str(tmp_path), epochs=1, device="cpu"))
    np.savez(tmp_path / "digits.npz", x_train=x, y_train=np.full(10, -3), x_test=x, y_test=np.arange(10))
    with pytest.raises(ValueError, match="data_root.*labels"):
        train(dict(dataset="digits", data_root=str(tmp_path), epochs=1, device="cpu"))


def test_config_file_values_are_validated(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"method": "mamix_drw", "tau": 1.5}))
    with pytest.raises(ConfigError, match="tau"):
        train_main(["--config", str(path), "--epochs", "1"])
    path.write_text(json.dumps({"method": "mamix_drw", "epochs": 1, "warmup_epochs": 1, "milestones": [1],
                                "drw_epoch": 1, "device": "cpu"}))
    assert train_main(["--config", str(path), "--omega", "0.5"])["epoch"] == 1


VALUES = {
    "method": st.sampled_from(["erm", "mamix_drw", "remix", "ldam_drw", "smote_mix_drw", "bogus", 3]),
    "ratio": st.one_of(st.floats(-5, 50), st.just(float("nan"))),
    "omega": st.floats(-1, 10),
    "tau": st.floats(-0.5, 1.5),
    "kappa": st.floats(0, 10),
    "alpha": st.floats(-1, 5),
    "batch_size": st.integers(-2, 200),
    "drw_epoch": st.integers(-1, 3),
    "smote_k": st.integers(-1, 6),
    "reduction": st.sampled_from(["weighted_mean", "batch_mean", "sum"]),
    "imbalance": st.sampled_from(["long_tailed", "step", "balanced", "zipf"]),
}


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(st.fixed_dictionaries({}, optional=VALUES))
def test_random_configs_train_one_epoch_or_name_a_field(values):
    config = {**dict(dataset="synthetic", epochs=1, warmup_epochs=0, milestones=[], drw_epoch=0, device="cpu"),
              **values}
    try:
        cfg = TrainConfig.from_dict(config)
    except ConfigError as err:
        assert err.field in FIELDS and str(err).startswith(err.field)
        return
    metrics = train(cfg)
    assert metrics["epoch"] == 1 and np.isfinite(metrics["train_loss"])


@pytest.mark.parametrize("name,value", [("amp", "yes"), ("channels_last", 1), ("compile", "yes"), ("download", "no"),
                                        ("head_bias", "false")])
def test_switches_must_be_booleans(name, value):
    with pytest.raises(ConfigError, match=name):
        TrainConfig(**{name: value})


@pytest.mark.parametrize("value", ["xavier", None, True])
def test_head_init_names_the_allowed_draws(value):
    with pytest.raises(ConfigError, match=r"head_init.*\['pytorch', 'kaiming_normal'\]"):
        TrainConfig(head_init=value)


@pytest.mark.parametrize("value", ["fast", None, True])
def test_compile_mode_names_the_allowed_modes(value):
    with pytest.raises(ConfigError, match="compile_mode.*reduce-overhead"):
        TrainConfig(compile_mode=value)
