"""One validated dataclass naming every knob of a training run.

Fields left as ``None`` take the paper's value for the chosen dataset (appendix A, and
../shared/notes/reference-facts.md), so ``TrainConfig(dataset="cifar10")`` is the paper's CIFAR-10
setting and ``TrainConfig()`` is the small setting of the embedded ``digits`` dataset.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Any, Sequence

from core.imbalance import KINDS as IMBALANCE_KINDS


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the allowed values."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        super().__init__(f"{field_name}: {message}")


# Per-dataset defaults from the paper's appendix A (CIFAR: A.1, CINIC: A.2, SVHN: A.3, Tiny: A.4).
# CIFAR decays the learning rate by 0.01 at each milestone (0.1 -> 1e-3 -> 1e-5), SVHN and Tiny by 0.1.
# The paper's CINIC-10 text puts DRW at epoch 225 of a 200-epoch run; 160 (the first decay, as for
# CIFAR) is used instead and is a plain config field.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "cifar10": dict(model="resnet32", epochs=200, milestones=(160, 180), lr_factor=0.01, drw_epoch=160),
    "cifar100": dict(model="resnet32", epochs=200, milestones=(160, 180), lr_factor=0.01, drw_epoch=160),
    "svhn": dict(model="resnet32", epochs=200, milestones=(160, 180), lr_factor=0.1, drw_epoch=160),
    "cinic10": dict(model="resnet18", epochs=200, milestones=(160, 180), lr_factor=0.01, drw_epoch=160),
    "tiny_imagenet": dict(model="resnet18", epochs=120, milestones=(90,), lr_factor=0.1, drw_epoch=90),
    # The embedded dataset: a scaled-down schedule with the same shape (warm-up, DRW with the first
    # decay, a second decay) that trains in seconds on a laptop CPU.
    "digits": dict(model="small_cnn", epochs=30, milestones=(24, 27), lr_factor=0.1, drw_epoch=24,
                   warmup_epochs=2, batch_size=64, lr=0.05, ratio=10.0, deepsmote_epochs=10),
    "synthetic": dict(model="small_cnn", epochs=4, milestones=(3,), lr_factor=0.1, drw_epoch=3,
                      warmup_epochs=1, batch_size=32, lr=0.05, ratio=10.0, deepsmote_epochs=5),
}

# Shared by every dataset unless its DATASET_DEFAULTS entry says otherwise.
COMMON_DEFAULTS: dict[str, Any] = dict(batch_size=128, lr=0.1, warmup_epochs=5, ratio=100.0, deepsmote_epochs=200)


def dataset_defaults(dataset: str) -> dict[str, Any]:
    return {**COMMON_DEFAULTS, **DATASET_DEFAULTS[dataset]}


def schedule_within(epochs: int, milestones: Sequence[int], drw_epoch: int, warmup_epochs: int) -> dict[str, Any]:
    """A schedule cut to a run of ``epochs``: the milestones it reaches, the DRW switch and the warm-up
    no later than its end (so a short run keeps the default schedule's shape)."""
    return {"milestones": [m for m in milestones if m <= epochs], "drw_epoch": min(drw_epoch, epochs),
            "warmup_epochs": min(warmup_epochs, epochs)}


DEVICES = ("auto", "cpu", "cuda")
FUSE_EXECUTORS = ("auto", "grouped", "per_member")
# Which of g's epochs M2m's g is (core.stages): its last, or its best on the validation set (val_split)
GENERATOR_SELECTIONS = ("final", "validation")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class TrainConfig:
    # data
    dataset: str = "digits"
    data_root: str | None = None  # absolute path; None = the dataset's own default (download or embedded)
    download: bool = False  # allow torchvision downloads into data_root
    imbalance: str = "long_tailed"
    ratio: float | None = None  # rho = n_max / n_min; paper: 100 (and 10, 50, 200, 250, 300)
    mu: float = 0.5  # fraction of minority classes in step imbalance (paper fixes 0.5)
    subset_seed: int = 0  # seed of the imbalanced subset; fixed across trial seeds as in the paper
    # split evaluated on; None: the dataset's own (CINIC-10: "valid", as imbalanced-DL; else "test"/"val")
    eval_split: str | None = None
    # model and method
    model: str | None = None
    # The linear classifier of every method but LDAM (which has its cosine one), as in the authors' code
    # behind the paper's numbers (imbalanced-DL's dot_product_classifier): no bias, and nn.Linear's own
    # initial draw ("pytorch"; "kaiming_normal": drawn as the convolutions). Cao et al.'s LDAM-DRW ResNet-32,
    # this platform's only head until 2026-12-02, has both: head_bias true, head_init kaiming_normal.
    head_bias: bool = False
    head_init: str = "pytorch"
    method: str = "erm"
    # optimisation (appendix A): SGD, momentum 0.9, weight decay 2e-4, batch 128, lr 0.1, 5 warm-up epochs
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 2e-4
    warmup_epochs: int | None = None
    milestones: tuple[int, ...] | None = None  # 0-based epochs at which lr *= lr_factor
    lr_factor: float | None = None
    # re-weighting: class-balanced weights (Cui et al.) used by cb from epoch 0 and by *_drw from drw_epoch
    drw_epoch: int | None = None
    cb_beta: float = 0.9999
    # Weighted loss divided by the batch size ("batch_mean") or by the summed weights ("weighted_mean");
    # None: the authors' choice for the method (core.methods: weighted_mean for LDAM only).
    reduction: str | None = None
    # mixing (paper eq. 4-6, 13-16)
    alpha: float = 1.0  # lam_x ~ Beta(alpha, alpha)
    omega: float = 0.25  # MAMix eta_c = n_c ** -omega
    tau: float = 0.5  # Remix threshold
    kappa: float = 3.0  # Remix P ("P-majority")
    # The reference Mixup-family trainers (imbalanced-DL) forward the clean batch in train mode before the
    # mixed one, each step, to log a training accuracy. That changes no gradient but moves BatchNorm's
    # running statistics, which evaluation uses. Off: the paper's method (reference-facts.md); on: the
    # authors' code, to compare numbers with theirs (bench/bn_statistics.py measures the difference).
    clean_forward: bool = False
    # LDAM (Cao et al.)
    max_m: float = 0.5
    s: float = 30.0
    # SMOTE family: k nearest neighbours in input space (DeepSMOTE: in the autoencoder's code space)
    smote_k: int = 5
    # validation: "none" (the paper: no validation set), or a per-class count (int) or fraction (float) of
    # the balanced test set held out, seeded by val_seed, for model selection and searches
    val_split: str | int | float = "none"
    val_seed: int = 0
    # Stages (core.stages): models trained before a run, once per training set and stage seed, and reused.
    stage_seed: int = 0  # seeds M2m's g (via core.stages.generator_seed) and DeepSMOTE's AE, for every trial seed
    # Epochs between a stage's saved states while it trains: a stage stopped part-way goes on from the last
    # (M2m's g is evaluated there too). Not in a stage's key: it changes no weight.
    stage_checkpoint_every: int = 10
    # M2m (Kim et al. 2020; core.m2m), from drw_epoch on. Defaults: the official CIFAR runs (run.sh).
    m2m_generator: str | None = None  # absolute path of g's checkpoint; None: a sweep finds or trains it
    # "final": g is its last epoch (no validation set needed); "validation": its epoch of best validation
    # accuracy, as the official code selects g (on 100 test images per class, held out: val_split=100)
    m2m_generator_selection: str = "final"
    m2m_beta: float = 0.999  # seed weight 1 - beta ** max(n_seed - n_target, 0)
    m2m_gamma: float = 0.9  # accept when g's softmax of the target class >= gamma
    m2m_lam: float = 0.5  # weight of f's logit of the seed class in the translation loss
    m2m_step_size: float = 0.1  # eta: L2 length of each translation step, in [0, 1] pixel units
    m2m_steps: int = 10  # T translation steps
    m2m_noise: float = 0.5  # epsilon: L2 bound of the random start, per channel over the slots of a batch
    # DeepSMOTE (Dablain et al. 2022; core.deepsmote): its autoencoder, as the official code trains it.
    deepsmote_autoencoder: str | None = None  # absolute path of the checkpoint; None: a sweep finds or trains it
    deepsmote_epochs: int | None = None  # 200 (official); the embedded datasets: fewer
    deepsmote_batch_size: int = 100
    deepsmote_lr: float = 2e-4  # Adam
    deepsmote_latent_dim: int = 600  # n_z of the 32x32x3 port (the MNIST original: 300)
    # evaluation groups (training images per class): many > many_shot, few < few_shot
    many_shot: int = 100
    few_shot: int = 20
    # run
    seed: int = 0
    device: str = "auto"
    eval_every: int = 1
    amp: bool | None = None  # bf16 autocast of training; None = on for CUDA GPUs with bf16, off on the CPU
    channels_last: bool | None = None  # None = on for CUDA
    # torch.compile of the fused step; None = on for CUDA, whose CUDA graphs passed the check against eager
    # through whole runs and trained 2.7x faster (docs/PERFORMANCE.md, H200), off on the CPU
    compile: bool | None = None
    compile_mode: str = "reduce-overhead"  # torch.compile's mode; "reduce-overhead" adds CUDA graphs
    # How a fused pack runs its members' layers (core.fused): auto, grouped or per_member.
    fuse_executor: str = "auto"

    def __post_init__(self) -> None:
        if not _choice(self.dataset, DATASET_DEFAULTS):
            raise ConfigError("dataset", f"unknown dataset {self.dataset!r}; allowed: {sorted(DATASET_DEFAULTS)}")
        defaults = dataset_defaults(self.dataset)
        defaulted = {name for name, value in defaults.items() if getattr(self, name) is None}
        for name in defaulted:
            setattr(self, name, defaults[name])
        # Values set by the user are validated as they are.
        if isinstance(self.epochs, int):
            within = schedule_within(self.epochs, defaults["milestones"], defaults["drw_epoch"],
                                     defaults["warmup_epochs"])
            for name in within.keys() & defaulted:
                setattr(self, name, within[name])
        if isinstance(self.milestones, (list, int)):
            self.milestones = tuple(self.milestones) if isinstance(self.milestones, list) else (self.milestones,)
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        # Imported here: the registries live next to what they register, and they import this module.
        from core.data import DATASETS
        from core.methods import METHODS, REDUCTIONS
        from core.models import HEAD_INITS, MODELS

        def need(ok: bool, name: str, allowed: str) -> None:
            if not ok:
                raise ConfigError(name, f"got {getattr(self, name)!r}; allowed: {allowed}")

        need(_choice(self.method, METHODS), "method", str(sorted(METHODS)))
        need(_choice(self.model, MODELS), "model", str(sorted(MODELS)))
        need(_choice(self.head_init, HEAD_INITS), "head_init", str(list(HEAD_INITS)))
        need(_choice(self.imbalance, IMBALANCE_KINDS), "imbalance", str(list(IMBALANCE_KINDS)))
        if self.reduction is None:
            self.reduction = METHODS[self.method].reduction
        need(_choice(self.reduction, REDUCTIONS), "reduction", str(list(REDUCTIONS)))
        splits = DATASETS[self.dataset].eval_splits
        if self.eval_split is None:
            self.eval_split = splits[0]
        need(_choice(self.eval_split, splits), "eval_split", f"{list(splits)} for {self.dataset}, or null "
                                                            f"(its default, {splits[0]!r})")
        need(_choice(self.device, DEVICES) or (isinstance(self.device, str) and re.fullmatch(r"cuda:\d+", self.device)),
             "device", f"{list(DEVICES)} or 'cuda:N'")
        need(_number(self.ratio) and self.ratio >= 1, "ratio", "a number >= 1")
        need(_number(self.mu) and 0 < self.mu < 1, "mu", "a number in (0, 1)")
        need(_integer(self.epochs) and self.epochs >= 1, "epochs", "an integer >= 1")
        need(_integer(self.batch_size) and self.batch_size >= 2, "batch_size", "an integer >= 2")
        need(_number(self.lr) and self.lr > 0, "lr", "a number > 0")
        need(_number(self.momentum) and 0 <= self.momentum < 1, "momentum", "a number in [0, 1)")
        need(_number(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "a number >= 0")
        need(_integer(self.warmup_epochs) and 0 <= self.warmup_epochs <= self.epochs, "warmup_epochs",
             f"an integer in [0, epochs={self.epochs}]")
        need(isinstance(self.milestones, (tuple, list))
             and all(_integer(m) and 0 <= m <= self.epochs for m in self.milestones)
             and list(self.milestones) == sorted(self.milestones), "milestones",
             f"increasing integers in [0, epochs={self.epochs}]")
        need(_number(self.lr_factor) and 0 < self.lr_factor <= 1, "lr_factor", "a number in (0, 1]")
        need(_integer(self.drw_epoch) and 0 <= self.drw_epoch <= self.epochs, "drw_epoch",
             f"an integer in [0, epochs={self.epochs}]")
        need(_number(self.cb_beta) and 0 <= self.cb_beta < 1, "cb_beta", "a number in [0, 1)")
        need(_number(self.alpha) and self.alpha > 0, "alpha", "a number > 0")
        need(_number(self.omega) and self.omega > 0, "omega", "a number > 0 (the paper's sign convention)")
        need(_number(self.tau) and 0 <= self.tau <= 1, "tau", "a number in [0, 1]")
        need(_number(self.kappa) and self.kappa >= 1, "kappa", "a number >= 1 (Remix's P)")
        need(_number(self.max_m) and self.max_m > 0, "max_m", "a number > 0")
        need(_number(self.s) and self.s > 0, "s", "a number > 0")
        need(_integer(self.smote_k) and self.smote_k >= 1, "smote_k", "an integer >= 1")
        need(_integer(self.stage_seed) and self.stage_seed >= 0, "stage_seed", "an integer >= 0")
        need(_integer(self.stage_checkpoint_every) and self.stage_checkpoint_every >= 1, "stage_checkpoint_every",
             "an integer >= 1")
        need(_choice(self.m2m_generator_selection, GENERATOR_SELECTIONS), "m2m_generator_selection",
             str(list(GENERATOR_SELECTIONS)))
        need(self.m2m_generator_selection == "final" or self.val_split != "none", "m2m_generator_selection",
             "'validation' only with a val_split (the official code: val_split=100), else 'final'")
        need(_number(self.m2m_beta) and 0 <= self.m2m_beta < 1, "m2m_beta", "a number in [0, 1)")
        need(_number(self.m2m_gamma) and 0 <= self.m2m_gamma <= 1, "m2m_gamma", "a number in [0, 1]")
        need(_number(self.m2m_lam) and self.m2m_lam >= 0, "m2m_lam", "a number >= 0")
        need(_number(self.m2m_step_size) and self.m2m_step_size > 0, "m2m_step_size", "a number > 0")
        need(_integer(self.m2m_steps) and self.m2m_steps >= 1, "m2m_steps", "an integer >= 1")
        need(_number(self.m2m_noise) and self.m2m_noise >= 0, "m2m_noise", "a number >= 0")
        need(_integer(self.deepsmote_epochs) and self.deepsmote_epochs >= 1, "deepsmote_epochs", "an integer >= 1")
        need(_integer(self.deepsmote_batch_size) and self.deepsmote_batch_size >= 2, "deepsmote_batch_size",
             "an integer >= 2")
        need(_number(self.deepsmote_lr) and self.deepsmote_lr > 0, "deepsmote_lr", "a number > 0")
        need(_integer(self.deepsmote_latent_dim) and self.deepsmote_latent_dim >= 1, "deepsmote_latent_dim",
             "an integer >= 1")
        for name in ("m2m_generator", "deepsmote_autoencoder"):
            path = getattr(self, name)
            need(path is None or (isinstance(path, str) and os.path.isabs(path)), name,
                 "null or the absolute path of a stage checkpoint (python -m core.stages writes one)")
            need(path is None or os.path.isfile(path), name, "an existing file")
        need(_integer(self.many_shot) and self.many_shot >= 0, "many_shot", "an integer >= 0")
        need(_integer(self.few_shot) and 0 <= self.few_shot <= self.many_shot, "few_shot",
             f"an integer in [0, many_shot={self.many_shot}]")
        need(self.val_split == "none" or (_integer(self.val_split) and self.val_split >= 1)
             or (isinstance(self.val_split, float) and 0 < self.val_split < 1), "val_split",
             "'none', a per-class count (an integer >= 1) or a fraction in (0, 1)")
        need(_integer(self.val_seed) and self.val_seed >= 0, "val_seed", "an integer >= 0")
        need(_integer(self.seed) and self.seed >= 0, "seed", "an integer >= 0")
        need(_integer(self.subset_seed) and self.subset_seed >= 0, "subset_seed", "an integer >= 0")
        need(_integer(self.eval_every) and self.eval_every >= 1, "eval_every", "an integer >= 1")
        for name in ("amp", "channels_last", "compile"):
            need(getattr(self, name) is None or isinstance(getattr(self, name), bool), name,
                 "true, false or null (null: on for CUDA)")
        for name in ("download", "clean_forward", "head_bias"):
            need(isinstance(getattr(self, name), bool), name, "true or false")
        need(not self.clean_forward or METHODS[self.method].mixes, "clean_forward",
             f"false for {self.method!r}, which does not mix inputs (true only for mixing methods)")
        need(_choice(self.compile_mode, COMPILE_MODES), "compile_mode", f"one of {list(COMPILE_MODES)}")
        need(_choice(self.fuse_executor, FUSE_EXECUTORS), "fuse_executor", f"one of {list(FUSE_EXECUTORS)}")
        if self.data_root is not None:
            need(isinstance(self.data_root, str) and os.path.isabs(self.data_root), "data_root",
                 "an absolute path (trials do not run in your working directory)")
            need(os.path.isdir(self.data_root), "data_root", "an existing directory")

    # ------------------------------------------------------------------ conversion
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        unknown = sorted(set(d) - TRAIN_FIELDS)
        if unknown:
            raise ConfigError(unknown[0], f"unknown field; allowed: {sorted(TRAIN_FIELDS)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    def replace(self, **changes: Any) -> "TrainConfig":
        return TrainConfig.from_dict({**self.to_dict(), **changes})


TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))
TRAIN_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
# Fields that change where or how fast a run trains, not what it learns: a stage trains with its run's,
# and a saved state resumes under others (a default changed since, another machine).
RUN_FIELDS = ("data_root", "download", "device", "amp", "channels_last", "fuse_executor", "compile", "compile_mode")
# Fields added with a default that computes otherwise than the code before them did: what a record
# written before a field existed (a sweep's settings, a window's setting, a stage's architecture) meant.
FORMER_DEFAULTS: dict[str, Any] = {"head_bias": True, "head_init": "kaiming_normal"}


def field_assignments(words: Sequence[str]) -> dict[str, Any]:
    """TrainConfig fields from ``FIELD=VALUE`` command-line words (the ``--set`` flag of the sweeps and
    benchmarks), each value read as YAML (``true``, ``0.5``, ``[160, 180]``); the values are validated
    where the config is built."""
    import yaml

    fields = {}
    for word in words:
        name, equals, value = word.partition("=")
        if not equals:
            raise ConfigError("set", f"got {word!r}; allowed: FIELD=VALUE words, e.g. clean_forward=true")
        if name not in TRAIN_FIELDS:
            raise ConfigError("set", f"{name!r} is not a TrainConfig field; allowed: {sorted(TRAIN_FIELDS)}")
        fields[name] = yaml.safe_load(value)
    return fields


def _choice(v: Any, allowed: Any) -> bool:
    """``v`` is one of the allowed names (a non-string, e.g. an unhashable list, is not)."""
    return isinstance(v, str) and v in allowed


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
