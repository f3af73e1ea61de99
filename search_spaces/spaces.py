"""Optuna define-by-run search spaces for the paper's mixing hyperparameters.

Every function here that takes a ``trial`` is *pure*: it only calls ``trial.suggest_*``, branches on
the method to suggest just the parameters that method reads, and returns a dict of constants. That
is the convention of Ray Tune's ``OptunaSearch(space=fn, metric=..., mode=...)``: the trial config
is the suggested values merged with the returned dict (constants win). Anything else (reading data,
training, logging, ``trial.set_user_attr``) belongs in the trainable, so a space can be sampled in
microseconds and tested with a stub trial.

Ranges (unit, paper default in brackets; the defaults also live in ``core.config.TrainConfig``):

============  =====================================  ===========================  ==================
name          meaning                                range (scale)                paper
============  =====================================  ===========================  ==================
alpha         lam_x ~ Beta(alpha, alpha), eq. 4      [0.1, 4] (log)               1
omega         MAMix eta_c = n_c ** -omega, eq. 13    [0.0625, 8] (log)            0.25 (Table 12)
tau           Remix threshold on lam_x, eq. 6        [0, 1] (linear)              0.5
kappa         Remix P, a ratio of class counts       [1, 10] (log)                3
drw_epoch     0-based epoch at which DRW switches    [epochs // 2, epochs - 1]    160 of 200 (90/120)
============  =====================================  ===========================  ==================

The omega range covers Table 12's grid (0.125 ... 8) with one octave below it; log scales are used
where the paper's grid or the parameter's meaning (a ratio, an exponent) is multiplicative.
"""

from __future__ import annotations

import functools

from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from core.methods import get_method

if TYPE_CHECKING:  # only for annotations: a space never needs Optuna itself
    from optuna.trial import BaseTrial

ALPHA_RANGE = (0.1, 4.0)
OMEGA_RANGE = (0.0625, 8.0)
TAU_RANGE = (0.0, 1.0)
KAPPA_RANGE = (1.0, 10.0)

PAPER_ALPHA = 1.0
PAPER_OMEGA = 0.25
PAPER_TAU = 0.5
PAPER_KAPPA = 3.0

Space = Callable[["BaseTrial"], dict[str, Any]]


# ---------------------------------------------------------------- single-parameter spaces
def mixup_alpha_space(trial: BaseTrial) -> dict[str, Any]:
    """Suggest ``alpha`` of lam_x ~ Beta(alpha, alpha) (paper: 1, i.e. lam_x uniform)."""
    trial.suggest_float("alpha", *ALPHA_RANGE, log=True)
    return {}


def mamix_space(trial: BaseTrial) -> dict[str, Any]:
    """Suggest MAMix's ``omega`` (paper: 0.25; Table 12 shows little change over 0.125-8)."""
    trial.suggest_float("omega", *OMEGA_RANGE, log=True)
    return {}


def remix_space(trial: BaseTrial) -> dict[str, Any]:
    """Suggest Remix's threshold ``tau`` (paper: 0.5) and ``kappa``, its P (paper: 3)."""
    trial.suggest_float("tau", *TAU_RANGE)
    trial.suggest_float("kappa", *KAPPA_RANGE, log=True)
    return {}


def drw_epoch_bounds(epochs: int) -> tuple[int, int]:
    """Inclusive bounds of the DRW epoch for a run of ``epochs`` epochs: the second half of training.

    DRW must first learn a representation unweighted (the paper switches at 160 of 200, with the
    first learning-rate decay), and an epoch >= ``epochs`` would silently mean "never re-weight".
    """
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs: got {epochs!r}; allowed: an integer >= 1")
    return epochs // 2, epochs - 1


def drw_epoch_space(trial: BaseTrial, epochs: int) -> dict[str, Any]:
    """Suggest ``drw_epoch`` in ``drw_epoch_bounds(epochs)`` (paper: 160 of 200, 90 of 120)."""
    trial.suggest_int("drw_epoch", *drw_epoch_bounds(epochs))
    return {}


# ---------------------------------------------------------------- per-method spaces
def method_params(method: str) -> tuple[str, ...]:
    """Names of the hyperparameters ``method`` reads, in the order they are suggested."""
    m = get_method(method)
    names: list[str] = []
    if m.mixes:
        names.append("alpha")
        if "mamix" in m.label_rule:
            names.append("omega")
        if "remix" in m.label_rule:
            names += ["tau", "kappa"]
    if m.weighting == "drw":
        names.append("drw_epoch")
    return tuple(names)


def comparable_epoch(method: str, epochs: int, milestones: Sequence[int] = ()) -> int:
    """The first epoch (1-based) at which trials of ``method``'s space can be ranked against each other,
    ASHA's default grace period: one past the first learning-rate decay, since at the full rate test
    accuracy swings by points from one evaluation to the next (a MAMix-DRW cell of Table 12: 41.5 to
    54.4 % over epochs 60 to 160, docs/RESULTS.md), and one past the latest DRW epoch the space can
    suggest, since before it trials minimise different losses. ``epochs`` when no earlier epoch is."""
    first = min(milestones, default=0) + 1  # milestones are 0-based: epoch m + 1 is the first decayed one
    if "drw_epoch" in method_params(method):
        first = max(first, drw_epoch_bounds(epochs)[1] + 1)
    return min(first, epochs)


def _suggest_for(trial: BaseTrial, method: str, epochs: int) -> None:
    """The conditional branch shared by ``method_space`` and ``joint_space``."""
    params = method_params(method)
    if "alpha" in params:
        mixup_alpha_space(trial)
    if "omega" in params:
        mamix_space(trial)
    if "tau" in params:
        remix_space(trial)
    if "drw_epoch" in params:
        drw_epoch_space(trial, epochs)


def method_space(method: str, epochs: int, constants: Mapping[str, Any] | None = None) -> Space:
    """A define-by-run space for one method: only the parameters ``method`` uses are suggested.

    The returned function returns ``{"method": method, **constants}``, so with Ray's OptunaSearch a
    trial config is complete (e.g. ``constants={"dataset": "cifar10", "ratio": 300, "epochs": 200}``).
    Arguments are checked here, once, rather than inside every trial.
    """
    get_method(method)
    drw_epoch_bounds(epochs)
    fixed = {"method": method, **(constants or {})}
    # A partial of module-level functions, not a closure: Ray pickles the searcher with its space.
    return functools.partial(_method_trial, method=method, epochs=epochs, fixed=fixed)


def _method_trial(trial: BaseTrial, *, method: str, epochs: int, fixed: dict[str, Any]) -> dict[str, Any]:
    _suggest_for(trial, method, epochs)
    return dict(fixed)


def joint_space(methods: Sequence[str], epochs: int, constants: Mapping[str, Any] | None = None) -> Space:
    """A define-by-run space that picks ``method`` categorically, then that method's parameters.

    A parameter exists in a trial only if its method reads it (no omega for Remix-DRW), so the
    sampler never learns from values that had no effect. Shared names (alpha, drw_epoch) keep one
    distribution across methods, as Optuna requires.
    """
    methods = list(methods)
    if not methods:
        raise ValueError("methods: got an empty list; allowed: a non-empty list of method names")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods: got duplicates in {methods!r}; allowed: each method once")
    for method in methods:
        get_method(method)
    drw_epoch_bounds(epochs)
    return functools.partial(_joint_trial, methods=methods, epochs=epochs, fixed=dict(constants or {}))


def _joint_trial(trial: BaseTrial, *, methods: list[str], epochs: int, fixed: dict[str, Any]) -> dict[str, Any]:
    method = trial.suggest_categorical("method", methods)
    _suggest_for(trial, method, epochs)
    return dict(fixed)


def paper_params(method: str, epochs: int, drw_epoch: int | None = None) -> dict[str, Any]:
    """The paper's values of exactly the parameters ``method_space(method, epochs)`` suggests.

    Useful as ``OptunaSearch(points_to_evaluate=[...])`` so that a search starts from the paper's
    setting. ``drw_epoch`` defaults to 4/5 of training (160 of 200); pass the dataset's own value
    where it differs (Tiny-ImageNet: 90 of 120, ``core.config.DATASET_DEFAULTS``).
    """
    low, high = drw_epoch_bounds(epochs)
    if drw_epoch is None:
        drw_epoch = min(max(epochs * 4 // 5, low), high)
    paper = dict(alpha=PAPER_ALPHA, omega=PAPER_OMEGA, tau=PAPER_TAU, kappa=PAPER_KAPPA, drw_epoch=drw_epoch)
    return {name: paper[name] for name in method_params(method)}
