"""Stages cached in MLflow: each stage (``core.stages``) is trained once per key, logged as a run tagged
as a stage with its checkpoint as an artifact, and found again by its key in any later trial or sweep.

Sweeps call ``ensure`` for every stage their grid needs before the first trial starts, as Ray tasks
with a trial's resources (``core.sweep.run_stages``), so concurrent trials never train the same stage
twice. A trial then calls ``with_stages``: it finds its stages by key and copies their checkpoints
into a per-node cache. A trial whose config was not known beforehand (an Optuna search over methods)
trains a missing stage itself through the same ``ensure``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

from core import tracking
from core.config import TrainConfig
from core.stages import (check_training_set, checkpoint_bytes, key_digest, needed_stages, read_checkpoint,
                         remove_partial, stage_key, train_stage, training_set)

log = logging.getLogger(__name__)

ARTIFACT = "stage.pt"
PARTIAL = "training.pt"  # a stage's state while it trains, beside its copy (core.stages.train_stage)
# Per node: stage checkpoints copied from MLflow, by key digest (the path is the same on every
# attempt of a trial, so a resumed trial's config equals the one it saved), and the states of stages in
# training, which a stage stopped part-way goes on from when it trains again on this node.
CACHE_DIR = os.path.join(tempfile.gettempdir(), "smote2mixup-stages")


def _run_name(name: str, cfg: TrainConfig) -> str:
    return f"stage {name} {cfg.dataset} {cfg.imbalance} {cfg.ratio:g} subset {cfg.subset_seed} seed {cfg.stage_seed}"


def ensure(tracking_uri: str, experiment: str, parent_run_id: str | None, name: str,
           config: TrainConfig | dict[str, Any]):
    """The finished stage run of ``name`` for ``config``: found by key, else trained and logged now."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    key = stage_key(name, cfg)
    digest = key_digest(key)
    found = tracking.find_stage_run(tracking_uri, digest)
    if found is not None:
        return found
    partial = os.path.join(CACHE_DIR, digest, PARTIAL)
    checkpoint, metrics = train_stage(name, cfg, partial)
    run = tracking.log_stage_run(tracking_uri, experiment, parent_run_id, name, digest, _run_name(name, cfg),
                                 key, metrics, {ARTIFACT: checkpoint_bytes(checkpoint)})
    remove_partial(partial)
    log.info("stage %s trained in %.1f s: MLflow run %s", name, metrics["wall_s"], run.info.run_id)
    return run


def local_checkpoint(tracking_uri: str, run) -> str:
    """The stage run's checkpoint on this node, downloaded once per node."""
    path = os.path.join(CACHE_DIR, run.data.tags[tracking.STAGE_KEY_TAG], ARTIFACT)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as d:
            os.replace(tracking.download_artifact(tracking_uri, run.info.run_id, ARTIFACT, d), path)
    return path


def with_stages(cfg: TrainConfig, platform: dict[str, Any]) -> tuple[TrainConfig, dict[str, Any]]:
    """``cfg`` with the checkpoint path of every stage its method needs and does not give, and the
    stage runs they come from (by stage name)."""
    uri = platform["tracking_uri"]
    runs = {name: ensure(uri, platform["experiment_id"], platform["parent_run_id"], name, cfg)
            for name in needed_stages(cfg)}
    return cfg.replace(**{name: local_checkpoint(uri, run) for name, run in runs.items()}), runs


def register(tracking_uri: str, name: str, cfg: TrainConfig, path: str):
    """Log a checkpoint of your own as stage ``name`` of the run ``cfg``, in the experiment "stages":
    sweeps of that training set and stage key then use it (the latest registered or trained wins)."""
    checkpoint = read_checkpoint(name, path)
    _, _, counts, classes = training_set(cfg)
    check_training_set(name, checkpoint, path, cfg, counts, classes)
    key = stage_key(name, cfg)
    store = tracking_uri.removeprefix("sqlite:///") if tracking_uri.startswith("sqlite:///") else None
    experiment = tracking.experiment_id(tracking_uri, "stages",
                                        os.path.join(os.path.dirname(store), "mlartifacts") if store else None)
    with open(path, "rb") as f:
        content = f.read()
    return tracking.log_stage_run(tracking_uri, experiment, None, name, key_digest(key),
                                  f"registered {_run_name(name, cfg)}", {**key, "source": path},
                                  {"wall_s": 0.0}, {ARTIFACT: content})
