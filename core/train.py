"""The training function every sweep trial runs: ``train(config, report)``.

Set-up (data on the device, model, optimiser, loss), then the epoch loop of the paper's schedule
(SGD, linear warm-up, step decay, class-balanced re-weighting from the DRW epoch), an evaluation on
the balanced test set every ``eval_every`` epochs, and one ``report(metrics)`` per evaluation.
Every random draw after set-up comes from one generator seeded by ``config.seed``, and the model is
initialised under that seed without touching the global RNG: same seed and device, same numbers.

Usage: ``python -m core.train --method mamix_drw --omega 0.25 --dataset digits``
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from core.config import TrainConfig
from core.data import DATASETS, DeviceData, imbalanced_arrays, load, to_device
from core.evaluation import accuracy_report, test_logits
from core.losses import ClassWeights, LDAMLoss, mixed_cross_entropy
from core.margins import margin_report
from core.methods import Method, get_method
from core.mixing import MixedBatch, mix_batch, permuted_partners
from core.models import create_model
from core.smote import neighbour_table, smote_oversample

log = logging.getLogger(__name__)

Report = Callable[[dict[str, float]], None]


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite; the run cannot recover."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} requested but CUDA is not available; allowed here: 'cpu', 'auto'")
    return torch.device(name)


def learning_rate(cfg: TrainConfig, epoch: int) -> float:
    """Linear warm-up over the first ``warmup_epochs`` (Goyal et al.), then ``lr_factor`` at each milestone."""
    if epoch < cfg.warmup_epochs:
        return cfg.lr * (epoch + 1) / cfg.warmup_epochs
    return cfg.lr * cfg.lr_factor ** sum(epoch >= m for m in cfg.milestones)


def prepare_data(cfg: TrainConfig, method: Method, device: torch.device) -> tuple[DeviceData, torch.Tensor | None]:
    """The imbalanced training set on the device (SMOTE-oversampled for ``smote``), the test set, and
    for SMOTE-Mix / Neighbor-Mix the (N, smote_k) table of each sample's nearest neighbours."""
    spec = DATASETS[cfg.dataset]
    arrays = load(cfg.dataset, cfg.data_root, cfg.download)
    x, y, counts = imbalanced_arrays(arrays, spec, cfg.imbalance, cfg.ratio, cfg.mu, cfg.subset_seed)
    neighbours = None
    if method.oversample:
        x, y = smote_oversample(x, y, cfg.smote_k, cfg.seed)
    if method.pairing in ("same_class_nn", "any_nn"):
        table = neighbour_table(x, y, cfg.smote_k, same_class=method.pairing == "same_class_nn")
        neighbours = torch.from_numpy(table).to(device)
    return to_device(x, y, arrays, counts, spec, device), neighbours


class Criterion:
    """The method's loss on a (possibly mixed) batch: cross-entropy, or LDAM's margin-adjusted one,
    each with optional class weights."""

    def __init__(self, method: Method, counts: list[int], cfg: TrainConfig, device: torch.device):
        self.ldam = LDAMLoss(counts, cfg.max_m, cfg.s).to(device) if method.loss == "ldam" else None
        self.reduction = cfg.reduction

    def __call__(self, logits: torch.Tensor, batch: MixedBatch, weight: torch.Tensor | None) -> torch.Tensor:
        if self.ldam is not None:  # LDAM methods do not mix: y_j == y_i
            logits = self.ldam.adjusted_logits(logits, batch.y_i)
        return mixed_cross_entropy(logits, batch.y_i, batch.y_j, batch.lam_y, weight, self.reduction)


class BatchMaker:
    """Turns a batch of training indices into the method's (mixed) batch."""

    def __init__(self, method: Method, data: DeviceData, neighbours: torch.Tensor | None, cfg: TrainConfig,
                 generator: torch.Generator):
        self.method, self.data, self.neighbours, self.cfg, self.gen = method, data, neighbours, cfg, generator
        self.counts = torch.tensor(data.counts, device=data.x_train.device)
        self.partners = {"batch": self._in_batch, "same_class_nn": self._neighbour, "any_nn": self._neighbour}

    def __call__(self, idx: torch.Tensor) -> MixedBatch:
        x, y = self.data.train_batch(idx, self.gen)
        return self.mix(x, y, idx)

    def mix(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> MixedBatch:
        """The method's (mixed) batch from augmented, standardised images ``x`` with labels ``y``
        (``idx``: their training indices, used by the nearest-neighbour pairings)."""
        if not self.method.mixes:
            return MixedBatch(x, y, y, torch.ones_like(y, dtype=torch.float32), torch.ones((), device=x.device))
        x_j, y_j = self.partners[self.method.pairing](x, y, idx)
        c = self.cfg
        return mix_batch(x, y, x_j, y_j, rule=self.method.label_rule, counts=self.counts, generator=self.gen,
                         alpha=c.alpha, omega=c.omega, tau=c.tau, kappa=c.kappa)

    def _in_batch(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return permuted_partners(x, y, self.gen)

    def _neighbour(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        column = torch.randint(0, self.neighbours.shape[1], (len(idx),), generator=self.gen, device=idx.device)
        return self.data.train_batch(self.neighbours[idx, column], self.gen)


def train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, make_batch: BatchMaker,
                criterion: Criterion, weight: torch.Tensor | None, batch_size: int, amp: bool,
                channels_last: bool) -> torch.Tensor:
    """One pass over the shuffled training set; returns the mean loss as a device tensor (no host sync)."""
    n = len(make_batch.data.y_train)
    order = torch.randperm(n, generator=make_batch.gen, device=make_batch.counts.device)
    # A last batch of one sample would break BatchNorm's training statistics: it is skipped.
    batches = [b for b in order.split(batch_size) if len(b) > 1]
    total = torch.zeros((), device=order.device)
    for idx in batches:
        total += train_step(model, optimizer, make_batch(idx), criterion, weight, amp, channels_last)
    return total / len(batches)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: MixedBatch, criterion: Criterion,
               weight: torch.Tensor | None, amp: bool, channels_last: bool) -> torch.Tensor:
    """One SGD step on a (mixed) batch; returns the detached loss (no host sync)."""
    x = batch.x.contiguous(memory_format=torch.channels_last) if channels_last else batch.x
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(x)
    loss = criterion(logits, batch, weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


@dataclass
class Setup:
    """Everything a run trains with, built from its config (the set-up part of ``train``)."""

    cfg: TrainConfig
    method: Method
    device: torch.device
    amp: bool
    channels_last: bool
    data: DeviceData
    model: torch.nn.Module
    forward: torch.nn.Module  # the model, compiled (cfg.compile_mode) when cfg.compile
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    make_batch: BatchMaker
    criterion: Criterion
    class_weights: ClassWeights


def set_up(cfg: TrainConfig) -> Setup:
    """Data on the device, the model initialised under the seed (global RNG untouched), SGD, the
    method's batch maker, loss and class-weight schedule."""
    method = get_method(cfg.method)
    device = resolve_device(cfg.device)
    # bf16 autocast by default only where the GPU computes in bf16 (Ampere and later); elsewhere fp32.
    amp = device.type == "cuda" and torch.cuda.is_bf16_supported() if cfg.amp is None else cfg.amp
    channels_last = device.type == "cuda" if cfg.channels_last is None else cfg.channels_last
    data, neighbours = prepare_data(cfg, method, device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model, data.num_classes, data.in_channels, normed_head=method.loss == "ldam")
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    generator = torch.Generator(device).manual_seed(cfg.seed)
    return Setup(cfg, method, device, amp, channels_last, data, model,
                 torch.compile(model, mode=cfg.compile_mode) if cfg.compile else model, optimizer, generator,
                 BatchMaker(method, data, neighbours, cfg, generator), Criterion(method, data.counts, cfg, device),
                 ClassWeights(method.weighting, data.counts, cfg.cb_beta, cfg.drw_epoch))


def run_epoch(run: Setup, epoch: int) -> torch.Tensor:
    """Epoch ``epoch`` (0-based) of a set-up run at its current learning rate: the class weights of
    that epoch's phase, then ``train_epoch``; returns the mean loss as a device tensor."""
    return train_epoch(run.forward, run.optimizer, run.make_batch, run.criterion,
                       run.class_weights.at(epoch, run.device), run.cfg.batch_size, run.amp, run.channels_last)


def train(config: TrainConfig | dict[str, Any], report: Report | None = None, *,
          resume: dict[str, Any] | None = None, save_state: Callable[[dict[str, Any]], None] | None = None
          ) -> dict[str, float]:
    """Train one model with ``config`` and return the metrics of the last evaluation.

    ``report(metrics)`` is called after every evaluation. ``save_state(state)`` (optional) is called
    just before it with everything needed to continue (model, optimiser, generator, epoch, best
    accuracy); passing such a state back as ``resume`` continues the run from there.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    run = set_up(cfg)
    model, optimizer, generator, data = run.model, run.optimizer, run.generator, run.data

    start, best, metrics = 0, -math.inf, {}
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        generator.set_state(resume["generator"])
        start, best, metrics = resume["epoch"], resume["best"], dict(resume["metrics"])

    # --- epoch loop
    for epoch in range(start, cfg.epochs):
        lr = learning_rate(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        train_loss = run_epoch(run, epoch).item()  # one host sync per epoch: a diverging run stops at once
        if not math.isfinite(train_loss):
            raise DivergenceError(f"train_loss is {train_loss} at epoch {epoch + 1}; lower lr or check the data")
        if (epoch + 1) % cfg.eval_every and epoch + 1 < cfg.epochs:
            continue

        # --- evaluation
        logits = test_logits(run.forward, data, 2 * cfg.batch_size, run.amp, run.channels_last)
        metrics = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss}
        metrics.update(accuracy_report(logits, data.y_test, data.counts, cfg.many_shot, cfg.few_shot))
        best = max(best, metrics["test_acc"])
        metrics["test_acc_best"] = best  # selected on the test set: for comparison with papers only
        metrics.update(margin_report(logits, data.y_test, data.counts))

        # --- report
        if save_state is not None:
            # Copied: the caller may keep the state while training goes on.
            save_state(copy.deepcopy({"epoch": epoch + 1, "best": best, "metrics": metrics,
                                      "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                      "generator": generator.get_state(), "config": cfg.to_dict(),
                                      "counts": data.counts, "classes": data.classes}))
        if report is not None:
            report(metrics)
    return metrics


# ----------------------------------------------------------------------------- command line

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train one model (flags are TrainConfig fields).")
    parser.add_argument("--config", dest="config_file", help="a JSON or YAML file of TrainConfig fields; "
                                                             "flags given beside it override it")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type)
        if "bool" in kind:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        elif "tuple" in kind:
            parser.add_argument(flag, dest=f.name, type=int, nargs="+", default=None)
        else:
            convert = int if kind.startswith("int") else float if "float" in kind else str
            parser.add_argument(flag, dest=f.name, type=convert, default=None)
    return parser


def read_config_file(path: str | None) -> dict[str, Any]:
    """TrainConfig fields from a JSON or YAML mapping (YAML is a superset of JSON)."""
    if path is None:
        return {}
    import yaml

    with open(path) as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"config: {path} must hold a mapping of TrainConfig fields, got {type(data).__name__}")
    return data


def main(argv: list[str] | None = None) -> dict[str, float]:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = {k: v for k, v in vars(_parser().parse_args(argv)).items() if v is not None}
    cfg = TrainConfig.from_dict({**read_config_file(args.pop("config_file", None)), **args})
    log.info("training %s on %s (%s, ratio %g), %d epochs", cfg.method, cfg.dataset, cfg.imbalance, cfg.ratio,
             cfg.epochs)

    def progress(m: dict[str, float]) -> None:
        log.info("epoch %3d  lr %.4f  loss %.4f  test_acc %.4f  balanced %.4f  margin_gap %+.3f", m["epoch"],
                 m["lr"], m["train_loss"], m["test_acc"], m["test_balanced_acc"], m["margin_gap"])

    metrics = train(cfg, progress)
    per_class = [k for k in metrics if k.startswith("class_acc_")]
    log.info("per-class test accuracy (final epoch): %s", "  ".join(
        f"{k.removeprefix('class_acc_')}: {metrics[k]:.3f}" for k in per_class))
    log.info("final test_acc %.4f (best epoch, test-selected: %.4f)", metrics["test_acc"], metrics["test_acc_best"])
    return metrics


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:  # a bad field or value: one line naming it, not a traceback
        raise SystemExit(f"error: {err}") from None
