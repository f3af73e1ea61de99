"""TrainConfig: the paper's per-dataset defaults, conversion, and one clear error per bad value."""

import dataclasses
import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import DATASET_DEFAULTS, ConfigError, TrainConfig
from core.m2m import TRANSLATORS
from core.methods import METHODS, Method
from core.mixing import LABEL_RULES
from core.models import MODELS
from core.stages import STAGES

FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}

# Appendix A of the paper (and ../shared/notes/reference-facts.md), shared by every dataset; DeepSMOTE's
# autoencoder epochs are its official code's (../shared/notes/m2m-deepsmote.md).
COMMON = dict(batch_size=128, lr=0.1, warmup_epochs=5, weight_decay=2e-4, momentum=0.9, cb_beta=0.9999,
              alpha=1.0, omega=0.25, tau=0.5, kappa=3.0, max_m=0.5, s=30.0, ratio=100.0, mu=0.5, smote_k=5,
              deepsmote_epochs=200)


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


@pytest.mark.parametrize("epochs, milestones, drw_epoch, warmup_epochs", [
    (180, (160, 180), 160, 5), (160, (160,), 160, 5), (100, (), 100, 5), (3, (), 3, 3)])
def test_a_shorter_run_keeps_the_default_schedule_inside_it(epochs, milestones, drw_epoch, warmup_epochs):
    cfg = TrainConfig(dataset="cifar10", epochs=epochs)
    assert (cfg.milestones, cfg.drw_epoch, cfg.warmup_epochs) == (milestones, drw_epoch, warmup_epochs)


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
    ("m2m_generator_selection", "best", ["m2m_generator_selection", "final", "validation"]),
    ("m2m_generator_selection", "validation", ["m2m_generator_selection", "val_split"]),  # none to select on
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


def _stated_range(name):
    """The range that ``name``'s error states, as (kind, lo, lo_closed, hi, hi_closed), or None where the
    message states no numeric range (names, switches, paths)."""
    with pytest.raises(ConfigError) as err:
        TrainConfig(dataset="digits", **{name: "junk"})
    allowed = str(err.value).split("allowed: ", 1)[1]
    one_sided = re.match(r"(a number|an integer) (>=|>) (\S+)", allowed)
    if one_sided:
        return one_sided[1], float(one_sided[3]), one_sided[2] == ">=", math.inf, False
    interval = re.match(r"(a number|an integer|increasing integers) in ([\[(])([^,]+), (?:\w+=)?([^\])]+)([\])])",
                        allowed)
    if interval:
        return interval[1], float(interval[3]), interval[2] == "[", float(interval[4]), interval[5] == "]"
    return None


RANGED = [name for name in sorted(FIELDS - {"dataset"}) if _stated_range(name)]


def _names_field(name, value):
    """Whether TrainConfig rejects ``value`` for ``name`` (an error about another field, such as epochs=1
    against the default milestones, leaves ``name`` accepted)."""
    try:
        TrainConfig(dataset="digits", **{name: value})
    except ConfigError as err:
        return err.field == name
    return False


@pytest.mark.parametrize("name", RANGED)
def test_every_stated_range_is_the_range_enforced(name):
    kind, lo, lo_closed, hi, hi_closed = _stated_range(name)
    step = 1e-9 if kind == "a number" else 1
    as_kind = {"a number": float, "an integer": int, "increasing integers": lambda v: [int(v)]}[kind]
    assert _names_field(name, as_kind(lo)) is not lo_closed, (name, lo)
    assert _names_field(name, as_kind(lo - step)), (name, lo - step)
    if math.isinf(hi):
        inside = lo + step
    else:
        inside = (lo + hi) / 2 if kind == "a number" else int(lo) + 1
    assert not _names_field(name, as_kind(inside)), (name, inside)
    if not math.isinf(hi):
        assert _names_field(name, as_kind(hi)) is not hi_closed, (name, hi)
        assert _names_field(name, as_kind(hi + step)), (name, hi + step)
    assert _names_field(name, True) and _names_field(name, float("nan"))
    if kind != "a number":
        assert _names_field(name, float(inside)) and _names_field(name, [float(inside)]), (name, "a float")


@pytest.mark.parametrize("name", sorted(FIELDS - {"dataset"}))
def test_every_field_names_itself_and_what_it_allows_when_given_junk(name):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**{name: "junk"})
    assert err.value.field == name
    allowed = str(err.value).removeprefix(f"{name}: got 'junk'; allowed: ")
    assert allowed != str(err.value) and allowed not in ("", "None"), str(err.value)
    if allowed.startswith(("a number", "an integer", "increasing integers")):
        assert name in RANGED, f"{name}'s range is stated in a form the range test does not read: {allowed}"


@pytest.mark.parametrize("name", ["m2m_generator", "deepsmote_autoencoder"])
def test_a_stage_checkpoint_must_be_an_existing_absolute_path(name, tmp_path):
    with pytest.raises(ConfigError, match=f"^{name}: .*absolute path"):
        TrainConfig(**{name: "g.pt"})
    with pytest.raises(ConfigError, match=f"^{name}: .*an existing file"):
        TrainConfig(**{name: str(tmp_path / "g.pt")})
    (tmp_path / "g.pt").write_bytes(b"")
    assert getattr(TrainConfig(**{name: str(tmp_path / "g.pt")}), name) == str(tmp_path / "g.pt")


@pytest.mark.parametrize("value, ok", [("none", True), (1, True), (50, True), (0.5, True), (0, False), (0.0, False),
                                       (1.0, False), (1.5, False), (True, False), ("all", False)])
def test_val_split_is_none_a_count_or_a_fraction(value, ok):
    if ok:
        assert TrainConfig(val_split=value).val_split == value
    else:
        with pytest.raises(ConfigError, match="^val_split: .*'none', a per-class count"):
            TrainConfig(val_split=value)


@pytest.mark.parametrize("value, ok", [("cuda:0", True), ("cuda:12", True), ("cuda:", False), ("cuda:x", False),
                                       ("CUDA:0", False), (" cuda:0", False)])
def test_a_device_may_name_a_cuda_index(value, ok):
    if ok:
        assert TrainConfig(device=value).device == value  # validation only: no GPU is asked for here
    else:
        with pytest.raises(ConfigError, match="^device: "):
            TrainConfig(device=value)


def test_clean_forward_is_refused_for_a_method_that_does_not_mix():
    assert TrainConfig(method="mixup_drw", clean_forward=True).clean_forward
    with pytest.raises(ConfigError, match="^clean_forward: .*'drw', which does not mix inputs"):
        TrainConfig(method="drw", clean_forward=True)


def test_a_bad_many_shot_is_named_as_many_shot():
    with pytest.raises(ConfigError) as err:
        TrainConfig(many_shot="100")
    assert err.value.field == "many_shot" and "an integer >= 0" in str(err.value)
    with pytest.raises(ConfigError) as err:
        TrainConfig(many_shot=10, few_shot=20)
    assert err.value.field == "few_shot" and "[0, many_shot=10]" in str(err.value)


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


@pytest.mark.parametrize("field", ["pairing", "loss", "weighting", "reduction", "sampler", "translation",
                                   "synthesis"])
def test_a_method_with_an_unknown_ingredient_is_refused_naming_it(field):
    with pytest.raises(ValueError, match=rf"^{field}: got 'any_nnn'; allowed: \['"):
        Method(**{field: "any_nnn"})


def test_every_methods_label_rule_translation_and_stages_have_code_that_runs_them():
    for name, method in METHODS.items():
        assert method.label_rule in LABEL_RULES, name
        assert method.translation == "none" or method.translation in TRANSLATORS, name
        assert set(method.stages) <= set(STAGES), name


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
