"""TrainConfig: the paper's per-dataset defaults, conversion, and one clear error per bad value."""

import dataclasses
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import DATASET_DEFAULTS, ConfigError, TrainConfig
from core.methods import METHODS
from core.models import MODELS

FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}

# Appendix A of the paper (and ../shared/notes/reference-facts.md), shared by every dataset.
COMMON = dict(batch_size=128, lr=0.1, warmup_epochs=5, weight_decay=2e-4, momentum=0.9, cb_beta=0.9999,
              alpha=1.0, omega=0.25, tau=0.5, kappa=3.0, max_m=0.5, s=30.0, ratio=100.0, mu=0.5, smote_k=5)


@pytest.mark.parametrize("dataset, expected", [
    ("cifar10", dict(model="resnet32", epochs=200, milestones=(160, 180), lr_factor=0.01, drw_epoch=160)),
    ("cifar100", dict(model="resnet32", epochs=200, milestones=(160, 180), lr_factor=0.01, drw_epoch=160)),
    ("svhn", dict(model="resnet32", epochs=200, milestones=(160, 180), lr_factor=0.1, drw_epoch=160)),
    ("cinic10", dict(model="resnet18", epochs=200, milestones=(160, 180), drw_epoch=160)),
    ("tiny_imagenet", dict(model="resnet18", epochs=120, milestones=(90,), lr_factor=0.1, drw_epoch=90)),
])
def test_defaults_follow_the_paper(dataset, expected):
    cfg = TrainConfig(dataset=dataset)
    for name, value in {**COMMON, **expected}.items():
        assert getattr(cfg, name) == value, name
    assert cfg.method == "erm" and cfg.imbalance == "long_tailed"


def test_digits_default_is_a_small_schedule_with_the_same_shape():
    cfg = TrainConfig()
    assert cfg.dataset == "digits" and cfg.model == "small_cnn"
    assert cfg.warmup_epochs < cfg.drw_epoch == cfg.milestones[0] < cfg.milestones[-1] < cfg.epochs


def test_explicit_values_override_the_dataset_defaults():
    cfg = TrainConfig(dataset="cifar10", epochs=10, milestones=[6, 8], drw_epoch=6, model="resnet18", lr=0.05)
    assert (cfg.epochs, cfg.milestones, cfg.drw_epoch, cfg.model, cfg.lr) == (10, (6, 8), 6, "resnet18", 0.05)
    assert cfg.lr_factor == 0.01  # not overridden: still the dataset's


def test_a_single_integer_milestone_becomes_a_tuple():
    assert TrainConfig(epochs=10, milestones=7, drw_epoch=7).milestones == (7,)


@pytest.mark.parametrize("dataset", sorted(DATASET_DEFAULTS))
def test_to_dict_from_dict_round_trip(dataset, tmp_path):
    cfg = TrainConfig(dataset=dataset, method="mamix_drw", omega=0.5, seed=3, data_root=str(tmp_path))
    d = cfg.to_dict()
    assert set(d) == FIELDS
    assert isinstance(d["milestones"], list)  # JSON-friendly
    again = TrainConfig.from_dict(d)
    assert again == cfg
    assert again.to_dict() == d


def test_replace_changes_one_field_and_validates():
    cfg = TrainConfig(dataset="cifar10")
    assert cfg.replace(lr=0.2).lr == 0.2 and cfg.replace(lr=0.2).epochs == 200
    with pytest.raises(ConfigError) as err:
        cfg.replace(tau=2.0)
    assert err.value.field == "tau"


# field, bad value, words the message must contain (the field and what is allowed)
BAD = [
    ("method", "mixup_remix", ["method", "mixup_remix", "mamix_drw", "erm"]),
    ("dataset", "mnist", ["dataset", "mnist", "cifar10", "digits"]),
    ("model", "resnet50", ["model", "resnet50", "resnet32", "small_cnn"]),
    ("ratio", 0.5, ["ratio", ">= 1"]),
    ("omega", 0.0, ["omega", "> 0"]),
    ("omega", -0.25, ["omega", "> 0"]),
    ("tau", 1.5, ["tau", "[0, 1]"]),
    ("tau", -0.1, ["tau", "[0, 1]"]),
    ("drw_epoch", 31, ["drw_epoch", "epochs=30"]),
    ("batch_size", 1, ["batch_size", ">= 2"]),
    ("epochs", True, ["epochs", "integer"]),
    ("batch_size", True, ["batch_size", "integer"]),
    ("smote_k", 2.0, ["smote_k", "integer"]),
    ("lr", float("nan"), ["lr", "> 0"]),
    ("lr", float("inf"), ["lr", "> 0"]),
    ("lr", "0.1", ["lr", "number"]),
    ("imbalance", "exp", ["imbalance", "long_tailed", "step"]),
    ("device", "tpu", ["device", "cuda"]),
    ("milestones", [27, 24], ["milestones", "increasing"]),
    ("kappa", 0.5, ["kappa", ">= 1"]),
    ("data_root", "relative/dir", ["data_root", "absolute"]),
]


@pytest.mark.parametrize("name, value, words", BAD, ids=[f"{n}={v!r}" for n, v, _ in BAD])
def test_every_bad_value_names_its_field_and_the_allowed_values(name, value, words):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**{name: value})
    assert err.value.field == name
    assert isinstance(err.value, ValueError)
    message = str(err.value)
    assert message.startswith(f"{name}:")
    for word in words:
        assert word in message, (word, message)


def test_a_data_root_that_does_not_exist_is_rejected(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="existing directory") as err:
        TrainConfig(data_root=missing)
    assert err.value.field == "data_root"
    assert TrainConfig(data_root=str(tmp_path)).data_root == str(tmp_path)


def test_drw_epoch_is_checked_against_the_dataset_epochs():
    TrainConfig(dataset="cifar10", drw_epoch=200)  # the last boundary is allowed
    with pytest.raises(ConfigError, match="epochs=200") as err:
        TrainConfig(dataset="cifar10", drw_epoch=201)
    assert err.value.field == "drw_epoch"
    with pytest.raises(ConfigError, match="epochs=120") as err:
        TrainConfig(dataset="tiny_imagenet", drw_epoch=160)
    assert err.value.field == "drw_epoch"


def test_from_dict_rejects_an_unknown_field_and_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({"dataset": "digits", "learning_rate": 0.1})
    assert err.value.field == "learning_rate"
    assert "unknown field" in str(err.value) and "'lr'" in str(err.value)


# ----------------------------------------------------------------------------- property test

_junk = st.one_of(st.none(), st.booleans(), st.text(max_size=6), st.lists(st.integers(0, 40), max_size=3),
                  st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                  st.floats(allow_nan=True, allow_infinity=True))


def _mostly(valid, invalid):
    """About six valid values for each invalid one, so that whole dicts are accepted often enough."""
    return st.integers(0, 5).flatmap(lambda i: invalid if i == 0 else valid)


def _names(valid):
    return _mostly(st.sampled_from(valid), st.one_of(st.text(max_size=8), _junk))


def _ints(lo, hi):
    return _mostly(st.integers(lo, hi), st.one_of(st.integers(-5, 1000), _junk))


def _floats(lo, hi):
    return _mostly(st.floats(lo, hi), st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                                                st.integers(-3, 300), _junk))


FIELD_VALUES = {
    "method": _names(sorted(METHODS)),
    "model": _names(sorted(MODELS)),
    "imbalance": _names(["long_tailed", "step", "balanced"]),
    "reduction": _names(["weighted_mean", "batch_mean"]),
    "device": _names(["auto", "cpu", "cuda", "cuda:1"]),
    "epochs": _ints(30, 60),  # digits' default milestones (24, 27) need at least 27
    "batch_size": _ints(2, 256),
    "warmup_epochs": _ints(0, 5),
    "drw_epoch": _ints(0, 30),
    "milestones": st.one_of(st.lists(st.integers(0, 30), max_size=3).map(sorted), _ints(0, 30),
                            st.lists(st.integers(0, 40), max_size=3)),
    "smote_k": _ints(1, 10),
    "seed": _ints(0, 10**6),
    "lr": _floats(1e-4, 1.0),
    "ratio": _floats(1.0, 300.0),
    "mu": _floats(0.01, 0.99),
    "omega": _floats(0.01, 2.0),
    "tau": _floats(0.0, 1.0),
    "kappa": _floats(1.0, 10.0),
    "cb_beta": _floats(0.0, 0.9999),
    "alpha": _floats(0.01, 4.0),
    "momentum": _floats(0.0, 0.99),
}


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({}, optional=FIELD_VALUES))
def test_random_values_are_accepted_and_round_trip_or_rejected_with_a_named_field(values):
    try:
        cfg = TrainConfig.from_dict({"dataset": "digits", **values})
    except ConfigError as err:
        assert err.field in FIELDS, err.field
        assert str(err).startswith(f"{err.field}:")
        return
    # accepted: the values are the given ones, and the config survives a trip through a plain dict
    for name, value in values.items():
        if value is not None and name != "milestones":
            assert getattr(cfg, name) == value, name
    for name in ("lr", "ratio", "omega", "tau", "alpha"):
        assert math.isfinite(getattr(cfg, name)), name
    d = cfg.to_dict()
    again = TrainConfig.from_dict(d)
    again.validate()
    assert again == cfg and again.to_dict() == d
