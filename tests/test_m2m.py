"""M2m (core.m2m): acceptance by g's confidence, a frozen g, seeds, the sampler, refusal of a wrong g."""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from conftest import tiny_config
from core import m2m, stages
from core.augment import standardise
from core.config import ConfigError, TrainConfig
from core.m2m import M2mParams, choose_seeds, initial_noise, seed_weights, translate
from core.train import draw_epoch, member_images, run_epoch, set_up, train


def m2m_config(paths, **overrides):
    return TrainConfig.from_dict(tiny_config(method="m2m", m2m_generator=paths["m2m_generator"], **overrides))


def test_seed_weights_follow_the_official_formula():
    counts = torch.tensor([100, 10, 10])
    y = torch.tensor([[0, 1, 2]])
    p = seed_weights(y, counts, beta=0.999)  # p[k, target j, seed i]
    assert p[0, 1, 0] == pytest.approx(1 - 0.999 ** 90)
    assert p[0, 0].tolist() == [0, 0, 0]  # nothing is larger than the majority class
    assert p[0, 1, 1] == 0 and p[0, 1, 2] == 0  # equal classes are no seeds


@pytest.mark.parametrize("weights", [[0.0, 1.0, 3.0, 0.0], [0.0, 1.0, 0.0, 3.0, 2.0]], ids=["last zero", "last drawn"])
def test_seeds_are_drawn_in_proportion_to_their_weights(weights):
    w = torch.tensor(weights)
    p = w.expand(1, 20000, len(w))
    u = torch.rand(1, 20000, generator=torch.Generator().manual_seed(0))
    picks = torch.bincount(choose_seeds(p, u).flatten(), minlength=len(w))
    assert (picks[w == 0] == 0).all()
    drawn = w > 0
    assert stats.chisquare(picks[drawn].numpy(), (20000 * w[drawn] / w.sum()).numpy()).pvalue > 1e-3, picks


def test_a_seed_of_weight_zero_is_never_drawn_even_at_the_ends_of_the_uniforms():
    p = torch.tensor([0.0, 1.0, 0.0, 3.0, 2.0, 0.0]).expand(1, 2, 6)
    u = torch.tensor([[0.0, 1 - 2.0 ** -24]])  # the least and the greatest value torch.rand returns
    assert choose_seeds(p, u).tolist() == [[1, 4]]


def test_initial_noise_is_bounded_per_channel_over_the_slots():
    u = torch.rand(2, 6, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    slots = torch.tensor([[True] * 4 + [False] * 2, [True] + [False] * 5])
    delta = initial_noise(u, slots, bound=0.5)
    norms = delta.pow(2).sum(dim=(1, 3, 4)).sqrt()  # (K, C)
    assert (norms <= 0.5 + 1e-6).all() and (norms > 0.49).all()
    assert (delta[0, 4:] == 0).all() and (delta[1, 1:] == 0).all()
    # under the bound, a slot's start is U(-1/2, 1/2) itself
    torch.testing.assert_close(initial_noise(u, slots, bound=100.0)[slots], u[slots] - 0.5)


def linear(w):
    """A net whose logits are the flattened image times ``w``: its input gradient is the same everywhere."""
    return lambda inputs: inputs.flatten(2) @ w


def test_slots_are_the_dropped_samples_of_a_translating_member_with_a_larger_class_in_the_batch():
    counts = torch.tensor([100, 50, 10])
    gen = torch.Generator().manual_seed(0)
    # member 0's batch has no class 0, so its class-1 samples have no larger class to be translated from
    y = torch.stack([torch.randint(1, 3, (64,), generator=gen), torch.randint(0, 3, (64,), generator=gen)])
    x = torch.rand(2, 64, 1, 4, 4, generator=gen)
    uniforms = torch.rand(2, 64, 3, generator=gen)
    net = linear(torch.randn(16, 3, generator=gen))  # f and g
    out = translate(net, net, x, y, counts, uniforms, torch.rand(x.shape, generator=gen), torch.tensor([True, False]),
                    M2mParams(beta=0.9, gamma=0.0, steps=1), torch.zeros(1), torch.ones(1))
    n = counts[y].float()
    dropped = uniforms[..., 0] >= n / counts.max()  # kept with probability n_k / n_max
    has_seed = (n[:, None, :] > n[:, :, None]).any(-1)
    assert torch.equal(out.slots[0], dropped[0] & has_seed[0])
    assert (dropped[0] & ~has_seed[0]).any() and out.slots[0].any()
    assert not out.slots[1].any() and torch.equal(out.x[1], x[1])  # member 1 does not translate
    # the seed draw is the second of each sample's three uniforms (draw_translation)
    seeds = choose_seeds(seed_weights(y, counts, 0.9), uniforms[..., 1])
    assert torch.equal(out.seeds[out.slots], seeds[out.slots])


def class_one_slots(gen):
    """Labels (8 of class 0, then 8 of class 1) and uniforms under which every class-1 sample is a slot,
    and accepted."""
    uniforms = torch.rand(1, 16, 3, generator=gen)
    uniforms[..., 0], uniforms[..., 2] = 0.99, 0.0
    return torch.tensor([[0] * 8 + [1] * 8]), uniforms


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_a_step_moves_each_slot_by_eta_down_gs_loss_for_its_target_or_fs_logit_of_its_seed_class(lam):
    # lam 0: g's cross-entropy for the target alone; lam 1 with a g that ignores the image: f's seed logit alone
    counts = torch.tensor([100, 10])
    gen = torch.Generator().manual_seed(0)
    x = 0.25 + 0.5 * torch.rand(1, 16, 1, 4, 4, generator=gen)  # inside [0, 1] by more than a step
    y, uniforms = class_one_slots(gen)
    w_f, w_g = torch.randn(16, 2, generator=gen), torch.randn(16, 2, generator=gen)
    mean, std = torch.tensor([0.5]), torch.tensor([0.25])
    f, g = linear(w_f), linear(w_g if lam == 0 else torch.zeros_like(w_g))
    params = M2mParams(beta=0.9, gamma=0.0, lam=lam, step_size=0.01, steps=1, noise=0.0)
    out = translate(f, g, x, y, counts, uniforms, torch.zeros_like(x), torch.tensor([True]), params, mean, std)
    assert out.accepted[0].tolist() == [False] * 8 + [True] * 8
    after = out.x[:, 8:]
    before = torch.take_along_dim(x, out.seeds[:, 8:, None, None, None], dim=1)  # each slot's seed image
    torch.testing.assert_close((after - before).flatten(2).norm(dim=-1), torch.full((1, 8), 0.01))
    if lam == 0:
        target = torch.ones(8, dtype=torch.long)
        loss_before, loss_after = (F.cross_entropy(g(standardise(v, mean, std))[0], target, reduction="none")
                                   for v in (before, after))
    else:  # the seeds are of class 0
        loss_before, loss_after = (f(standardise(v, mean, std))[0, :, 0] for v in (before, after))
    assert (loss_after < loss_before).all()


def test_the_start_and_every_step_stay_in_pixel_range_and_confidence_is_gs_softmax_of_the_target():
    # f linear, g blind (zero logits): the loss is f's seed logit, whose gradient is the same everywhere, so
    # the translation is clamp(clamp(seed + delta) - eta * w / |w|), pixel by pixel
    counts = torch.tensor([100, 10])
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 16, 1, 4, 4, generator=gen)
    y, uniforms = class_one_slots(gen)
    noise = torch.rand(x.shape, generator=gen)
    w_f = torch.randn(16, 2, generator=gen)
    mean, std = torch.tensor([0.5]), torch.tensor([0.25])
    f, g = linear(w_f), linear(torch.zeros(16, 2))
    params = M2mParams(beta=0.9, gamma=0.0, lam=1.0, step_size=2.0, steps=1, noise=8.0)
    out = translate(f, g, x, y, counts, uniforms, noise, torch.tensor([True]), params, mean, std)
    seeds = torch.take_along_dim(x, out.seeds[:, :, None, None, None], dim=1)
    start = seeds + initial_noise(noise, out.slots, params.noise)
    assert ((start < 0) | (start > 1))[:, 8:].any()  # the random start leaves [0, 1] ...
    direction = (w_f[:, 0] / std).view(1, 4, 4) / (w_f[:, 0] / std).norm()
    moved = start.clamp(0, 1) - params.step_size * direction
    assert ((moved < 0) | (moved > 1))[:, 8:].any()  # ... and so does a step of 2
    torch.testing.assert_close(out.x[:, 8:], moved.clamp(0, 1)[:, 8:])
    torch.testing.assert_close(out.confidence[out.slots], torch.full((8,), 0.5))  # g's softmax of 2 classes


def test_a_sample_with_a_single_larger_sample_of_weight_below_one_is_still_a_slot():
    counts = torch.tensor([100, 90])  # the seed weight is 1 - 0.9 ** 10 = 0.65
    x = torch.rand(1, 2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    uniforms = torch.tensor([[[0.99, 0.5, 0.0], [0.99, 0.5, 0.0]]])
    net = linear(torch.ones(16, 2))
    out = translate(net, net, x, torch.tensor([[0, 1]]), counts, uniforms, torch.zeros_like(x), torch.tensor([True]),
                    M2mParams(beta=0.9, gamma=0.0, steps=1), torch.zeros(1), torch.ones(1))
    assert out.slots.tolist() == [[False, True]] and out.seeds[0, 1] == 0


def test_a_batch_is_translated_in_pixel_space_in_fp32_with_each_translating_members_own_noise(stage_checkpoints,
                                                                                              monkeypatch):
    # No noise and a step of 1e-6: a translated image is its seed, a real image of a larger class
    common = dict(m2m_steps=1, m2m_step_size=1e-6, m2m_noise=0.0, m2m_gamma=0.0, m2m_beta=0.9)
    pack = set_up([m2m_config(stage_checkpoints, seed=0, drw_epoch=0, **common),
                   m2m_config(stage_checkpoints, seed=1, drw_epoch=2, **common)])
    draws = draw_epoch(pack, 0)
    x, y = member_images(pack, draws.order[:, :64], draws.offsets[:, :64], draws.flips[:, :64], draws.index)
    states = [g.get_state() for g in pack.generators]
    autocast, original = [], m2m.translate

    def spy(*args, **kwargs):
        autocast.append(torch.is_autocast_enabled("cpu"))
        return original(*args, **kwargs)

    monkeypatch.setattr(m2m, "translate", spy)
    out = m2m.translate_batch(pack, draws, 0, 64, x, y)
    assert autocast == [False]  # the pack computes in fp32 (amp is off on the CPU), and so does its translation
    changed = (out != x).flatten(2).any(-1)
    assert changed[0].any() and not changed[1].any()
    for j in changed[0].nonzero().flatten():
        distance = (out[0, j] - x[0]).flatten(1).abs().amax(-1)  # to each standardised image of the batch
        i = distance.argmin()
        assert distance[i] < 1e-4 and pack.counts[y[0, i]] > pack.counts[y[0, j]]
    # member 0 drew its random start (one image batch of uniforms) from its own generator; member 1, before its
    # switch epoch, drew nothing
    expected = torch.Generator().set_state(states[0])
    torch.rand(x.shape[1:], generator=expected)
    assert torch.equal(pack.generators[0].get_state(), expected.get_state())
    assert torch.equal(pack.generators[1].get_state(), states[1])


def test_the_translation_reads_every_m2m_field_of_its_config():
    cfg = TrainConfig.from_dict(tiny_config(method="m2m", m2m_beta=0.5, m2m_gamma=0.6, m2m_lam=0.7, m2m_step_size=0.8,
                                            m2m_steps=9, m2m_noise=0.3))
    assert M2mParams.of(cfg) == M2mParams(beta=0.5, gamma=0.6, lam=0.7, step_size=0.8, steps=9, noise=0.3)


def test_a_translated_sample_is_accepted_only_when_gs_confidence_reaches_gamma(stage_checkpoints):
    pack = set_up([m2m_config(stage_checkpoints, drw_epoch=0)])
    data, g = pack.data, pack.stage_models["m2m_generator"]
    draws = draw_epoch(pack, 0)
    x, y = member_images(pack, draws.order[:, :64], draws.offsets[:, :64], draws.flips[:, :64], draws.index)
    pixels = (x * data.std[:, None, None] + data.mean[:, None, None]).clamp(0, 1)
    uniforms = torch.rand(1, 64, 3, generator=torch.Generator().manual_seed(1))
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(2))

    def g_members(inputs):
        return g(inputs.flatten(0, 1)).view(*inputs.shape[:2], -1)

    def run(params):
        pack.net.eval()
        return translate(pack.net, g_members, pixels, y, pack.counts, uniforms, noise, torch.tensor([True]),
                         params, data.mean, data.std)

    # The translation does not depend on gamma: one run with gamma 0 shows every slot's confidence.
    params = M2mParams(beta=0.9, gamma=0.0, steps=3)
    first = run(params)
    gamma = first.confidence[first.slots].median().item()
    out = run(dataclasses.replace(params, gamma=gamma))
    confident = out.confidence >= gamma
    coin = uniforms[..., 2] < seed_weights(y, pack.counts, 0.9).gather(-1, out.seeds[..., None]).squeeze(-1)
    assert torch.equal(out.accepted, out.slots & confident & coin)
    assert out.accepted.any() and (out.slots & ~confident).any()
    # g, asked again on the images f will train on, is at least gamma sure of each accepted target
    with torch.no_grad():
        again = g(standardise(out.x[out.accepted], data.mean, data.std)).softmax(-1)
    assert (again.gather(1, y[out.accepted][:, None]) >= gamma - 1e-5).all()
    # everything else is the real image
    assert torch.equal(out.x[~out.accepted], pixels[~out.accepted])


def test_gs_weights_never_change_while_f_trains(stage_checkpoints, monkeypatch):
    pack = set_up([m2m_config(stage_checkpoints, drw_epoch=0, m2m_gamma=0.0, m2m_beta=0.9, m2m_steps=2)])
    g = pack.stage_models["m2m_generator"]
    g_before = {k: v.clone() for k, v in g.state_dict().items()}
    f_before = {k: v.clone() for k, v in pack.net.state_dict().items()}
    accepted = []
    original = m2m.translate

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        accepted.append(int(out.accepted.sum()))
        return out
    monkeypatch.setattr(m2m, "translate", spy)
    run_epoch(pack, 0)
    assert sum(accepted) > 0, "translated samples must have been trained on"
    assert not any(p.requires_grad for p in g.parameters()) and not g.training
    assert all(torch.equal(v, g_before[k]) for k, v in g.state_dict().items())  # weights and BatchNorm statistics
    assert not all(torch.equal(v, f_before[k]) for k, v in pack.net.state_dict().items())


def test_the_same_seeds_give_the_same_run(stage_checkpoints):
    config = m2m_config(stage_checkpoints, epochs=1, milestones=[], drw_epoch=0, m2m_steps=2, m2m_beta=0.9,
                        m2m_gamma=0.2).to_dict()
    a, b = train(config), train(config)
    c = train({**config, "seed": 1})
    assert a == b
    assert a["train_loss"] != c["train_loss"]


def test_m2m_members_fuse_and_each_translates_from_its_own_switch_epoch(stage_checkpoints):
    pack = set_up([m2m_config(stage_checkpoints, seed=0, drw_epoch=0, m2m_steps=1),
                   m2m_config(stage_checkpoints, seed=1, drw_epoch=2, m2m_steps=1)])
    draws = draw_epoch(pack, 0)
    assert draws.translating.tolist() == [True, False]
    assert torch.equal(draws.order[1].sort().values, torch.arange(draws.order.shape[1]))  # still a permutation
    losses = run_epoch(pack, 0)
    assert torch.isfinite(losses).all() and losses[0] != losses[1]


def test_the_sampler_is_class_balanced_from_the_switch_epoch(stage_checkpoints):
    pack = set_up([m2m_config(stage_checkpoints, drw_epoch=1)])
    counts = np.array(pack.data.counts)

    def class_shares(epoch):
        labels = pack.data.y_train[draw_epoch(pack, epoch).order[0]]
        return np.bincount(labels.numpy(), minlength=10) / len(labels)

    assert class_shares(0).tolist() == (counts / counts.sum()).tolist()  # a permutation of the imbalanced set
    shares = np.mean([class_shares(1) for _ in range(20)], axis=0)
    assert np.allclose(shares, 0.1, atol=0.02)


def test_g_trains_under_a_seed_apart_from_the_trials_so_no_f_starts_as_g(stage_checkpoints):
    """The trial whose seed is stage_seed (0 by default, the first seed of every sweep) starts f from
    its own weights and draws, not from g's: g's seed is derived from stage_seed, far from 0, 1, ..."""
    trial = m2m_config(stage_checkpoints, seed=0)
    g_cfg = stages.generator_config(trial)
    assert g_cfg.seed == stages.generator_seed(trial.stage_seed) >= 1000
    assert stages.stage_key("m2m_generator", trial)["seed"] == g_cfg.seed
    g, f = set_up([g_cfg]), set_up([trial])
    g_state, f_state = g.net.member_state(0), f.net.member_state(0)
    assert not any(torch.equal(g_state[k], f_state[k]) for k in g_state if g_state[k].dim() > 1)  # drawn weights
    assert not torch.equal(draw_epoch(g).order, draw_epoch(f).order)


def test_a_missing_or_mismatched_g_is_refused_naming_the_field(stage_checkpoints, tmp_path):
    with pytest.raises(ConfigError, match="^m2m_generator: .*needs M2m's g"):
        train(tiny_config(method="m2m"))
    with pytest.raises(ConfigError, match="^m2m_generator: .*existing file"):
        TrainConfig.from_dict(tiny_config(method="m2m", m2m_generator=str(tmp_path / "none.pt")))
    for other, word in ((dict(ratio=5.0), "counts"), (dict(imbalance="step"), "counts"),
                        (dict(dataset="synthetic"), "dataset"), (dict(subset_seed=1), "subset_seed 0")):
        with pytest.raises(ConfigError, match=f"^m2m_generator: .*trained on {word}"):
            set_up([m2m_config(stage_checkpoints, **other)])
    with pytest.raises(ConfigError, match="^m2m_generator: .*not the stage 'm2m_generator'"):
        set_up([TrainConfig.from_dict(tiny_config(method="m2m",
                                                  m2m_generator=stage_checkpoints["deepsmote_autoencoder"]))])
    checkpoint = torch.load(stage_checkpoints["m2m_generator"], weights_only=True)
    renamed = tmp_path / "renamed.pt"
    torch.save({**checkpoint, "classes": [f"digit {c}" for c in checkpoint["classes"]]}, renamed)
    with pytest.raises(ConfigError, match="^m2m_generator: .*trained on classes"):
        set_up([m2m_config({"m2m_generator": str(renamed)})])


@pytest.mark.parametrize("name,value", [("m2m_beta", 1.0), ("m2m_gamma", 1.5), ("m2m_lam", -0.1),
                                        ("m2m_step_size", 0.0), ("m2m_steps", 0), ("m2m_noise", -1.0),
                                        ("m2m_generator", "relative.pt")])
def test_bad_m2m_values_name_their_field(name, value):
    with pytest.raises(ConfigError, match=f"^{name}: "):
        TrainConfig.from_dict(tiny_config(method="m2m", **{name: value}))


def test_the_defaults_are_the_official_cifar_runs():
    cfg = TrainConfig(dataset="cifar10", method="m2m")
    assert (cfg.m2m_beta, cfg.m2m_gamma, cfg.m2m_lam, cfg.m2m_step_size, cfg.m2m_steps, cfg.m2m_noise) == \
        (0.999, 0.9, 0.5, 0.1, 10, 0.5)
    assert cfg.drw_epoch == 160 and cfg.epochs == 200 and not math.isnan(cfg.lr)
