"""Stages: models that a method needs before its run starts, trained once and reused.

M2m needs g (``m2m_generator``): an ERM model trained on the run's imbalanced training set under its
own seed (``generator_seed``, apart from the trials' seeds) and selected without the test set: its final
epoch, or with ``m2m_generator_selection="validation"`` its epoch of best validation accuracy on the
run's ``val_split``, as the official code selects g. DeepSMOTE needs its autoencoder
(``deepsmote_autoencoder``, ``core.deepsmote``). A stage's result depends on a few fields only, its
key: the training set (dataset, imbalance, ratio, mu, subset_seed), ``stage_seed``, the stage's own
schedule and how it is selected. Every trial of a sweep that shares them shares one stage, whatever its
seed or method.

While it trains, a stage saves its state every ``stage_checkpoint_every`` epochs (``train_stage``'s
``partial`` file), and a stage stopped part-way goes on from there, to the weights of a stage never
stopped (tested bit for bit on the CPU).

The TrainConfig field named after a stage holds the absolute path of its checkpoint. When it is None,
``core.stage_cache`` finds the stage in MLflow by its key, or trains and logs it (sweeps do this once
per key before their trials start). A checkpoint is a torch file of plain data::

    {"stage": "m2m_generator", "dataset": "cifar10", "counts": [5000, ..., 50], "classes": [...],
     "architecture": {"model": "resnet32", "num_classes": 10, "in_channels": 3},
     "state": model.state_dict(), "key": {...}, "metrics": {"g_selected_epoch": 200, ...}}

(``deepsmote_autoencoder``: "architecture": {"input_shape": [C, H, W], "latent_dim": n_z}). Loading
checks that it is that stage and comes from the run's training set (dataset, per-class counts, class
names, and the training-set fields of its key), that it was selected as the run asks, and that a g
selected on a validation split was selected on the run's own (else the run's test set would hold the
images g was chosen on), and refuses it otherwise with a message naming the field. Train one into a file::

    python -m core.stages m2m_generator --dataset cifar10 --data-root /abs/data --ratio 100 --out /abs/g.pt
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from core.config import FORMER_DEFAULTS, RUN_FIELDS, ConfigError, TrainConfig
from core.augment import to_unit
from core.data import DATASETS, channels_first, imbalanced_arrays, load
from core.deepsmote import Autoencoder, train_autoencoder
from core.fused import FusedNetwork
from core.methods import get_method
from core.models import create_model

log = logging.getLogger(__name__)

TRAINING_SET = ("dataset", "imbalance", "ratio", "mu", "subset_seed", "stage_seed")
VALIDATION_SET = ("eval_split", "val_split", "val_seed")  # the images held out of the run's evaluation split


@dataclass(frozen=True)
class Stage:
    description: str
    key_fields: tuple[str, ...]
    # (config, training images (N, H, W, C) uint8, labels, a saved state to go on from or None, a callback
    # that saves one) -> (architecture, state dict, metrics)
    train: Callable[[TrainConfig, np.ndarray, np.ndarray, dict[str, Any] | None, Callable[[dict[str, Any]], None]],
                    tuple[dict[str, Any], dict[str, Any], dict[str, float]]]
    build: Callable[[dict[str, Any]], nn.Module]  # architecture -> untrained model
    headline: tuple[str, ...]  # the metrics python -m core.stages prints: which epoch it kept, and how good
    seed: Callable[[int], int]  # stage_seed -> the seed it trains under (in its key: another seed, another stage)
    # config -> key fields beyond key_fields, which a stage's key holds only where they are set otherwise
    # than before they existed: the keys of the stages trained before them stay theirs
    selection_fields: Callable[[TrainConfig], tuple[str, ...]] = lambda cfg: ()

    def key_fields_of(self, cfg: TrainConfig) -> tuple[str, ...]:
        return self.key_fields + self.selection_fields(cfg)


def generator_seed(stage_seed: int) -> int:
    """The seed g trains under, drawn from ``stage_seed`` away from the trials' seeds (0, 1, ...): with
    ``stage_seed`` itself, the trial of that seed would start f from g's initial weights and first
    epoch's draws, a step toward the reference port's defect of one network as f and g (the official
    code trains g apart)."""
    return int(hashlib.sha256(f"m2m_generator {stage_seed}".encode()).hexdigest()[:8], 16)


def generator_config(cfg: TrainConfig) -> TrainConfig:
    """g's run: ERM on the same training set and schedule, seeded with ``generator_seed(stage_seed)``,
    evaluated where its state is saved (every ``stage_checkpoint_every`` epochs) and at its end, or, when
    g is selected on the validation set, every epoch, as the official code does; never selected on the
    test set."""
    stage = STAGES["m2m_generator"]
    fields = {name: getattr(cfg, name) for name in stage.key_fields_of(cfg) + RUN_FIELDS}
    every = 1 if cfg.m2m_generator_selection == "validation" else min(cfg.stage_checkpoint_every, cfg.epochs)
    fields.update(method="erm", seed=stage.seed(fields.pop("stage_seed")), milestones=list(cfg.milestones),
                  eval_every=every)
    return TrainConfig.from_dict(fields)


def generator_selection_fields(cfg: TrainConfig) -> tuple[str, ...]:
    """The fields that choose g's epoch (the validation set: the part ``val_split`` and ``val_seed`` hold
    out of the ``eval_split``), in g's key when g is chosen on the validation set; the g's that took their
    final epoch were trained before the choice existed, and keep their keys."""
    if cfg.m2m_generator_selection == "final":
        return ()
    return ("m2m_generator_selection", *VALIDATION_SET)


def best_on_validation(state: dict[str, Any], selected: dict[str, Any] | None) -> dict[str, Any]:
    """g's epoch of best validation accuracy after the evaluation in ``state`` (the first such epoch,
    as ``val_acc_best``), as that epoch's {"epoch", "metrics", "net"}; ``selected``: the one before it,
    or None."""
    if selected is None or state["metrics"][0]["val_acc"] > selected["metrics"][0]["val_acc"]:
        return {k: state[k] for k in ("epoch", "metrics", "net")}
    return selected


def _train_generator(cfg: TrainConfig, x: np.ndarray, y: np.ndarray, resume: dict[str, Any] | None,
                     save_state: Callable[[dict[str, Any]], None]):
    from core.train import train  # core.train loads stages: imported when a stage trains

    g_cfg = generator_config(cfg)
    on_validation = g_cfg.m2m_generator_selection == "validation"
    last = [] if resume is None else [resume]  # a state saved after the last epoch trains no further

    def keep(state: dict[str, Any]) -> None:
        if on_validation:  # the selected epoch travels with the saved state, so a stopped g selects the same
            state["selected"] = best_on_validation(state, last[-1]["selected"] if last else None)
        last[:] = [state]
        if state["epoch"] % cfg.stage_checkpoint_every == 0 or state["epoch"] == g_cfg.epochs:
            save_state(state)

    train(g_cfg, save_state=keep, resume=resume)
    chosen = last[-1]["selected"] if on_validation else last[-1]
    architecture = {"model": g_cfg.model, "num_classes": len(last[-1]["counts"]), "in_channels": int(x.shape[-1]),
                    "head_bias": g_cfg.head_bias}
    metrics = {**chosen["metrics"][0], "selected_epoch": chosen["epoch"]}  # the metrics of g, the selected epoch
    return architecture, generator_weights(architecture, chosen["net"]), {f"g_{k}": v for k, v in metrics.items()}


def generator_weights(architecture: dict[str, Any], net: dict[str, Any]) -> dict[str, torch.Tensor]:
    """g's state dict, loadable into its architecture, from the ``net`` of a state its run saved."""
    fused = FusedNetwork([_build_generator(architecture)])
    fused.load_state_dict(net)
    return fused.member_state(0)


def _build_generator(architecture: dict[str, Any]) -> nn.Module:
    return create_model(architecture["model"], architecture["num_classes"], architecture["in_channels"],
                        head_bias=architecture.get("head_bias", FORMER_DEFAULTS["head_bias"]))


def _train_autoencoder(cfg: TrainConfig, x: np.ndarray, y: np.ndarray, resume: dict[str, Any] | None,
                       save_state: Callable[[dict[str, Any]], None]):
    from core.train import resolve_device  # as above: core.train imports this module

    device = resolve_device(cfg.device)
    images = to_unit(channels_first(x, device))
    state, metrics = train_autoencoder(images, torch.from_numpy(y).to(device), cfg, device, resume, save_state)
    return {"input_shape": list(images.shape[1:]), "latent_dim": cfg.deepsmote_latent_dim}, state, metrics


def _build_autoencoder(architecture: dict[str, Any]) -> nn.Module:
    return Autoencoder(architecture["input_shape"], architecture["latent_dim"])


STAGES: dict[str, Stage] = {
    "m2m_generator": Stage(
        "M2m's g, an ERM model of the run's training set",
        TRAINING_SET + ("model", "head_bias", "head_init", "epochs", "batch_size", "lr", "momentum",
                        "weight_decay", "warmup_epochs", "milestones", "lr_factor"),
        _train_generator, _build_generator, ("g_selected_epoch", "g_val_acc", "g_test_acc"), generator_seed,
        generator_selection_fields),
    "deepsmote_autoencoder": Stage(
        "DeepSMOTE's encoder/decoder of the run's training set",
        TRAINING_SET + ("deepsmote_epochs", "deepsmote_batch_size", "deepsmote_lr", "deepsmote_latent_dim"),
        _train_autoencoder, _build_autoencoder, ("ae_best_epoch", "ae_loss"), lambda stage_seed: stage_seed),
}


def needed_stages(cfg: TrainConfig) -> list[str]:
    """The stages ``cfg``'s method needs and whose checkpoint path it does not give."""
    return [name for name in get_method(cfg.method).stages if getattr(cfg, name) is None]


def stage_key(name: str, cfg: TrainConfig) -> dict[str, Any]:
    """What stage ``name`` of ``cfg`` depends on; equal keys give the same stage."""
    key = {"stage": name, "seed": STAGES[name].seed(cfg.stage_seed)}
    key.update({f: list(v) if isinstance(v := getattr(cfg, f), tuple) else v for f in STAGES[name].key_fields_of(cfg)})
    return key


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def training_set(cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray, list[int], list[str]]:
    """The run's imbalanced training set: images (N, H, W, C) uint8, labels, counts, class names."""
    arrays = load(cfg.dataset, cfg.data_root, cfg.download)
    x, y, counts = imbalanced_arrays(arrays, DATASETS[cfg.dataset], cfg.imbalance, cfg.ratio, cfg.mu, cfg.subset_seed)
    return x, y, list(counts), list(arrays.classes)


def train_stage(name: str, cfg: TrainConfig, partial: str | None = None) -> tuple[dict[str, Any], dict[str, float]]:
    """Train stage ``name`` for ``cfg``: its checkpoint and metrics (``wall_s`` among them, over all its
    legs). With ``partial``, a file path, the stage saves its state there every ``stage_checkpoint_every``
    epochs and goes on from a state found there (``resumed_epoch``: its epoch; 0 when trained in one go).
    The caller removes that file (``remove_partial``) once the stage is kept."""
    started = time.perf_counter()
    x, y, counts, classes = training_set(cfg)
    owner = state_owner(name, cfg)
    saved = read_partial(name, owner, partial)
    resume, spent = (saved["state"], saved["wall_s"]) if saved else (None, 0.0)

    def save_state(state: dict[str, Any]) -> None:
        if partial is not None:
            write_checkpoint(checkpoint_bytes({"owner": owner, "state": state,
                                               "wall_s": spent + time.perf_counter() - started}), partial)

    log.info("training stage %s (%s) for %s%s", name, STAGES[name].description, cfg.dataset,
             f", going on from epoch {resume['epoch']} of its state in {partial}" if resume else "")
    try:
        architecture, state, metrics = STAGES[name].train(cfg, x, y, resume, save_state)
    except ConfigError as err:  # saved by a run of other fields
        if resume is None or err.field != "resume":
            raise
        log.warning("stage %s: its state in %s cannot go on here (%s); training it from the start", name, partial, err)
        resume, spent = None, 0.0  # save_state reads spent when called
        architecture, state, metrics = STAGES[name].train(cfg, x, y, None, save_state)
    checkpoint = {"stage": name, "dataset": cfg.dataset, "counts": counts, "classes": classes,
                  "architecture": architecture, "state": state, "key": stage_key(name, cfg), "metrics": metrics}
    return checkpoint, {**metrics, "resumed_epoch": resume["epoch"] if resume else 0,
                        "wall_s": spent + time.perf_counter() - started}


def state_owner(name: str, cfg: TrainConfig) -> dict[str, str]:
    """Whose a stage's saved state is: its key's, on a kind of device (whose random generators it holds)."""
    from core.train import resolve_device  # as above

    return {"key": key_digest(stage_key(name, cfg)), "device": resolve_device(cfg.device).type}


def read_partial(name: str, owner: dict[str, str], path: str | None) -> dict[str, Any] | None:
    """The state that ``owner`` (``state_owner``) saved at ``path`` while it trained, or None where there
    is none to go on from (``python -m core.stages`` run again with other flags and the same ``--out``
    finds another key's)."""
    if path is None or not os.path.exists(path):
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a state that cannot be read is trained again, never trusted
        log.warning("stage %s: its state in %s cannot be read (%s); training it from the start", name, path, err)
        return None
    if not isinstance(saved, dict) or saved.get("owner") != owner:
        log.warning("stage %s: %s holds the state of another stage key (stage, training set, seed or schedule) "
                    "or kind of device; training it from the start", name, path)
        return None
    return saved


def remove_partial(path: str) -> None:
    """Remove a stage's saved state once the stage is kept (another process may have done so)."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def train_stage_file(name: str, cfg: TrainConfig, path: str) -> dict[str, float]:
    """Train stage ``name`` for ``cfg`` into the checkpoint file ``path``; its metrics. Its state in
    training is kept beside it (``partial_beside``), so that the same command, stopped, goes on."""
    partial = partial_beside(path)
    checkpoint, metrics = train_stage(name, cfg, partial)
    write_checkpoint(checkpoint_bytes(checkpoint), path)
    remove_partial(partial)
    return metrics


def partial_beside(path: str) -> str:
    return f"{path}.partial"


def checkpoint_bytes(checkpoint: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def write_checkpoint(content: bytes, path: str) -> None:
    """Write atomically: a reader never sees half a checkpoint."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=os.path.dirname(path) or ".", delete=False) as f:
        f.write(content)
    os.replace(f.name, path)


def read_checkpoint(name: str, path: str) -> dict[str, Any]:
    """The checkpoint at ``path``, checked to be stage ``name``; refused naming the field otherwise."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # data, never code
    except Exception as err:  # noqa: BLE001 - any unreadable file is refused the same way
        raise ConfigError(name, f"{path} is not a readable stage checkpoint ({err})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("stage") != name:
        found = checkpoint.get("stage") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ConfigError(name, f"{path} holds {found!r}, not the stage {name!r}")
    missing = {"dataset", "counts", "classes", "architecture", "state"} - set(checkpoint)
    if missing:
        raise ConfigError(name, f"{path} lacks {sorted(missing)}; see core/stages.py for the format")
    return checkpoint


def check_training_set(name: str, checkpoint: dict[str, Any], path: str, cfg: TrainConfig, counts: list[int],
                       classes: list[str]) -> None:
    """Refuse a stage trained on another training set than the run's, naming the field. Counts alone
    cannot tell two subset seeds apart (the same counts, other images: the reference DeepSMOTE port's
    data mismatch), so the fields of the key a trained stage carries are compared too; a checkpoint of
    your own has no key, only its dataset, counts and classes."""
    key = checkpoint.get("key", {})
    found = [("dataset", checkpoint["dataset"], cfg.dataset), ("counts", checkpoint["counts"], list(counts)),
             ("classes", checkpoint["classes"], list(classes))]
    found += [(f, key[f], getattr(cfg, f)) for f in TRAINING_SET if f != "stage_seed" and f in key]
    for what, trained, expected in found:
        if trained != expected:
            raise ConfigError(name, f"{path} was trained on {what} {trained!r} but this run's training set "
                                    f"has {expected!r}; a stage must come from the run's own training set "
                                    f"(dataset, imbalance, ratio, mu, subset_seed)")


def check_selection_set(name: str, checkpoint: dict[str, Any], path: str, cfg: TrainConfig) -> None:
    """Refuse a stage selected otherwise than the run asks (its ``selection_fields``: a g of the final
    epoch for a run that asks for one selected on validation), or selected on a validation split other
    than the run's (the run's test set would hold the images it was chosen on), naming the field. A
    checkpoint of your own has no key: nothing records how it was selected."""
    key = checkpoint.get("key")
    if key is None:
        return
    for field in STAGES[name].selection_fields(cfg):
        kept = key.get(field, getattr(TrainConfig, field))  # a key without the field: its default
        if kept != getattr(cfg, field):
            raise ConfigError(name, f"{path} was selected with {field} {kept!r}, but this run asks for "
                                    f"{getattr(cfg, field)!r}; train the stage the run asks for")
    for field in VALIDATION_SET:
        if field in key and key[field] != getattr(cfg, field):
            raise ConfigError(name, f"{path} was selected on the validation images of {field} {key[field]!r}, "
                                    f"but this run has {getattr(cfg, field)!r}, so its test set would hold images "
                                    f"the stage was chosen on; run with the stage's {', '.join(VALIDATION_SET)}, "
                                    f"or use a stage of its final epoch")


def load_stage(name: str, cfg: TrainConfig, counts: list[int], classes: list[str], device: torch.device) -> nn.Module:
    """Stage ``name`` of the run ``cfg`` (whose training set has ``counts`` and ``classes``), frozen: in
    eval mode and without gradients for its weights."""
    path = getattr(cfg, name)
    if path is None:
        raise ConfigError(name, f"method {cfg.method!r} needs {STAGES[name].description}; give the absolute path "
                                f"of its checkpoint (python -m core.stages {name} ... --out PATH), or run the "
                                f"method in a sweep, which finds it in MLflow or trains it once")
    checkpoint = read_checkpoint(name, path)
    check_training_set(name, checkpoint, path, cfg, counts, classes)
    check_selection_set(name, checkpoint, path, cfg)
    try:
        model = STAGES[name].build(checkpoint["architecture"])
        model.load_state_dict(checkpoint["state"])
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        raise ConfigError(name, f"{path}: its weights do not fit its architecture "
                                f"{checkpoint['architecture']!r} ({err})") from None
    return model.to(device).eval().requires_grad_(False)


def main(argv: list[str] | None = None) -> str:
    """Train a stage for the run the flags describe and write its checkpoint to ``--out``; or, with
    ``--register FILE --tracking-uri URI``, log your own checkpoint to MLflow as that run's stage, so
    that sweeps use it."""
    from core.train import _parser, read_config_file

    parser = _parser()
    parser.description = main.__doc__
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--out", help="absolute path of the checkpoint to write")
    parser.add_argument("--register", help="a checkpoint of yours to log to MLflow as this run's stage")
    parser.add_argument("--tracking-uri", help="the MLflow store of --register")
    args = vars(parser.parse_args(argv))
    name, out, register, uri = (args.pop(k) for k in ("stage", "out", "register", "tracking_uri"))
    fields = {k: v for k, v in args.items() if v is not None and k != "config_file"}
    cfg = TrainConfig.from_dict({**read_config_file(args.get("config_file")), **fields})
    if register:
        if not uri:
            raise ValueError("tracking_uri: --register needs --tracking-uri")
        from core import stage_cache

        return stage_cache.register(uri, name, cfg, os.path.abspath(register)).info.run_id
    if not out:
        raise ValueError("out: give --out PATH (or --register FILE --tracking-uri URI)")
    try:
        metrics = train_stage_file(name, cfg, os.path.abspath(out))
    except KeyboardInterrupt:
        saved = read_partial(name, state_owner(name, cfg), partial_beside(os.path.abspath(out)))
        print(f"interrupted: the state of epoch {saved['state']['epoch']} is kept in {partial_beside(out)}; the same "
              f"command goes on from it" if saved else f"interrupted before the stage's first saved state (every "
              f"{cfg.stage_checkpoint_every} epochs); the same command starts it again", file=sys.stderr)
        raise SystemExit(130) from None
    headline = "".join(f", {k} {metrics[k]:.4g}" for k in STAGES[name].headline if k in metrics)
    log.info("wrote %s (%.1f s%s): pass it as --%s %s", out, metrics["wall_s"], headline, name.replace("_", "-"),
             os.path.abspath(out))
    return os.path.abspath(out)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        main()
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
