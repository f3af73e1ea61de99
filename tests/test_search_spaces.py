"""Search spaces: conditional parameters, valid configs, purity, and the paper's grids.

Expected parameter sets are written out by hand (not derived from ``core.methods``) so that a
change in a method's ingredients that silently changes what is searched fails here.
"""

from __future__ import annotations

import warnings

import optuna
import pytest

from core.config import IMBALANCE_KINDS as CONFIG_IMBALANCE_KINDS
from core.config import TrainConfig
from core.methods import METHODS
from search_spaces import (
    ALPHA_RANGE,
    COMPARISON_METHODS,
    EXTREME_CINIC10_METHODS,
    EXTREME_KINDS_METHODS,
    EXTREME_KINDS_RATIO,
    EXTREME_METHODS,
    EXTREME_RATIO_GRID,
    IMBALANCE_KINDS,
    KAPPA_RANGE,
    MARGIN_METHODS,
    OMEGA_GRID,
    OMEGA_RANGE,
    RATIO_GRID,
    TABLE1_METHODS,
    TABLE6_METHODS,
    TABLE_METHODS,
    TAU_RANGE,
    comparable_epoch,
    drw_epoch_bounds,
    drw_epoch_space,
    joint_space,
    mamix_space,
    method_space,
    mixup_alpha_space,
    paper_params,
    remix_space,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

MIX = {"alpha"}
DRW = {"drw_epoch"}
REMIX = {"tau", "kappa"}
MAMIX = {"omega"}
EXPECTED = {
    "erm": set(), "cb": set(), "ldam": set(), "smote": set(),
    "drw": DRW, "ldam_drw": DRW,
    "mixup": MIX, "mixup_drw": MIX | DRW,
    "remix": MIX | REMIX, "remix_drw": MIX | REMIX | DRW,
    "mamix": MIX | MAMIX, "mamix_drw": MIX | MAMIX | DRW,
    "mamix_remix": MIX | MAMIX | REMIX, "mamix_remix_drw": MIX | MAMIX | REMIX | DRW,
    "smote_mix": MIX, "smote_mix_drw": MIX | DRW,
    "neighbor_mix": MIX, "neighbor_mix_drw": MIX | DRW,
    "m2m": set(), "deepsmote": set(),
}
# (base config, epochs): the embedded datasets and the paper's CIFAR schedule.
BASES = [{"dataset": "digits", "epochs": 30}, {"dataset": "synthetic", "epochs": 4},
         {"dataset": "cifar10", "epochs": 200}]
N_SAMPLES = 30


def _objective(params: dict) -> float:
    """A cheap deterministic score, so TPE leaves its random start-up phase with some signal."""
    return -sum(abs(v - 1.0) for v in params.values() if isinstance(v, (int, float)))


def _assert_in_ranges(params: dict, epochs: int) -> None:
    bounds = {"alpha": ALPHA_RANGE, "omega": OMEGA_RANGE, "tau": TAU_RANGE, "kappa": KAPPA_RANGE,
              "drw_epoch": drw_epoch_bounds(epochs)}
    for name, value in params.items():
        if name in bounds:
            low, high = bounds[name]
            assert low <= value <= high, (name, value, bounds[name])


def test_every_registered_method_has_an_expected_parameter_set():
    assert set(EXPECTED) == set(METHODS)


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_method_space_suggests_only_its_parameters_and_gives_valid_configs(method):
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    for i in range(N_SAMPLES):
        base = BASES[i % len(BASES)]
        space = method_space(method, base["epochs"])
        trial = study.ask()
        constants = space(trial)
        assert set(trial.params) == EXPECTED[method]
        assert constants == {"method": method}
        _assert_in_ranges(trial.params, base["epochs"])
        TrainConfig.from_dict({**base, **trial.params, **constants})
        study.tell(trial, _objective(trial.params))


def test_joint_space_parameters_exist_only_for_their_method():
    methods = sorted(METHODS)
    base = {"dataset": "digits", "epochs": 30}
    space = joint_space(methods, base["epochs"], constants={"dataset": "digits"})
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        constants = space(trial)
        params = dict(trial.params)
        method = params["method"]
        seen.add(method)
        assert set(params) == {"method"} | EXPECTED[method]
        assert constants == {"dataset": "digits"}
        _assert_in_ranges(params, base["epochs"])
        TrainConfig.from_dict({**base, **params, **constants})
        study.tell(trial, _objective({k: v for k, v in params.items() if k != "method"}))
    assert len(seen) >= 8  # the categorical really explores the methods


def test_constants_are_returned_and_not_suggested():
    space = method_space("mamix_drw", 200, constants={"dataset": "cifar10", "ratio": 300, "epochs": 200})
    trial = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0)).ask()
    assert space(trial) == {"method": "mamix_drw", "dataset": "cifar10", "ratio": 300, "epochs": 200}
    assert set(trial.params) == {"alpha", "omega", "drw_epoch"}


# ------------------------------------------------------------------ purity
class StubTrial:
    """Records ``suggest_*`` calls and refuses every other attribute, so a space doing anything
    but suggesting (user attrs, reading params, reporting) fails loudly."""

    def __init__(self, choice=None):
        object.__setattr__(self, "calls", [])
        object.__setattr__(self, "choice", choice)

    def __getattr__(self, name):
        if not name.startswith("suggest_"):
            raise AttributeError(f"a search space touched trial.{name}")

        def suggest(param, *args, **kwargs):
            self.calls.append((name, param, args, kwargs))
            if name == "suggest_categorical":
                return self.choice if self.choice is not None else args[0][0]
            return args[0]  # the lower bound

        return suggest

    def __setattr__(self, name, value):
        raise AttributeError(f"a search space set trial.{name}")

    def suggested(self):
        return {param for _, param, _, _ in self.calls}


@pytest.mark.parametrize("fn, names", [(mixup_alpha_space, {"alpha"}), (mamix_space, {"omega"}),
                                       (remix_space, {"tau", "kappa"})])
def test_single_spaces_only_suggest(fn, names):
    trial = StubTrial()
    assert fn(trial) == {}
    assert trial.suggested() == names


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_method_and_joint_spaces_only_suggest(method):
    trial = StubTrial()
    method_space(method, 200)(trial)
    assert trial.suggested() == EXPECTED[method]
    trial = StubTrial(choice=method)
    joint_space(sorted(METHODS), 200)(trial)
    assert trial.suggested() == {"method"} | EXPECTED[method]
    assert all(call[0].startswith("suggest_") for call in trial.calls)


def test_log_scales_and_documented_ranges():
    trial = StubTrial()
    method_space("mamix_remix_drw", 200)(trial)
    calls = {param: (args, kwargs) for _, param, args, kwargs in trial.calls}
    assert calls["omega"] == ((0.0625, 8.0), {"log": True})
    assert calls["alpha"] == ((0.1, 4.0), {"log": True})
    assert calls["tau"][0] == (0.0, 1.0)
    assert calls["kappa"][0] == (1.0, 10.0)
    assert calls["drw_epoch"][0] == (100, 199)
    assert all(OMEGA_RANGE[0] <= w <= OMEGA_RANGE[1] for w in OMEGA_GRID)


@pytest.mark.parametrize("epochs", [1, 2, 3, 4, 30, 120, 200])
def test_drw_epoch_never_reaches_the_end_of_training(epochs):
    trial = StubTrial()
    drw_epoch_space(trial, epochs)
    (_, name, (low, high), _), = trial.calls
    assert name == "drw_epoch"
    assert 0 <= low <= high <= max(epochs - 1, 0) < epochs


@pytest.mark.parametrize("method,epochs,milestones,first", [
    ("mamix", 200, (160, 180), 161),  # CIFAR: one epoch at the decayed learning rate
    ("remix", 120, (90,), 91),  # Tiny-ImageNet
    ("mixup", 4, (), 1),  # no decay: from the first epoch
    ("mamix_drw", 200, (160, 180), 200),  # the searched DRW epoch reaches 199
    ("ldam_drw", 10, (8,), 10),
    ("mamix", 8, (8,), 8),  # the decay at the last epoch
])
def test_trials_are_comparable_past_the_first_decay_and_the_latest_drw_epoch(method, epochs, milestones, first):
    assert comparable_epoch(method, epochs, milestones) == first


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "200"])
def test_bad_epochs_are_refused(bad):
    with pytest.raises(ValueError, match="epochs"):
        drw_epoch_bounds(bad)
    with pytest.raises(ValueError, match="epochs"):
        method_space("mixup_drw", bad)


def test_bad_methods_are_refused():
    with pytest.raises(ValueError, match="method"):
        method_space("mix_up", 200)
    with pytest.raises(ValueError, match="method"):
        joint_space(["mixup", "mix_up"], 200)
    with pytest.raises(ValueError, match="methods"):
        joint_space([], 200)
    with pytest.raises(ValueError, match="methods"):
        joint_space(["mixup", "mixup"], 200)


# ------------------------------------------------------------------ paper defaults
@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_paper_params_lie_inside_the_space(method):
    point = paper_params(method, 200)
    assert set(point) == EXPECTED[method]
    expected_values = {"alpha": 1.0, "omega": 0.25, "tau": 0.5, "kappa": 3.0, "drw_epoch": 160}
    assert point == {k: expected_values[k] for k in point}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # FixedTrial warns on a value outside a distribution
        trial = optuna.trial.FixedTrial(point)
        method_space(method, 200)(trial)
        assert trial.params == point
    assert paper_params(method, 120, drw_epoch=90).get("drw_epoch", 90) == 90


# ------------------------------------------------------------------ grids
def test_grids_equal_the_papers():
    assert OMEGA_GRID == [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
    assert RATIO_GRID == [100, 50, 10]
    assert EXTREME_RATIO_GRID == [200, 250, 300]
    assert IMBALANCE_KINDS == ["long_tailed", "step"]
    assert TABLE1_METHODS == ["erm", "smote", "drw", "m2m", "deepsmote", "smote_mix_drw", "neighbor_mix_drw",
                              "mixup_drw"]  # the paper's rows, in its order
    assert EXTREME_METHODS == ["mixup_drw", "remix_drw", "mamix_drw", "mamix_remix_drw"]
    assert COMPARISON_METHODS == ["erm", "mixup", "remix", "mamix", "ldam", "drw", "m2m", "deepsmote", "ldam_drw",
                                  "mixup_drw", "remix_drw", "mamix_drw"]
    assert TABLE_METHODS["cinic10"] == ["erm", "drw", "m2m", "ldam_drw", "mixup_drw", "remix_drw", "mamix_drw"]
    assert TABLE_METHODS["tiny_imagenet"] == ["erm", "drw", "m2m", "ldam", "ldam_drw", "mixup_drw", "remix_drw",
                                              "mamix_drw"]
    assert MARGIN_METHODS == ["erm", "drw", "ldam_drw", "mixup_drw", "remix_drw", "mamix_drw"]
    assert EXTREME_CINIC10_METHODS == ["mixup_drw", "remix_drw", "mamix_drw"]  # Table 3
    assert EXTREME_KINDS_METHODS == ["erm", "drw", "ldam_drw", "mixup_drw", "remix_drw", "mamix_drw"]  # Table 4
    assert EXTREME_KINDS_RATIO == 200
    assert TABLE6_METHODS == ["remix_drw", "mamix_drw"]


def test_grid_values_are_accepted_by_the_config():
    for method in set(TABLE1_METHODS + EXTREME_METHODS + COMPARISON_METHODS + MARGIN_METHODS
                      + sum(TABLE_METHODS.values(), [])
                      + EXTREME_CINIC10_METHODS + EXTREME_KINDS_METHODS + TABLE6_METHODS):
        assert method in METHODS
    assert set(IMBALANCE_KINDS) <= set(CONFIG_IMBALANCE_KINDS)
    for ratio in RATIO_GRID + EXTREME_RATIO_GRID:
        for kind in IMBALANCE_KINDS:
            TrainConfig.from_dict({"ratio": ratio, "imbalance": kind, "method": "mamix_drw"})
    for omega in OMEGA_GRID:
        TrainConfig.from_dict({"omega": omega, "method": "mamix_drw"})


# ------------------------------------------------------------------ Ray's define-by-run convention
def test_ray_optuna_search_merges_suggestions_and_constants():
    """Ray wraps the trial and merges captured suggestions with the returned constants; no Ray
    runtime is started for this."""
    ray = pytest.importorskip("ray")
    optuna_search = pytest.importorskip("ray.tune.search.optuna")
    was_running = ray.is_initialized()
    space = method_space("remix_drw", 200, constants={"dataset": "cifar10", "epochs": 200})
    searcher = optuna_search.OptunaSearch(space=space, metric="acc", mode="max",
                                          sampler=optuna.samplers.TPESampler(seed=0))
    config = searcher.suggest("trial_0")
    assert set(config) == {"alpha", "tau", "kappa", "drw_epoch", "method", "dataset", "epochs"}
    TrainConfig.from_dict(config)
    assert ray.is_initialized() == was_running
