"""Stages through the sweep runner and MLflow: trained once, found again by key, never trained twice."""

import io
import logging
import os
import re
import signal
import time

import pytest
import torch

from conftest import sweep_driver, tiny_config
from core import stage_cache, stages, tracking
from core import train as train_module
from core.config import ConfigError, TrainConfig
from core.data import DATASETS
from core.methods import METHODS
from core.sweep import SweepSpec, grid_configs, run_stages, run_sweep
from core.train import set_up

STAGE_METHODS = ["m2m", "deepsmote"]


def spec(name, tmp_path):
    base = tiny_config(epochs=1, milestones=[], drw_epoch=0, deepsmote_epochs=1, m2m_steps=1)
    return SweepSpec(name=name, base=base, grid={"method": STAGE_METHODS}, results_dir=str(tmp_path))


def no_training(*args):
    raise AssertionError("a stage found in MLflow must not be trained again")


def test_stages_are_trained_once_and_found_again_by_a_later_sweep(ray_session, tmp_path, monkeypatch):
    first = run_sweep(spec("first", tmp_path))
    uri = first.tracking_uri
    trained = tracking.stage_runs(uri)
    assert sorted(r.data.tags[tracking.STAGE_TAG] for r in trained) == sorted(stages.STAGES)
    for run in trained:
        assert run.info.status == "FINISHED"
        assert run.data.tags[tracking.PARENT_TAG] == first.parent_run_id  # a run of the sweep that trained it
        assert run.data.metrics["wall_s"] > 0
        assert [a.path for a in tracking.client(uri).list_artifacts(run.info.run_id)] == [stage_cache.ARTIFACT]
    ids = {r.data.tags[tracking.STAGE_TAG]: r.info.run_id for r in trained}
    # Stage runs are not trials: the sweep's children are its two trials, each tagged with its stage.
    children = tracking.child_runs(uri, first.experiment_id, first.parent_run_id)
    assert sorted(c.data.params["method"] for c in children) == sorted(STAGE_METHODS)
    for child in children:
        for name in METHODS[child.data.params["method"]].stages:
            assert child.data.tags[f"stage.{name}"] == ids[name]
    trials = first.trials
    assert (trials["stage_s"] > 0).all() and (trials["wall_s"] > 0).all() and (trials["train_images"] > 0).all()

    # Another sweep of the same training sets, in another experiment of the store, trains nothing: its
    # stage step (before the trials) and its trials' look-ups find the same runs.
    monkeypatch.setattr(stage_cache, "train_stage", no_training)
    second = spec("second", tmp_path)
    experiment = tracking.experiment_id(uri, "second")
    run_stages(second, uri, experiment, None, {"cpu": 1, "gpu": 0})
    platform = {"tracking_uri": uri, "experiment_id": experiment, "parent_run_id": None}
    for config in grid_configs(second):
        _, runs = stage_cache.with_stages(TrainConfig.from_dict(config), platform)
        assert {name: run.info.run_id for name, run in runs.items()} == \
            {name: ids[name] for name in METHODS[config["method"]].stages}
    assert {r.info.run_id for r in tracking.stage_runs(uri)} == set(ids.values()), "no stage trained twice"


def test_ctrl_c_while_the_stages_train_ends_with_one_line_and_the_same_command_goes_on(ray_session, tmp_path):
    """Ctrl+C while a sweep trains its stages (M2m's generator, DeepSMOTE's autoencoder: the first
    minutes of such a sweep) ended with a traceback from ray.get and the parent run FAILED; the re-run
    then opened a second parent run. It must end as Ctrl+C during trials does (one line, exit status
    130, the parent KILLED), and the same command must go on with the stage from its last saved epoch
    (it started again from the first) and train the trials under that parent."""
    from sweeps import cli, method_comparison

    args = ["--preset", "demo", "--methods", "deepsmote", "--kinds", "long_tailed", "--seeds", "1", "--epochs", "1",
            "--set", "deepsmote_epochs=4", "stage_checkpoint_every=1", "--results-dir", str(tmp_path),
            "--name", "stages"]
    (config,) = grid_configs(cli.grid_sweep(method_comparison.SWEEP, args)[0])
    partial = os.path.join(stage_cache.CACHE_DIR, stages.key_digest(stages.stage_key(
        "deepsmote_autoencoder", TrainConfig.from_dict(config))), stage_cache.PARTIAL)
    stages.remove_partial(partial)  # left by an earlier test session stopped at this point
    log_path = tmp_path / "driver.log"
    with sweep_driver(ray_session, tmp_path, args, "method_comparison.py") as driver:
        deadline = time.monotonic() + 120
        while not os.path.exists(partial) and time.monotonic() < deadline:
            assert driver.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.1)
        os.killpg(driver.pid, signal.SIGINT)
        status = driver.wait(timeout=60)
    output = log_path.read_text()
    assert status == 130, output[-3000:]
    assert output.splitlines()[-1] == ("interrupted while training the stages, before any trial of stages: 1 of 1 "
                                       "stage(s) unfinished; the same command goes on with them from their last "
                                       "saved epoch")
    saved_epoch = torch.load(partial, weights_only=True)["state"]["epoch"]
    assert "Traceback" not in output
    uri = tracking.default_tracking_uri(str(tmp_path))
    experiment = tracking.experiment_id(uri, "stages")
    (parent,) = tracking.client(uri).search_runs([experiment])
    assert parent.info.status == "KILLED" and tracking.stage_runs(uri) == []

    method_comparison.main(args)
    runs = tracking.client(uri).search_runs([experiment])
    assert sorted((r.info.run_id == parent.info.run_id, r.info.status) for r in runs) == [
        (False, "FINISHED"), (False, "FINISHED"), (True, "FINISHED")]  # its stage and trial, and the same parent
    (stage,) = tracking.stage_runs(uri)
    assert stage.data.tags[tracking.PARENT_TAG] == parent.info.run_id
    assert 1 <= saved_epoch < 4 and stage.data.metrics["resumed_epoch"] >= saved_epoch, output[-3000:]
    assert not os.path.exists(partial)  # removed once the stage is in MLflow


@pytest.mark.parametrize("name", sorted(stages.STAGES))
def test_a_stage_stopped_part_way_goes_on_from_its_saved_state_to_the_same_weights(name, tmp_path, monkeypatch):
    """A stage stopped after its first saved epoch (Ctrl+C, a crash) trains, the second time, only
    the epochs after it, into the weights of a stage never stopped; saving (and M2m's g evaluating)
    every epoch changes no weight."""
    fields = tiny_config(deepsmote_epochs=2)
    whole, _ = stages.train_stage(name, TrainConfig.from_dict({**fields, "stage_checkpoint_every": 2}))
    cfg = TrainConfig.from_dict({**fields, "stage_checkpoint_every": 1})
    partial = str(tmp_path / "training.pt")
    stop_after_the_first_save(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        stages.train_stage(name, cfg, partial)
    monkeypatch.undo()
    assert torch.load(partial, weights_only=True)["state"]["epoch"] == 1
    resumed, metrics = stages.train_stage(name, cfg, partial)
    assert metrics["resumed_epoch"] == 1
    assert_same_weights(resumed, whole)


def test_ctrl_c_stops_the_stage_command_with_one_line_and_the_same_command_goes_on(tmp_path, monkeypatch, capsys):
    """python -m core.stages ended a Ctrl+C with a traceback from wherever the training was."""
    out = str(tmp_path / "g.pt")
    argv = ["m2m_generator", "--dataset", "digits", "--epochs", "2", "--warmup-epochs", "0", "--milestones", "1",
            "--device", "cpu", "--stage-checkpoint-every", "1", "--out", out]
    stop_after_the_first_save(monkeypatch)
    with pytest.raises(SystemExit) as stop:
        stages.main(argv)
    assert stop.value.code == 130
    assert capsys.readouterr().err == f"interrupted: the state of epoch 1 is kept in {out}.partial; the same command " \
                                      f"goes on from it\n"
    monkeypatch.undo()
    assert stages.main(argv) == out and not os.path.exists(f"{out}.partial")


def stop_after_the_first_save(monkeypatch):
    """Ctrl+C right after a stage has saved its state for the first time (``monkeypatch.undo()`` ends it)."""
    write = stages.write_checkpoint

    def stopped(content, path):
        write(content, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(stages, "write_checkpoint", stopped)


def assert_same_weights(checkpoint, other):
    assert checkpoint["state"].keys() == other["state"].keys()
    assert all(torch.equal(checkpoint["state"][k], other["state"][k]) for k in other["state"])


def scripted_validation_accuracy(monkeypatch, by_epoch):
    """g's validation accuracy at epoch e is ``by_epoch[e - 1]``, whatever it learns: its selection is known."""
    best_epoch = train_module.best_epoch

    def scripted(best, metrics):
        metrics["val_acc"] = by_epoch[metrics["epoch"] - 1]
        return best_epoch(best, metrics)

    monkeypatch.setattr(train_module, "best_epoch", scripted)


def recorded_weights(monkeypatch):
    """Epoch -> the ``net`` of g's state at each evaluation, filled while g trains."""
    weights, train = {}, train_module.train

    def recording(cfg, report=None, *, resume=None, save_state=None):
        def save(state):
            weights[state["epoch"]] = state["net"]
            save_state(state)

        return train(cfg, report, resume=resume, save_state=save)

    monkeypatch.setattr(train_module, "train", recording)
    return weights


def test_g_selected_on_the_validation_set_is_its_first_epoch_of_best_validation_accuracy(tmp_path, monkeypatch,
                                                                                         caplog):
    """As the official code selects g (evaluated every epoch, the best on 100 held-out test images per
    class): with the stage command's flags, g is epoch 2 of 0.2, 0.6, 0.6, 0.4, not its last, and the
    command says so."""
    scripted_validation_accuracy(monkeypatch, [0.2, 0.6, 0.6, 0.4])
    weights, saved = recorded_weights(monkeypatch), []
    write = stages.write_checkpoint

    def recording(content, path):
        if path.endswith(".partial"):
            saved.append(torch.load(io.BytesIO(content), weights_only=True)["state"]["epoch"])
        write(content, path)

    monkeypatch.setattr(stages, "write_checkpoint", recording)
    out = str(tmp_path / "g.pt")
    with caplog.at_level(logging.INFO, logger="core.stages"):
        stages.main(["m2m_generator", "--dataset", "digits", "--epochs", "4", "--warmup-epochs", "0", "--milestones",
                     "3", "--device", "cpu", "--val-split", "20", "--m2m-generator-selection", "validation",
                     "--stage-checkpoint-every", "3", "--out", out])
    assert re.search(r"wrote .*g_selected_epoch 2, g_val_acc 0\.6, g_test_acc ", caplog.text), caplog.text
    assert sorted(weights) == [1, 2, 3, 4]  # evaluated every epoch
    assert saved == [3, 4]  # but its state saved every stage_checkpoint_every epochs and at its end
    g = torch.load(out, weights_only=True)
    assert g["key"]["m2m_generator_selection"] == "validation" and g["key"]["val_split"] == 20
    assert g["metrics"]["g_selected_epoch"] == 2
    epoch = {e: {"state": stages.generator_weights(g["architecture"], net)} for e, net in weights.items()}
    assert_same_weights(g, epoch[2])
    assert not all(torch.equal(epoch[2]["state"][k], epoch[4]["state"][k]) for k in g["state"])


def test_a_g_selected_on_validation_is_refused_by_a_run_that_would_test_on_its_validation_images(tmp_path):
    """A run without g's validation split (or with another seed or evaluation split) would report test
    accuracy on images g was selected on; the same split is accepted. A run that asks for g selected on
    validation is refused a g of the final epoch."""
    fields = tiny_config(epochs=1, milestones=[], val_split=20, m2m_generator_selection="validation")
    path = str(tmp_path / "g.pt")
    stages.train_stage_file("m2m_generator", TrainConfig.from_dict(fields), path)
    run = TrainConfig.from_dict({**fields, "method": "m2m", "m2m_generator": path, "m2m_generator_selection": "final"})
    set_up([run])
    for other, field in ((dict(val_split="none"), "val_split 20"), (dict(val_seed=1), "val_seed 0")):
        with pytest.raises(ConfigError, match=f"^m2m_generator: .*selected on the validation images of {field}"):
            set_up([run.replace(**other)])
    # and a run that asks for a g selected on validation is refused a g of the final epoch
    final = str(tmp_path / "g_final.pt")
    stages.train_stage_file("m2m_generator", TrainConfig.from_dict({**fields, "m2m_generator_selection": "final"}),
                            final)
    set_up([run.replace(m2m_generator=final)])
    with pytest.raises(ConfigError, match="^m2m_generator: .*selected with m2m_generator_selection 'final', but this "
                                          "run asks for 'validation'"):
        set_up([run.replace(m2m_generator=final, m2m_generator_selection="validation")])
    set_up([run.replace(m2m_generator_selection="validation")])


def test_g_stopped_after_its_best_validation_epoch_goes_on_to_select_that_epoch(tmp_path, monkeypatch):
    """The epoch selected so far travels with g's saved state: g stopped after epoch 1 (its best) and
    gone on with is the g of a run never stopped, not epoch 3, the best the second leg saw."""
    scripted_validation_accuracy(monkeypatch, [0.9, 0.1, 0.2])
    cfg = TrainConfig.from_dict(tiny_config(epochs=3, milestones=[2], val_split=20, stage_checkpoint_every=1,
                                            m2m_generator_selection="validation"))
    whole, metrics = stages.train_stage("m2m_generator", cfg)
    assert metrics["g_selected_epoch"] == metrics["g_epoch"] == 1  # g's metrics are the selected epoch's
    partial = str(tmp_path / "training.pt")
    with monkeypatch.context() as stopping:
        stop_after_the_first_save(stopping)
        with pytest.raises(KeyboardInterrupt):
            stages.train_stage("m2m_generator", cfg, partial)
    resumed, metrics = stages.train_stage("m2m_generator", cfg, partial)
    assert (metrics["resumed_epoch"], metrics["g_selected_epoch"]) == (1, 1)
    assert_same_weights(resumed, whole)


def test_the_stage_keys_of_stages_trained_before_g_could_be_selected_on_validation_stay_the_same():
    """Sweeps find stages by key digest: a changed key would train every stored g again (200 epochs on
    CIFAR). The digests below were computed before ``m2m_generator_selection`` existed."""
    cfg = TrainConfig(dataset="cifar10", device="cpu")
    assert {name: stages.key_digest(stages.stage_key(name, cfg)) for name in stages.STAGES} == {
        "m2m_generator": "04ad7792e2f28fa9cdb632af", "deepsmote_autoencoder": "88d611a639b88e627fc530a3"}
    # a validation set for the trials alone selects no other g; g selected on one is another g per set
    assert stages.stage_key("m2m_generator", cfg.replace(val_split=100)) == stages.stage_key("m2m_generator", cfg)
    on_validation = cfg.replace(val_split=100, m2m_generator_selection="validation")
    keys = [stages.key_digest(stages.stage_key("m2m_generator", c)) for c in
            (cfg, on_validation, on_validation.replace(val_seed=1), on_validation.replace(val_split=50))]
    assert len(set(keys)) == 4


@pytest.mark.parametrize("validation", [dict(dataset="cifar10", val_split=100, val_seed=1),
                                        dict(dataset="cinic10", eval_split="test", val_split=0.1, val_seed=2)])
def test_g_selected_on_validation_is_selected_on_the_runs_own_validation_images(validation):
    """The images held out of the run's evaluation split (CINIC-10's valid or test) by its val_split and
    val_seed: g's run holds out the same, and another split or seed is another g."""
    run = TrainConfig(device="cpu", m2m_generator_selection="validation", **validation)
    g = stages.generator_config(run)
    assert (g.eval_split, g.val_split, g.val_seed, g.eval_every) == (run.eval_split, run.val_split, run.val_seed, 1)
    other_splits = [s for s in DATASETS[run.dataset].eval_splits if s != run.eval_split]
    for other in [run.replace(val_seed=run.val_seed + 1), *(run.replace(eval_split=s) for s in other_splits)]:
        assert stages.stage_key("m2m_generator", other) != stages.stage_key("m2m_generator", run)


def test_a_stage_state_that_cannot_go_on_is_trained_again_from_the_start(tmp_path):
    """A state g's run refuses (another config: here another evaluation period; or another kind of
    device), a file that is no state and another key's state are not trusted: the stage trains from its
    first epoch."""
    fields = tiny_config()
    partial = str(tmp_path / "training.pt")
    whole, _ = stages.train_stage("m2m_generator", TrainConfig.from_dict({**fields, "stage_checkpoint_every": 1}),
                                  partial)
    # the state of its last epoch, saved under an evaluation every epoch, is left where the next run looks
    again, metrics = stages.train_stage("m2m_generator", TrainConfig.from_dict({**fields, "stage_checkpoint_every": 2}),
                                        partial)
    assert metrics["resumed_epoch"] == 0
    assert_same_weights(again, whole)
    stages.write_checkpoint(b"not a state", partial)
    again, metrics = stages.train_stage("m2m_generator", TrainConfig.from_dict(fields), partial)
    assert metrics["resumed_epoch"] == 0
    assert_same_weights(again, whole)
    # another key's state (python -m core.stages run again with another --deepsmote-lr and the same --out)
    ae = tiny_config(deepsmote_epochs=1)
    stages.train_stage("deepsmote_autoencoder", TrainConfig.from_dict({**ae, "deepsmote_lr": 1e-3}), partial)
    _, metrics = stages.train_stage("deepsmote_autoencoder", TrainConfig.from_dict(ae), partial)
    assert metrics["resumed_epoch"] == 0
    # g's state saved on a GPU under device auto, found on a machine without one: its generators are CUDA's
    saved = torch.load(partial, weights_only=True)
    assert saved["owner"]["device"] == "cpu"
    stages.train_stage("m2m_generator", TrainConfig.from_dict({**fields, "stage_checkpoint_every": 1}), partial)
    saved = torch.load(partial, weights_only=True)
    stages.write_checkpoint(stages.checkpoint_bytes({**saved, "owner": {**saved["owner"], "device": "cuda"}}), partial)
    again, metrics = stages.train_stage("m2m_generator", TrainConfig.from_dict({**fields, "stage_checkpoint_every": 1}),
                                        partial)
    assert metrics["resumed_epoch"] == 0
    assert_same_weights(again, whole)


def test_a_stage_of_your_own_is_written_registered_and_used(tmp_path, monkeypatch):
    flags = ["--dataset", "digits", "--epochs", "1", "--warmup-epochs", "0", "--milestones", "1",
             "--device", "cpu"]
    path = stages.main(["m2m_generator", *flags, "--out", str(tmp_path / "g.pt")])
    uri = tracking.default_tracking_uri(str(tmp_path))
    run_id = stages.main(["m2m_generator", *flags, "--register", path, "--tracking-uri", uri])
    cfg = TrainConfig.from_dict(dict(dataset="digits", epochs=1, warmup_epochs=0, milestones=[1], device="cpu",
                                     method="m2m"))
    monkeypatch.setattr(stage_cache, "train_stage", no_training)
    platform = {"tracking_uri": uri, "experiment_id": None, "parent_run_id": None}
    resolved, runs = stage_cache.with_stages(cfg, platform)
    assert runs["m2m_generator"].info.run_id == run_id
    assert torch.equal(*(torch.load(p, weights_only=True)["state"]["head.weight"]
                         for p in (path, resolved.m2m_generator)))
    set_up([resolved])  # the checkpoint fits the run
    with pytest.raises(ConfigError, match="^m2m_generator: .*counts"):
        stages.main(["m2m_generator", *flags, "--ratio", "5", "--register", path, "--tracking-uri", uri])


def test_a_generator_checkpoint_written_before_head_bias_existed_builds_the_head_it_was_trained_with():
    """g's checkpoints before ``head_bias`` existed had Cao et al.'s biased head (``FORMER_DEFAULTS``)."""
    build = stages.STAGES["m2m_generator"].build
    architecture = {"model": "small_cnn", "num_classes": 10, "in_channels": 1}
    assert build(architecture).head.bias is not None
    assert build({**architecture, "head_bias": False}).head.bias is None
    # another head is another g
    assert {"head_bias", "head_init"} <= set(stages.STAGES["m2m_generator"].key_fields)


def test_g_trains_where_and_as_fast_as_its_run_but_learns_only_from_its_key():
    """g's run takes the run's fields of place and speed (device, compile...), its key's fields, and
    nothing of the run's method or seed: a run that turns compilation off trains an eager g."""
    run = TrainConfig.from_dict(tiny_config(method="mamix_drw", seed=3, omega=2.0, compile=False,
                                            compile_mode="default", stage_seed=1))
    g = stages.generator_config(run)
    assert (g.compile, g.compile_mode, g.device) == (False, "default", run.device)
    assert (g.method, g.seed, g.omega) == ("erm", stages.generator_seed(1), TrainConfig.omega)
