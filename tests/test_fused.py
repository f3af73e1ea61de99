"""Fused packs: members trained together equal the same configs trained alone, the pack refuses
configs that cannot share its shapes, and a diverging member leaves the others untouched."""

import itertools
import logging
import math

import pytest
import torch

from conftest import tiny_config
from core.config import ConfigError, TrainConfig
from core.fused import FusedNetwork, GroupedConv2d
from core.models import create_model
from core.train import (batch_bounds, draw_epoch, epoch_weights, make_batch, set_learning_rate, set_up,
                        train, train_pack, train_step)

# A pack of each fusable family the issue names; batch 16 gives ~30 steps per digits epoch.
PACKS = {
    "mamix_drw seeds x omegas": [dict(method="mamix_drw", seed=s, omega=w) for s, w in [(0, 0.25), (1, 0.25),
                                                                                      (0, 2.0), (2, 8.0)]],
    "remix_drw": [dict(method="remix_drw", seed=s, tau=t, kappa=k) for s, t, k in [(0, 0.5, 3.0), (1, 0.7, 1.5)]],
    "ldam_drw": [dict(method="ldam_drw", seed=s, max_m=m) for s, m in [(0, 0.5), (1, 0.3)]],
    "erm and drw": [dict(method="erm", seed=0), dict(method="drw", seed=1), dict(method="cb", seed=2)],
    "neighbor_mix_drw": [dict(method="neighbor_mix_drw", seed=s, alpha=a) for s, a in [(0, 1.0), (3, 0.5)]],
}


def member_configs(members, **shared):
    return [TrainConfig.from_dict(tiny_config(**{"batch_size": 16, "drw_epoch": 0, **shared, **m})) for m in members]


def set_lr(pack, epoch):
    set_learning_rate(pack, epoch)


def steps_of(pack, count):
    """(draws, weights, step, start, end) of the pack's first ``count`` steps, epochs drawn as they come."""
    epoch = 0
    while True:
        set_lr(pack, epoch)
        draws, weights = draw_epoch(pack), epoch_weights(pack, epoch)
        for step, (start, end) in enumerate(batch_bounds(pack.index.shape[1], pack.cfg.batch_size)):
            yield draws, weights, step, start, end
            count -= 1
            if count == 0:
                return
        epoch += 1


def train_steps(cfgs, count):
    """Member states before and after ``count`` SGD steps of the pack (re-weighting from step 0)."""
    pack = set_up(cfgs)
    before = [pack.net.member_state(m) for m in range(pack.size)]
    for draws, weights, step, start, end in steps_of(pack, count):
        train_step(pack, make_batch(pack, draws, step, start, end), weights)
    return before, [pack.net.member_state(m) for m in range(pack.size)]


def relative_error(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12)).item()


def worst_relative_error(state, expected):
    """The largest relative error over a member's floating-point tensors (BatchNorm's counter left out)."""
    return max(relative_error(v, expected[k]) for k, v in state.items() if v.is_floating_point())


@pytest.mark.parametrize("name", sorted(PACKS))
def test_per_member_packs_equal_their_solo_runs_bit_for_bit_after_20_steps(name):
    """The per-member executor runs each member's layers as a solo run does: nothing may differ."""
    cfgs = member_configs(PACKS[name], fuse_executor="per_member")
    fused_before, fused_after = train_steps(cfgs, 20)
    for m, cfg in enumerate(cfgs):
        solo_before, solo_after = train_steps([cfg], 20)
        for key, value in solo_before[0].items():
            assert torch.equal(fused_before[m][key], value), f"member {m} starts from other weights: {key}"
            assert torch.equal(fused_after[m][key], solo_after[0][key]), f"member {m} ends elsewhere: {key}"
        moved = max(relative_error(v, solo_before[0][k]) for k, v in solo_after[0].items() if v.is_floating_point())
        assert moved > 1e-3, "the steps must have changed the weights, or the comparison proves nothing"


def copy_member(pack, m, solo):
    """Put member m's weights, BatchNorm statistics and momentum into the one-member pack ``solo``."""
    with torch.no_grad():
        for name, t in solo.net.member_tensors(0).items():
            t.copy_(pack.net.member_tensors(m)[name])
        for p_solo, p_pack in zip(solo.net.parameters(), pack.net.parameters()):
            if "momentum_buffer" in pack.optimizer.state.get(p_pack, {}):
                solo.optimizer.state[p_solo]["momentum_buffer"] = p_pack.grad.new_zeros(p_solo.shape)
                solo.optimizer.state[p_solo]["momentum_buffer"][0] = pack.optimizer.state[p_pack]["momentum_buffer"][m]


@pytest.mark.parametrize("name", sorted(PACKS))
def test_every_grouped_step_of_a_member_is_its_solo_step(name):
    """The grouped executor's kernels round differently from a solo run's, so over many steps a ReLU
    input within rounding of 0 can flip and two runs drift apart (seen once in 20 steps here). What
    fusing must preserve is each step: from the same state, on the same batch, a member's grouped step
    lands where its solo step lands, for 20 consecutive steps."""
    cfgs = member_configs(PACKS[name], fuse_executor="grouped")
    pack = set_up(cfgs)
    solos = [set_up([cfg]) for cfg in cfgs]
    for m, solo in enumerate(solos):
        assert all(torch.equal(v, solo.net.member_state(0)[k]) for k, v in pack.net.member_state(m).items())
    solo_steps = [steps_of(solo, 20) for solo in solos]
    for draws, weights, step, start, end in steps_of(pack, 20):
        for m, solo in enumerate(solos):
            copy_member(pack, m, solo)
            solo_draws, solo_weights, *_ = next(solo_steps[m])
            train_step(solo, make_batch(solo, solo_draws, step, start, end), solo_weights)
        train_step(pack, make_batch(pack, draws, step, start, end), weights)
        for m, solo in enumerate(solos):
            worst = worst_relative_error(pack.net.member_state(m), solo.net.member_state(0))
            assert worst <= 1e-5, f"step {step}, member {m}: relative parameter error {worst:.2e}"


@pytest.mark.parametrize("executor", ["grouped", "per_member"])
def test_channels_last_takes_the_contiguous_steps_but_for_rounding(executor):
    """channels_last (on by default on CUDA) lays the convolution weights and inputs out for cuDNN's
    fastest kernels and must change nothing else: from the same weights, a member's steps land where the
    contiguous layout's land (their kernels round differently, so within 1e-5, step by step)."""
    packs = {}
    for channels_last in (False, True):
        cfgs = member_configs(PACKS["mamix_drw seeds x omegas"], fuse_executor=executor, channels_last=channels_last)
        packs[channels_last] = set_up(cfgs)
    weights = [m.weight for m in packs[True].net.grouped.modules() if isinstance(m, GroupedConv2d)]
    assert weights and all(w.flatten(0, 1).is_contiguous(memory_format=torch.channels_last) for w in weights)
    steps = {layout: steps_of(pack, 5) for layout, pack in packs.items()}
    for _ in range(5):
        for layout, pack in packs.items():
            draws, epoch_weight, step, start, end = next(steps[layout])
            train_step(pack, make_batch(pack, draws, step, start, end), epoch_weight)
        for m in range(packs[True].size):
            worst = worst_relative_error(packs[True].net.member_state(m), packs[False].net.member_state(m))
            assert worst <= 1e-5, f"step {step}, member {m}: relative parameter error {worst:.2e}"


@pytest.mark.parametrize("name", ["mamix_drw seeds x omegas", "ldam_drw"])
def test_pack_members_report_what_their_solo_runs_report_after_two_epochs(name):
    cfgs = member_configs(PACKS[name], drw_epoch=1, batch_size=64, fuse_executor="per_member")
    result = train_pack(cfgs)
    assert result.failures == {}
    for m, cfg in enumerate(cfgs):
        assert result.metrics[m] == train(cfg)


def test_members_of_one_pack_differ_where_their_configs_differ():
    result = train_pack(member_configs(PACKS["mamix_drw seeds x omegas"], batch_size=64))
    losses = [m["train_loss"] for m in result.metrics]
    assert len(set(losses)) == len(losses)


# ----------------------------------------------------------------------------- what may share a pack

@pytest.mark.parametrize("field,value", [("batch_size", 32), ("lr", 0.01), ("epochs", 3), ("ratio", 20.0),
                                         ("subset_seed", 1), ("model", "resnet32"), ("milestones", [2])])
def test_a_config_that_cannot_join_the_pack_is_refused_naming_the_field(field, value):
    cfgs = [TrainConfig.from_dict(tiny_config()), TrainConfig.from_dict(tiny_config(**{field: value}))]
    with pytest.raises(ConfigError, match=rf"^{field}: member 1 has {field} = "):
        set_up(cfgs)


@pytest.mark.parametrize("other", ["mixup_drw", "ldam", "smote", "smote_mix"])
def test_methods_of_another_pairing_loss_or_sampling_are_refused(other):
    cfgs = [TrainConfig.from_dict(tiny_config(method="erm")), TrainConfig.from_dict(tiny_config(method=other))]
    with pytest.raises(ConfigError, match=r"^method: member 1 has method's "):
        set_up(cfgs)


def test_methods_of_one_family_share_a_pack():
    result = train_pack(member_configs([dict(method="mixup_drw"), dict(method="remix"), dict(method="mamix_remix_drw")],
                                       batch_size=64))
    assert result.failures == {} and all(math.isfinite(m["test_acc"]) for m in result.metrics)


# ----------------------------------------------------------------------------- failure isolation

def test_a_diverging_member_is_frozen_and_the_others_finish_as_alone(monkeypatch):
    """Member 1's weights are poisoned with NaN after the first epoch's report: it fails with the
    reason, and members 0 and 2 end exactly where their solo runs end."""
    cfgs = member_configs([dict(seed=0), dict(seed=1), dict(seed=2)], method="mixup_drw", epochs=3, milestones=[2],
                          batch_size=64)
    reports = []

    def poison(metrics, failures):
        reports.append(dict(failures))
        if len(reports) == 1:
            with torch.no_grad():
                for p in net_holder["net"].parameters():
                    p[1].fill_(float("nan"))

    import core.train as engine

    net_holder = {}
    original = engine.FusedNetwork

    def capture(*args, **kwargs):
        net = original(*args, **kwargs)
        net_holder["net"] = net
        return net

    monkeypatch.setattr(engine, "FusedNetwork", capture)
    result = train_pack(cfgs, poison)
    assert set(result.failures) == {1} and "train_loss is nan at epoch 2" in result.failures[1]
    assert reports[1] == {1: result.failures[1]}
    monkeypatch.setattr(engine, "FusedNetwork", original)
    for m in (0, 2):
        alone = train(cfgs[m])
        assert result.metrics[m]["test_acc"] == pytest.approx(alone["test_acc"], abs=1 / 500)
        assert result.metrics[m]["train_loss"] == pytest.approx(alone["train_loss"], rel=1e-4)
    assert result.metrics[1]["epoch"] == 1  # its last evaluation before it failed


def test_a_pack_resumes_every_member_from_a_saved_state():
    cfgs = member_configs([dict(seed=0, omega=0.5), dict(seed=1, omega=4.0)], method="mamix_drw", epochs=3,
                          milestones=[2], batch_size=64)
    states = []
    full = train_pack(cfgs, save_state=states.append)
    resumed = train_pack(cfgs, resume=states[0])
    assert resumed.metrics == full.metrics


def test_a_saved_state_resumes_under_other_run_fields_but_not_another_config(caplog):
    """A state saved before a default of where or how fast a run trains changed (``compile`` was
    ``False`` before CUDA graphs became CUDA's default) goes on to the same numbers; one of another
    setting is refused, naming the field."""
    cfgs = member_configs([dict(seed=0, omega=0.5), dict(seed=1, omega=4.0)], method="mamix_drw", epochs=2,
                          milestones=[], batch_size=64)
    states = []
    full = train_pack(cfgs, save_state=states.append)
    before = [{**c, "compile": False, "compile_mode": "default"} for c in states[0]["configs"]]
    earlier = {**states[0], "configs": before}
    with caplog.at_level(logging.WARNING, logger="core.train"):
        assert train_pack(cfgs, resume=earlier).metrics == full.metrics
    assert "compile False -> None" in caplog.text
    other = {**states[0], "configs": [{**c, "alpha": c["alpha"] + 1} for c in states[0]["configs"]]}
    with pytest.raises(ConfigError, match=rf"^resume: the saved state's member 0 trained another config "
                                          rf"\(alpha {cfgs[0].alpha + 1} -> {cfgs[0].alpha}\)"):
        train_pack(cfgs, resume=other)


# ----------------------------------------------------------------------------- the fused network

@pytest.mark.parametrize("model,channels,size", [("small_cnn", 1, 8), ("resnet32", 3, 16), ("resnet18", 3, 8)])
@pytest.mark.parametrize("head", [dict(cosine_head=True), {}, dict(head_bias=True)], ids=["cosine", "linear", "biased"])
def test_fused_network_computes_each_members_own_function(model, channels, size, head):
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(create_model(model, 10, channels, **head).eval())
    x = torch.randn(3, 4, channels, size, size)
    expected = torch.stack([m(x[k]) for k, m in enumerate(members)])
    for executor, channels_last in itertools.product(("grouped", "per_member"), (False, True)):
        net = FusedNetwork(members, executor, channels_last).eval()
        torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(net.forward_shared(x[0]), torch.stack([m(x[0]) for m in members]),
                                   rtol=1e-4, atol=1e-4)
        for k, m in enumerate(members):
            assert all(torch.equal(v, m.state_dict()[n]) for n, v in net.member_state(k).items())


def test_a_layer_without_a_fuser_is_refused_by_name():
    members = [torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.GELU()) for _ in range(2)]
    with pytest.raises(ValueError, match="^model: cannot fuse layers of type GELU"):
        FusedNetwork(members)
