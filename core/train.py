"""Training: one run, or a pack of K runs of one shape trained together as one fused model.

``train(config, report)`` trains one model. ``train_pack(configs, report)`` trains K member configs
that share the fusable key (every field but ``MEMBER_FIELDS``, and the method's pairing, loss and
oversampling) in one process, as one model whose parameters carry a member axis (``core.fused``). One
run is a pack of one: there is one training loop.

Set-up: the imbalanced training set on the device, each member's model initialised under its own
seed, one SGD optimiser over the stacked parameters. Then the paper's schedule (linear warm-up, step
decay, class-balanced re-weighting from each member's DRW epoch), an evaluation on the balanced test
set every ``eval_every`` epochs, and one ``report`` per evaluation. Each epoch, every member draws all
its randomness at once from its own generator (order, crops, flips, lam_x, partners), so a step has
no draw of its own, no per-member launch and no host sync; only M2m draws each step, its translations'
random starts (one image-sized draw per member: an epoch's would be as large as the training set).

Members never interact: the pack's loss is the sum of the members' losses, so each member's gradient
is the one it has alone, and SGD with momentum and weight decay is element-wise. Same seed and device
give the same numbers, alone or in any pack, up to the rounding of grouped kernels. A member whose
loss turns NaN or infinite is frozen out of the pack and reported as failed; the others go on.

From its switch epoch (``drw_epoch``) a method may also draw class-balanced epochs, translate batches
(M2m, ``core.m2m``) or train on a synthetic balanced set (DeepSMOTE, ``core.deepsmote``), as its
``core.methods.Method`` says; models such methods need beforehand are stages (``core.stages``).

Usage: ``python -m core.train --method mamix_drw --omega 0.25 --dataset digits``
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from core.augment import draw_crops
from core.config import RUN_FIELDS, ConfigError, TrainConfig
from core.data import DATASETS, DeviceData, batch_bounds, imbalanced_arrays, load, to_device
from core.deepsmote import deepsmote_oversample
from core.evaluation import accuracy_report, eval_logits
from core.fused import FusedNetwork, choose_executor
from core.losses import ldam_logits, ldam_margins, mixed_cross_entropy
from core.m2m import TRANSLATORS, draw_translation
from core.margins import margin_report
from core.methods import Method, get_method
from core.mixing import MixedBatch, mix_batch, sample_beta
from core.models import create_model
from core.schedule import ClassWeights, learning_rate
from core.smote import distinct_neighbours, neighbour_table, smote_oversample
from core.stages import load_stage

log = logging.getLogger(__name__)

Metrics = dict[str, float]
PackReport = Callable[[list[Metrics], dict[int, str]], None]  # every member's metrics, failures by member

# Fields a member of a pack sets on its own; every other TrainConfig field is the pack's.
MEMBER_FIELDS = ("seed", "method", "drw_epoch", "cb_beta", "alpha", "omega", "tau", "kappa", "max_m", "s")


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite; the run cannot recover."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} requested but CUDA is not available; allowed here: 'cpu', 'auto'")
    return torch.device(name)


# ----------------------------------------------------------------------------- packs

def pack_key(cfg: TrainConfig) -> dict[str, Any]:
    """What members of one pack share: every field but ``MEMBER_FIELDS``, and the method's pairing,
    loss, oversampling and what it changes at the switch (they decide the batches' shapes and the
    model's head). A synthetic set that replaces the training set at the switch changes the epoch's
    length there, so its members share the switch epoch too."""
    method = get_method(cfg.method)
    key = {f"method's {name}": getattr(method, name)
           for name in ("pairing", "loss", "oversample", "sampler", "translation", "synthesis")}
    key.update({name: value for name, value in cfg.to_dict().items() if name not in MEMBER_FIELDS})
    if method.synthesis != "none":
        key["drw_epoch"] = cfg.drw_epoch
    return key


def check_pack(cfgs: Sequence[TrainConfig]) -> None:
    """Refuse configs that cannot train as one pack, naming the first field that differs."""
    if not cfgs:
        raise ConfigError("configs", "got no member; allowed: one or more TrainConfigs")
    first = pack_key(cfgs[0])
    for m, cfg in enumerate(cfgs[1:], 1):
        for name, value in pack_key(cfg).items():
            if value != first[name]:
                raise ConfigError("method" if name.startswith("method's") else name,
                                  f"member {m} has {name} = {value!r} but member 0 has {first[name]!r}; members "
                                  f"of a pack differ only in {list(MEMBER_FIELDS)} (and methods of one pairing, "
                                  f"loss and oversampling)")


@dataclass
class Pack:
    """Everything K members train with, built from their configs (the set-up part of ``train_pack``)."""

    cfgs: list[TrainConfig]
    method: Method  # the members' shared pairing, loss and oversampling
    device: torch.device
    amp: bool
    data: DeviceData  # the training images are a pool; member m trains on pool[index[m]]
    index: torch.Tensor  # (K, N)
    neighbours: torch.Tensor | None  # (N, smote_k) nearest neighbours of each training sample (SMOTE-Mix...)
    neighbour_counts: torch.Tensor | None  # (N,) the distinct ones in each row (core.smote.distinct_neighbours)
    net: FusedNetwork
    forward: Callable[[torch.Tensor], torch.Tensor]  # the net, compiled (cfg.compile_mode) unless eager
    optimizer: torch.optim.Optimizer
    generators: list[torch.Generator]
    class_weights: list[ClassWeights]
    counts: torch.Tensor  # (C,) training counts n_c on the device
    rules: dict[str, torch.Tensor]  # label rule -> (K, 1) mask of the members that use it
    omega: torch.Tensor  # (K, 1) each member's MAMix omega, Remix tau and P
    tau: torch.Tensor
    kappa: torch.Tensor
    margins: torch.Tensor | None  # (K, C) LDAM margins, for LDAM packs
    s: torch.Tensor  # (K,) LDAM scale
    alive: torch.Tensor  # (K,) False for a member frozen out after diverging
    switched_index: torch.Tensor | None = None  # (K, N') the members' sets from the switch epoch (DeepSMOTE)
    stage_models: dict[str, nn.Module] = dataclasses.field(default_factory=dict)  # frozen, by stage name

    @property
    def cfg(self) -> TrainConfig:
        """The pack's shared fields (member 0's config)."""
        return self.cfgs[0]

    @property
    def size(self) -> int:
        return len(self.cfgs)

    @property
    def compiled(self) -> bool:
        return compiles(self.cfg, self.device)


@dataclass
class PackData:
    data: DeviceData
    index: torch.Tensor  # (K, N)
    switched_index: torch.Tensor | None  # (K, N') from the switch epoch (DeepSMOTE)
    neighbours: torch.Tensor | None  # (N, smote_k)
    neighbour_counts: torch.Tensor | None  # (N,)
    stage_models: dict[str, nn.Module]


def prepare_data(cfgs: Sequence[TrainConfig], method: Method, device: torch.device) -> PackData:
    """The imbalanced training set on the device as a pool of images, each member's (K, N) index
    into it (with SMOTE, each member's synthetic samples are its own, drawn under its seed), for
    SMOTE-Mix / Neighbor-Mix the (N, smote_k) table of each sample's nearest neighbours, the stages the
    method needs (checked against this training set), and with DeepSMOTE each member's balanced set
    of the real images and its own DeepSMOTE images (from the switch epoch)."""
    cfg = cfgs[0]
    spec = DATASETS[cfg.dataset]
    arrays = load(cfg.dataset, cfg.data_root, cfg.download, cfg.eval_split)
    x, y, counts = imbalanced_arrays(arrays, spec, cfg.imbalance, cfg.ratio, cfg.mu, cfg.subset_seed)
    stage_models = {name: load_stage(name, cfg, counts, arrays.classes, device) for name in method.stages}
    pool_x, pool_y = [x], [y]

    def with_real(x_m: np.ndarray, y_m: np.ndarray) -> np.ndarray:
        """Pool the synthetic part of an oversampled set (real samples first); its index into the pool."""
        start = sum(len(p) for p in pool_x)
        pool_x.append(x_m[len(y):])
        pool_y.append(y_m[len(y):])
        return np.r_[np.arange(len(y)), np.arange(start, start + len(y_m) - len(y))]

    index, switched = [], []
    for member in cfgs:
        index.append(with_real(*smote_oversample(x, y, member.smote_k, member.seed)) if method.oversample
                     else np.arange(len(y)))
        if method.synthesis != "none":
            autoencoder = stage_models["deepsmote_autoencoder"]
            switched.append(with_real(*deepsmote_oversample(x, y, autoencoder, member.smote_k, member.seed, device)))
    neighbours = neighbour_counts = None
    if method.pairing in ("same_class_nn", "any_nn"):
        same_class = method.pairing == "same_class_nn"
        neighbours = torch.from_numpy(neighbour_table(x, y, cfg.smote_k, same_class)).to(device)
        sizes = np.bincount(y)[y] if same_class else np.full(len(y), len(y))
        neighbour_counts = torch.from_numpy(distinct_neighbours(sizes, cfg.smote_k)).to(device)
    data = to_device(np.concatenate(pool_x), np.concatenate(pool_y), arrays, counts, spec, device, cfg.val_split,
                     cfg.val_seed)
    return PackData(data, torch.from_numpy(np.stack(index)).to(device),
                    torch.from_numpy(np.stack(switched)).to(device) if switched else None, neighbours, neighbour_counts,
                    stage_models)


def compiles(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether a pack's step is compiled: ``cfg.compile``, by default on CUDA only, where its CUDA graphs
    passed ``bench/graphs_check.py`` through whole runs; on the CPU there are no graphs to gain."""
    return device.type == "cuda" if cfg.compile is None else cfg.compile


def set_up(configs: Sequence[TrainConfig]) -> Pack:
    """Data on the device, each member's model initialised under its seed (global RNG untouched) and
    fused, one SGD optimiser, each member's generator, class-weight schedule and label-rule constants."""
    cfgs = list(configs)
    check_pack(cfgs)
    cfg = cfgs[0]
    methods = [get_method(c.method) for c in cfgs]
    device = resolve_device(cfg.device)
    # bf16 autocast by default only where the GPU computes in bf16 (Ampere and later); elsewhere fp32.
    amp = device.type == "cuda" and torch.cuda.is_bf16_supported() if cfg.amp is None else cfg.amp
    channels_last = device.type == "cuda" if cfg.channels_last is None else cfg.channels_last
    prepared = prepare_data(cfgs, methods[0], device)
    data = prepared.data
    members = []
    for c in cfgs:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(c.seed)
            members.append(create_model(c.model, data.num_classes, data.in_channels,
                                        cosine_head=methods[0].loss == "ldam", head_bias=c.head_bias,
                                        head_init=c.head_init))
    batch_shape = (cfg.batch_size, *data.x_train.shape[1:])
    executor = choose_executor(cfg.fuse_executor, device, members[0], batch_shape, len(cfgs))
    net = FusedNetwork(members, executor, channels_last).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    def per_member(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64, device=device)[:, None]

    rules = {r: torch.tensor([[m.label_rule == r] for m in methods], device=device)
             for r in dict.fromkeys(m.label_rule for m in methods)}
    margins = (torch.stack([ldam_margins(data.counts, c.max_m) for c in cfgs]).to(device)
               if methods[0].loss == "ldam" else None)
    # Static shapes: an epoch's last, partial batch gets a graph of its own, rather than a recompile of the
    # full batch's graph with a symbolic batch size that would then serve every step.
    forward = torch.compile(net, mode=cfg.compile_mode, dynamic=False) if compiles(cfg, device) else net
    return Pack(
        cfgs, methods[0], device, amp, data, prepared.index, prepared.neighbours, prepared.neighbour_counts, net,
        forward, optimizer,
        [torch.Generator(device).manual_seed(c.seed) for c in cfgs],
        [ClassWeights(m.weighting, data.counts, c.cb_beta, c.drw_epoch) for m, c in zip(methods, cfgs)],
        torch.tensor(data.counts, device=device), rules, per_member([c.omega for c in cfgs]),
        per_member([c.tau for c in cfgs]), per_member([c.kappa for c in cfgs]), margins,
        torch.tensor([c.s for c in cfgs], device=device), torch.ones(len(cfgs), dtype=torch.bool, device=device),
        prepared.switched_index, prepared.stage_models)


# ----------------------------------------------------------------------------- one epoch

@dataclass
class EpochDraws:
    """One epoch's random draws of every member, stacked (K, ...), made before the epoch's first step."""

    order: torch.Tensor  # (K, N) positions in each member's training set, shuffled
    offsets: torch.Tensor  # (K, N, 2) crop offsets of the images in that order
    flips: torch.Tensor  # (K, N)
    lam_x: torch.Tensor | None = None  # (K, batches), mixing methods
    partner_keys: torch.Tensor | None = None  # (K, N): a batch's argsort of these pairs i with perm[i] (Mixup)
    neighbour_column: torch.Tensor | None = None  # (K, N): which of the smote_k neighbours (SMOTE-Mix...)
    partner_offsets: torch.Tensor | None = None  # (K, N, 2), (K, N): the neighbours' own augmentation
    partner_flips: torch.Tensor | None = None
    translation: torch.Tensor | None = None  # (K, N, 3) M2m's uniforms (core.m2m.draw_translation)
    translating: torch.Tensor | None = None  # (K,) the members past their switch epoch (M2m)
    index: torch.Tensor | None = None  # (K, N) the members' training sets in this epoch (pool positions)
    epoch: int = 0


def training_index(pack: Pack, epoch: int) -> torch.Tensor:
    """The members' training sets (K, N) in epoch ``epoch``: from the switch epoch on, DeepSMOTE's
    balanced sets; else the (possibly SMOTE-oversampled) imbalanced ones."""
    if pack.switched_index is not None and epoch >= pack.cfg.drw_epoch:
        return pack.switched_index
    return pack.index


def draw_member_epoch(pack: Pack, m: int, epoch: int = 0) -> dict[str, torch.Tensor]:
    """Member m's draws for epoch ``epoch``, in a fixed order from its generator alone."""
    gen, cfg, spec, device = pack.generators[m], pack.cfgs[m], pack.data.spec, pack.device
    index = training_index(pack, epoch)[m]
    n, switched = len(index), epoch >= cfg.drw_epoch
    if switched and pack.method.sampler == "class_balanced":  # M2m's over-sampling: weights 1 / n_y, replacement
        weights = 1.0 / pack.counts[pack.data.y_train[index]].float()
        draws = {"order": torch.multinomial(weights, n, replacement=True, generator=gen)}
    else:
        draws = {"order": torch.randperm(n, generator=gen, device=device)}
    if switched and pack.method.synthesis != "none":  # the reference trains on its DeepSMOTE set unaugmented
        draws["offsets"] = torch.full((n, 2), spec.pad, dtype=torch.int64, device=device)
        draws["flips"] = torch.zeros(n, dtype=torch.bool, device=device)
    else:
        draws["offsets"], draws["flips"] = draw_crops(n, spec.pad, spec.flip, gen, device)
    if pack.method.translation != "none":
        draws["translation"] = draw_translation(n, gen, device)
        draws["translating"] = torch.tensor(switched, device=device)
    if pack.method.mixes:
        draws["lam_x"] = sample_beta(cfg.alpha, len(batch_bounds(n, cfg.batch_size)), gen, device)
        if pack.method.pairing == "batch":
            draws["partner_keys"] = torch.rand(n, generator=gen, device=device)
        else:
            # uniform over each sample's distinct neighbours (a small class's row repeats them)
            distinct = pack.neighbour_counts[draws["order"]]
            draws["neighbour_column"] = (torch.rand(n, generator=gen, device=device) * distinct).long()
            draws["partner_offsets"], draws["partner_flips"] = draw_crops(n, spec.pad, spec.flip, gen, device)
    return draws


def draw_epoch(pack: Pack, epoch: int = 0) -> EpochDraws:
    members = [draw_member_epoch(pack, m, epoch) for m in range(pack.size)]
    return EpochDraws(**{name: torch.stack([d[name] for d in members]) for name in members[0]},
                      index=training_index(pack, epoch), epoch=epoch)


def member_images(pack: Pack, positions: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor,
                  index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented, standardised images (K, B, C, H, W) at ``positions`` (K, B) of each member's set
    (``index``, the epoch's; by default the imbalanced one)."""
    idx = (pack.index if index is None else index).gather(1, positions)
    return pack.data.train_images(idx, offsets, flips), pack.data.y_train[idx]


def make_batch(pack: Pack, draws: EpochDraws, step: int, start: int, end: int) -> MixedBatch:
    """The members' (mixed) batches of one step: samples ``start:end`` of the epoch's order."""
    positions = draws.order[:, start:end]
    x, y = member_images(pack, positions, draws.offsets[:, start:end], draws.flips[:, start:end], draws.index)
    if pack.method.translation != "none":  # M2m: some samples replaced by majority seeds translated to them
        x = TRANSLATORS[pack.method.translation](pack, draws, start, end, x, y)
    if not pack.method.mixes:
        ones = torch.ones_like(y, dtype=torch.float32)
        return MixedBatch(x, y, y, ones, ones[:, 0])
    if pack.method.pairing == "batch":  # Mixup's pairing: i with perm[i] of the same batch
        perm = draws.partner_keys[:, start:end].argsort(dim=1, stable=True)
        x_j, y_j = torch.take_along_dim(x, perm[:, :, None, None, None], dim=1), y.gather(1, perm)
    else:  # eq. 7-10: a nearest neighbour of i, augmented on its own
        partners = pack.neighbours[positions, draws.neighbour_column[:, start:end]]
        x_j, y_j = member_images(pack, partners, draws.partner_offsets[:, start:end],
                                 draws.partner_flips[:, start:end])
    return mix_batch(x, y, x_j, y_j, draws.lam_x[:, step], counts=pack.counts, rules=pack.rules,
                     omega=pack.omega, tau=pack.tau, kappa=pack.kappa)


def member_losses(pack: Pack, logits: torch.Tensor, batch: MixedBatch, weights: torch.Tensor) -> torch.Tensor:
    """Each member's loss (K,) on its batch: the mixed cross-entropy, on LDAM's margin logits for LDAM."""
    if pack.margins is not None:  # LDAM methods do not mix: y_j == y_i
        logits = ldam_logits(logits, batch.y_i, pack.margins, pack.s)
    return mixed_cross_entropy(logits, batch.y_i, batch.y_j, batch.lam_y, weights, pack.cfg.reduction)


def epoch_weights(pack: Pack, epoch: int) -> torch.Tensor:
    """Each member's class weights (K, C) in epoch ``epoch``: its class-balanced weights once its
    re-weighting has started, else ones (an unweighted loss)."""
    ones = torch.ones(pack.data.num_classes)
    return torch.stack([w if (w := cw.at(epoch, "cpu")) is not None else ones
                        for cw in pack.class_weights]).to(pack.device)


@torch.no_grad()
def update_batchnorm(pack: Pack, x: torch.Tensor) -> None:
    """A forward of ``x`` (K, B, C, H, W) whose only effect is on BatchNorm's running statistics: the net
    is in train mode outside ``evaluate``, which normalises with each batch's own statistics."""
    with torch.autocast(pack.device.type, dtype=torch.bfloat16, enabled=pack.amp):
        pack.forward(x)


def train_step(pack: Pack, batch: MixedBatch, weights: torch.Tensor) -> torch.Tensor:
    """One SGD step of every member; returns their detached losses (K,) (no host sync). With
    ``clean_forward``, the clean batch is forwarded first, as the authors' trainers do."""
    if pack.cfg.clean_forward:
        update_batchnorm(pack, batch.x_i)
    with torch.autocast(pack.device.type, dtype=torch.bfloat16, enabled=pack.amp):
        logits = pack.forward(batch.x)
    losses = member_losses(pack, logits, batch, weights)
    # where, not a product: a frozen member's loss may be NaN, and NaN * 0 is NaN.
    total = torch.where(pack.alive, losses, torch.zeros_like(losses)).sum()
    pack.optimizer.zero_grad(set_to_none=True)
    total.backward()
    pack.optimizer.step()
    return losses.detach()


def train_epoch(pack: Pack, draws: EpochDraws, weights: torch.Tensor) -> torch.Tensor:
    """One pass over every member's shuffled training set; returns the mean losses (K,) on the device."""
    bounds = batch_bounds(draws.order.shape[1], pack.cfg.batch_size)
    total = torch.zeros(pack.size, device=pack.device)
    for step, (start, end) in enumerate(bounds):
        total += train_step(pack, make_batch(pack, draws, step, start, end), weights)
    return total / len(bounds)


def run_epoch(pack: Pack, epoch: int) -> torch.Tensor:
    """Epoch ``epoch`` (0-based) at the current learning rate: the epoch's draws and class weights,
    then ``train_epoch``."""
    return train_epoch(pack, draw_epoch(pack, epoch), epoch_weights(pack, epoch))


def set_learning_rate(pack: Pack, epoch: int) -> float:
    """The schedule's learning rate in epoch ``epoch`` (0-based), set on the pack's optimiser."""
    lr = learning_rate(pack.cfg, epoch)
    for group in pack.optimizer.param_groups:
        group["lr"] = lr
    return lr


@torch.no_grad()
def freeze(pack: Pack, m: int) -> None:
    """Take member m out of training: zero weights and momentum keep its (ignored) part finite."""
    pack.alive[m] = False
    pack.net.zero_member(m)
    for p in pack.net.parameters():
        buffer = pack.optimizer.state.get(p, {}).get("momentum_buffer")
        if buffer is not None:
            buffer[m].zero_()


# ----------------------------------------------------------------------------- the loop

@dataclass
class PackResult:
    metrics: list[Metrics]  # each member's last evaluation
    failures: dict[int, str]  # member -> why it stopped


def train_pack(configs: Sequence[TrainConfig | dict[str, Any]], report: PackReport | None = None, *,
               resume: dict[str, Any] | None = None, save_state: Callable[[dict[str, Any]], None] | None = None
               ) -> PackResult:
    """Train K members as one pack and return each one's last metrics and the failures.

    ``report(metrics, failures)`` is called after every evaluation (members in ``failures`` keep their
    last metrics). ``save_state(state)`` (optional) is called just before it with everything needed to
    continue; passing such a state back as ``resume`` continues the pack from there.
    """
    cfgs = [c if isinstance(c, TrainConfig) else TrainConfig.from_dict(c) for c in configs]
    pack = set_up(cfgs)
    cfg, net, optimizer, data = pack.cfg, pack.net, pack.optimizer, pack.data
    start, best, metrics, failures = 0, [{} for _ in cfgs], [{} for _ in cfgs], {}
    if resume is not None:
        start, best, metrics, failures = restore(pack, resume)

    # --- epoch loop
    for epoch in range(start, cfg.epochs):
        lr = set_learning_rate(pack, epoch)
        losses = run_epoch(pack, epoch).tolist()  # one host sync per epoch: a diverging member stops at once
        for m, loss in enumerate(losses):
            if m not in failures and not math.isfinite(loss):
                failures[m] = f"train_loss is {loss} at epoch {epoch + 1}; lower lr or check the data"
                freeze(pack, m)
        if len(failures) == pack.size:
            break
        if (epoch + 1) % cfg.eval_every and epoch + 1 < cfg.epochs:
            continue

        # --- evaluation
        images = sum(training_index(pack, e).shape[1] for e in range(epoch + 1))
        for m, evaluation in evaluate(pack, [m for m in range(pack.size) if m not in failures]).items():
            metrics[m] = {"epoch": epoch + 1, "lr": lr, "train_loss": losses[m], "train_images": images, **evaluation}
            best[m] = best_epoch(best[m], metrics[m])
            metrics[m].update(best[m])

        # --- report
        if save_state is not None:
            # Copied: the caller may keep the state while training goes on.
            save_state(copy.deepcopy({
                "epoch": epoch + 1, "best": best, "metrics": metrics, "failures": failures,
                "net": net.state_dict(), "optimizer": optimizer.state_dict(),
                "generators": [g.get_state() for g in pack.generators], "configs": [c.to_dict() for c in cfgs],
                "counts": data.counts, "classes": data.classes}))
        if report is not None:
            report(metrics, failures)
    return PackResult(metrics, failures)


def evaluate(pack: Pack, members: list[int]) -> dict[int, Metrics]:
    """The members' metrics on the test set (accuracies and margin statistics) and, with a validation
    split, ``val_acc``, ``val_balanced_acc`` and the validation margin statistics (``val_margin_*``)."""
    cfg, data = pack.cfg, pack.data
    splits = ["test"] + (["val"] if data.y_val is not None else [])
    logits = {split: eval_logits(pack.net, data, split, 2 * cfg.batch_size) for split in splits}
    out = {}
    for m in members:
        out[m] = {}
        for split in splits:
            targets = getattr(data, f"y_{split}")
            report = accuracy_report(logits[split][m], targets, data.counts, cfg.many_shot, cfg.few_shot)
            report.update(margin_report(logits[split][m], targets, data.counts))
            if split == "val":  # the validation set selects; per-class detail stays the test set's
                report = {f"val_{k.removeprefix('test_')}": v for k, v in report.items()
                          if k in ("test_acc", "test_balanced_acc") or k.startswith("margin_")}
            out[m].update(report)
    return out


def best_epoch(best: Metrics, metrics: Metrics) -> Metrics:
    """The best-epoch columns after one more evaluation: ``test_acc_best``, the best test accuracy so
    far (selected on the test set: for comparison with papers that report it, not an estimate), and,
    with a validation split, ``val_acc_best`` and ``test_acc_at_val_best``, the test accuracy at the
    epoch of the best validation accuracy (the first such epoch): the honest best epoch."""
    best = {**best, "test_acc_best": max(best.get("test_acc_best", -math.inf), metrics["test_acc"])}
    if "val_acc" in metrics and metrics["val_acc"] > best.get("val_acc_best", -math.inf):
        best.update(val_acc_best=metrics["val_acc"], test_acc_at_val_best=metrics["test_acc"])
    return best


def config_changes(old: TrainConfig, new: TrainConfig) -> dict[str, str]:
    """``field: "field old -> new"`` for each field that differs."""
    a, b = old.to_dict(), new.to_dict()
    return {name: f"{name} {a[name]!r} -> {b[name]!r}" for name in a if a[name] != b[name]}


# What a saved state may resume under other values of: where and how fast it trains, but on the same kind of
# device, whose generators' states it holds.
RESUMES_UNDER_OTHER = tuple(f for f in RUN_FIELDS if f != "device")


def restore(pack: Pack, state: dict[str, Any]) -> tuple[int, list[Metrics], list[Metrics], dict[int, str]]:
    """Load a state saved by ``train_pack`` into a freshly set-up pack of the same configs, but for
    ``RESUMES_UNDER_OTHER``: a run saved before a default of those changed, or on another machine, goes on."""
    saved = [TrainConfig.from_dict(c) for c in state["configs"]]
    if len(saved) != pack.size:
        raise ConfigError("resume", f"the saved state holds {len(saved)} member(s), the pack {pack.size}; "
                                    f"allowed: a state of the same {pack.size} member(s)")
    for m, (old, new) in enumerate(zip(saved, pack.cfgs)):
        changes = config_changes(old, new)
        other = [change for name, change in changes.items() if name not in RESUMES_UNDER_OTHER]
        if other:
            raise ConfigError("resume", f"the saved state's member {m} trained another config ({'; '.join(other)}); "
                                        f"of its fields only {list(RESUMES_UNDER_OTHER)} may differ")
        if changes and m == 0:  # these fields are the pack's, shared by its members
            log.warning("resume: going on with %s", "; ".join(changes.values()))
    pack.net.load_state_dict(state["net"])
    pack.optimizer.load_state_dict(state["optimizer"])
    for generator, generator_state in zip(pack.generators, state["generators"]):
        generator.set_state(generator_state)
    failures = dict(state["failures"])
    for m in failures:
        pack.alive[m] = False
    return state["epoch"], [dict(b) for b in state["best"]], [dict(m) for m in state["metrics"]], failures


def train(config: TrainConfig | dict[str, Any], report: Callable[[Metrics], None] | None = None, *,
          resume: dict[str, Any] | None = None, save_state: Callable[[dict[str, Any]], None] | None = None
          ) -> Metrics:
    """Train one model with ``config`` (a pack of one) and return the metrics of the last evaluation.

    ``report(metrics)`` is called after every evaluation; ``save_state`` and ``resume`` as in
    ``train_pack``. A loss that turns NaN or infinite raises ``DivergenceError``.
    """
    result = train_pack([config], None if report is None else lambda metrics, failures: report(metrics[0]),
                        resume=resume, save_state=save_state)
    if result.failures:
        raise DivergenceError(result.failures[0])
    return result.metrics[0]


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
            convert = (_number_or_name if kind.startswith("str |") else int if kind.startswith("int")
                       else float if "float" in kind else str)
            parser.add_argument(flag, dest=f.name, type=convert, default=None)
    return parser


def _number_or_name(text: str) -> int | float | str:
    """A flag of a field that takes a name or a number (``--val-split none``, ``100`` or ``0.1``)."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


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
