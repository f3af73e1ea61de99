"""DeepSMOTE (core.deepsmote): the autoencoder's shapes and penalty, the balanced synthetic set, and the
classifier's two phases."""

import numpy as np
import pytest
import torch

from conftest import tiny_config
from core.config import ConfigError, TrainConfig
from core import deepsmote
from core.deepsmote import Autoencoder, deepsmote_oversample, permutation_penalty, train_autoencoder
from core.stages import load_stage, training_set
from core.train import check_pack, draw_epoch, set_up


def test_the_autoencoder_is_sized_from_the_input_shape():
    for shape in ((1, 8, 8), (3, 32, 32)):
        ae = Autoencoder(shape, latent_dim=600).eval()
        x = torch.rand(4, *shape)
        assert ae.encoder(x).shape == (4, 600)
        assert ae(x).shape == (4, *shape)
    # 32x32x3 is the port's encoder: 3 -> 64 -> 128 -> 256 (k4 s2 p1), 256 -> 512 (k4 s1 p0), Linear(512, 600)
    convs = [m for m in Autoencoder((3, 32, 32), 600).encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0], c.padding[0]) for c in convs] == \
        [(3, 64, 2, 1), (64, 128, 2, 1), (128, 256, 2, 1), (256, 512, 1, 0)]
    with pytest.raises(ValueError, match="^dataset: .*4 \\* 2\\^m"):
        Autoencoder((3, 28, 28), 600)


def test_the_permutation_penalty_reconstructs_with_the_decoder_only():
    ae = Autoencoder((1, 8, 8), latent_dim=16)
    permutation_penalty(ae, torch.rand(7, 1, 8, 8)).backward()
    assert all(p.grad is None for p in ae.encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in ae.decoder.parameters())


@pytest.mark.parametrize("lr", [1e-3, 2e-4])
def test_the_autoencoder_takes_one_adam_step_of_deepsmote_lr_on_encoder_and_decoder(lr):
    # Adam's first step moves each weight by lr * g / (|g| + eps): by lr wherever the gradient is not tiny,
    # whatever its size (plain SGD would move by lr * g).
    cfg = TrainConfig.from_dict(tiny_config(deepsmote_epochs=1, deepsmote_batch_size=64, deepsmote_lr=lr,
                                            deepsmote_latent_dim=16))
    x, y = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(40) % 2
    with torch.random.fork_rng():
        torch.manual_seed(cfg.stage_seed)  # train_autoencoder initialises its model so
        start = Autoencoder((1, 8, 8), 16).state_dict()
    trained, _ = train_autoencoder(x, y, cfg, torch.device("cpu"))  # 40 images: one batch, one step
    for part in ("encoder.", "decoder."):
        moved = torch.cat([(trained[k] - start[k]).abs().flatten() for k in start
                           if k.startswith(part) and start[k].is_floating_point() and "running" not in k])
        assert moved.max().item() == pytest.approx(lr, rel=1e-3), part
        assert (moved <= lr * (1 + 1e-3)).all(), part


def _record_autoencoder_training(monkeypatch, x, y, cfg):
    """The image ids of every reconstruction batch and of every penalty's images, in order (x[i, 0, 0, 0]
    holds i / len(x))."""
    batches, penalties = [], []
    forward, penalty = Autoencoder.forward, deepsmote.permutation_penalty

    def ids(images):
        return (images[:, 0, 0, 0] * len(x)).round().long().tolist()

    def recorded_forward(ae, images):
        batches.append(ids(images))
        return forward(ae, images)

    def recorded_penalty(ae, images):
        penalties.append(ids(images))
        return penalty(ae, images)

    monkeypatch.setattr(Autoencoder, "forward", recorded_forward)
    monkeypatch.setattr(deepsmote, "permutation_penalty", recorded_penalty)
    train_autoencoder(x, y, cfg, torch.device("cpu"))
    monkeypatch.undo()
    return batches, penalties


def test_each_epoch_sees_every_image_once_and_each_penalty_one_class(monkeypatch):
    sizes = [120, 12, 2, 1]  # the class of one image gives BatchNorm no batch: never the penalty's class
    y = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))
    x = torch.rand(len(y), 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x[:, 0, 0, 0] = torch.arange(len(y)) / len(y)
    cfg = TrainConfig.from_dict(tiny_config(deepsmote_epochs=3, deepsmote_batch_size=64, deepsmote_latent_dim=16))
    batches, penalties = _record_autoencoder_training(monkeypatch, x, y, cfg)
    assert [len(b) for b in batches] == [64, 64, 7] * 3
    for epoch in range(3):
        assert sorted(sum(batches[3 * epoch:3 * epoch + 3], [])) == list(range(len(y)))
    assert batches[:3] != batches[3:6]  # reshuffled each epoch
    classes = []
    for images in penalties:
        (c,) = set(y[images].tolist())
        assert len(images) == len(set(images)) == min(sizes[c], 100)
        classes.append(c)
    assert len(classes) == 9 and set(classes) == {0, 1, 2}
    assert _record_autoencoder_training(monkeypatch, x, y, cfg) == (batches, penalties)  # stage_seed's draws alone


def test_the_synthetic_set_brings_every_class_to_n_max(stage_checkpoints):
    cfg = TrainConfig.from_dict(tiny_config(method="deepsmote",
                                            deepsmote_autoencoder=stage_checkpoints["deepsmote_autoencoder"]))
    x, y, counts, classes = training_set(cfg)
    ae = load_stage("deepsmote_autoencoder", cfg, counts, classes, torch.device("cpu"))
    new_x, new_y = deepsmote_oversample(x, y, ae, k=5, seed=0, device=torch.device("cpu"))
    assert np.bincount(new_y).tolist() == [max(counts)] * len(counts)
    assert new_x.dtype == np.uint8 and new_x.shape[1:] == x.shape[1:]
    assert np.array_equal(new_x[:len(x)], x) and np.array_equal(new_y[:len(y)], y)
    again, _ = deepsmote_oversample(x, y, ae, k=5, seed=0, device=torch.device("cpu"))
    other, _ = deepsmote_oversample(x, y, ae, k=5, seed=1, device=torch.device("cpu"))
    assert np.array_equal(again, new_x) and not np.array_equal(other, new_x)


def test_the_classifier_trains_on_the_imbalanced_set_then_on_the_balanced_unaugmented_one(stage_checkpoints):
    cfg = TrainConfig.from_dict(tiny_config(method="deepsmote", drw_epoch=1,
                                            deepsmote_autoencoder=stage_checkpoints["deepsmote_autoencoder"]))
    pack = set_up([cfg])
    counts, pad = pack.data.counts, pack.data.spec.pad
    before, after = draw_epoch(pack, 0), draw_epoch(pack, 1)
    assert before.order.shape[1] == sum(counts)
    assert torch.bincount(pack.data.y_train[before.index[0]]).tolist() == counts
    assert (before.offsets != pad).any()  # augmented
    assert after.order.shape[1] == max(counts) * len(counts)
    assert torch.bincount(pack.data.y_train[after.index[0]]).tolist() == [max(counts)] * len(counts)
    assert (after.offsets == pad).all() and not after.flips.any()  # unaugmented


def test_deepsmote_members_of_a_pack_share_the_switch_epoch():
    configs = [TrainConfig.from_dict(tiny_config(method="deepsmote", drw_epoch=e)) for e in (1, 2)]
    with pytest.raises(ConfigError, match="^drw_epoch: "):
        check_pack(configs)
