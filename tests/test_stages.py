"""Stages through the sweep runner and MLflow: trained once, found again by key, never trained twice."""

import pytest
import torch

from conftest import tiny_config
from core import stage_cache, stages, tracking
from core.config import ConfigError, TrainConfig
from core.methods import METHODS
from core.sweep import SweepSpec, run_sweep
from core.train import set_up

STAGE_METHODS = ["m2m", "deepsmote"]


def sweep(name, tmp_path):
    base = tiny_config(deepsmote_epochs=1, m2m_steps=2)
    return run_sweep(SweepSpec(name=name, base=base, grid={"method": STAGE_METHODS}, results_dir=str(tmp_path)))


def test_stages_are_trained_once_and_found_again_by_a_later_sweep(ray_session, tmp_path):
    first = sweep("first", tmp_path)
    uri = first.tracking_uri
    trained = tracking.stage_runs(uri)
    assert sorted(r.data.tags[tracking.STAGE_TAG] for r in trained) == sorted(stages.STAGES)
    for run in trained:
        assert run.info.status == "FINISHED"
        assert run.data.tags[tracking.PARENT_TAG] == first.parent_run_id  # a run of the sweep that trained it
        assert run.data.metrics["wall_s"] > 0
        assert [a.path for a in tracking.client(uri).list_artifacts(run.info.run_id)] == [stage_cache.ARTIFACT]
    # Stage runs are not trials: the sweep's children are its two trials.
    assert len(tracking.child_runs(uri, first.experiment_id, first.parent_run_id)) == 2
    ids = {r.data.tags[tracking.STAGE_TAG]: r.info.run_id for r in trained}

    second = sweep("second", tmp_path)  # another sweep of the same training set, in the same store
    assert {r.info.run_id for r in tracking.stage_runs(uri)} == set(ids.values()), "no stage trained twice"
    assert second.num_errors == 0 and sorted(second.trials["method"]) == sorted(STAGE_METHODS)
    for child in tracking.child_runs(uri, second.experiment_id, second.parent_run_id):
        for name in METHODS[child.data.params["method"]].stages:
            assert child.data.tags[f"stage.{name}"] == ids[name]
    trials = second.trials.set_index("method")
    assert (trials["stage_s"] > 0).all() and (trials["wall_s"] > 0).all() and (trials["train_images"] > 0).all()


def test_a_stage_of_your_own_is_written_registered_and_used(tmp_path, monkeypatch):
    flags = ["--dataset", "digits", "--epochs", "1", "--warmup-epochs", "0", "--milestones", "1",
             "--device", "cpu"]
    path = stages.main(["m2m_generator", *flags, "--out", str(tmp_path / "g.pt")])
    uri = tracking.default_tracking_uri(str(tmp_path))
    run_id = stages.main(["m2m_generator", *flags, "--register", path, "--tracking-uri", uri])
    cfg = TrainConfig.from_dict(dict(dataset="digits", epochs=1, warmup_epochs=0, milestones=[1], device="cpu",
                                     method="m2m"))

    def no_training(*args):
        raise AssertionError("the registered stage must be used, not trained again")
    monkeypatch.setattr(stage_cache, "train_stage", no_training)
    platform = {"tracking_uri": uri, "experiment_id": None, "parent_run_id": None}
    resolved, runs = stage_cache.with_stages(cfg, platform)
    assert runs["m2m_generator"].info.run_id == run_id
    assert torch.equal(*(torch.load(p, weights_only=True)["state"]["head.weight"]
                         for p in (path, resolved.m2m_generator)))
    set_up([resolved])  # the checkpoint fits the run
    with pytest.raises(ConfigError, match="^m2m_generator: .*counts"):
        stages.main(["m2m_generator", *flags, "--ratio", "5", "--register", path, "--tracking-uri", uri])
