"""DeepSMOTE (core.deepsmote): the autoencoder's layers and penalty, its training (optimiser, batches, the
epoch's loss, the epoch kept), the balanced synthetic set, and the classifier's two phases."""

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import tiny_config
from core import deepsmote
from core.config import ConfigError, TrainConfig
from core.deepsmote import Autoencoder, deepsmote_oversample, permutation_penalty, train_autoencoder
from core.smote import smote_points
from core.stages import load_stage, training_set
from core.train import check_pack, draw_epoch, set_up


def test_the_autoencoder_is_sized_from_the_input_shape():
    for shape in ((1, 8, 8), (1, 16, 16), (3, 32, 32), (3, 64, 64)):
        ae = Autoencoder(shape, latent_dim=600).eval()
        x = torch.rand(2, *shape)
        assert ae.encoder(x).shape == (2, 600)
        assert ae(x).shape == (2, *shape)


def test_the_32x32x3_autoencoder_is_the_ports_layer_for_layer():
    ae = Autoencoder((3, 32, 32), 600)
    assert [layer(m) for m in [*ae.encoder.conv, ae.encoder.fc]] == [
        "Conv2d(3, 64, k4 s2 p1, no bias)", "LeakyReLU(0.2)",
        "Conv2d(64, 128, k4 s2 p1, no bias)", "BatchNorm2d(128)", "LeakyReLU(0.2)",
        "Conv2d(128, 256, k4 s2 p1, no bias)", "BatchNorm2d(256)", "LeakyReLU(0.2)",
        "Conv2d(256, 512, k4 s1 p0, no bias)", "BatchNorm2d(512)", "LeakyReLU(0.2)", "Linear(512, 600)"]
    assert [layer(m) for m in [*ae.decoder.fc, *ae.decoder.deconv]] == [
        "Linear(600, 32768)", "ReLU",  # 512 maps of 8x8
        "ConvTranspose2d(512, 256, k4 s2 p1)", "BatchNorm2d(256)", "ReLU",
        "ConvTranspose2d(256, 128, k4 s2 p1)", "BatchNorm2d(128)", "ReLU",
        "ConvTranspose2d(128, 3, k3 s1 p1)", "Tanh"]


def layer(m: nn.Module) -> str:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        bias = "" if m.bias is not None else ", no bias"
        return (f"{type(m).__name__}({m.in_channels}, {m.out_channels}, k{m.kernel_size[0]} s{m.stride[0]} "
                f"p{m.padding[0]}{bias})")
    if isinstance(m, nn.BatchNorm2d):
        return f"BatchNorm2d({m.num_features})"
    if isinstance(m, nn.LeakyReLU):
        return f"LeakyReLU({m.negative_slope})"
    if isinstance(m, nn.Linear):
        return f"Linear({m.in_features}, {m.out_features})"
    return type(m).__name__


@pytest.mark.parametrize("shape", [(3, 28, 28), (3, 12, 12), (3, 4, 4), (1, 2, 2), (3, 32, 16)])
def test_an_image_side_other_than_4_times_a_power_of_two_is_refused(shape):
    with pytest.raises(ValueError, match=f"^dataset: .*4 \\* 2\\^m.*got {shape[1]}x{shape[2]}$"):
        Autoencoder(shape, 600)


def test_the_permutation_penalty_reconstructs_with_the_decoder_only():
    ae = Autoencoder((1, 8, 8), latent_dim=16)
    images = torch.rand(7, 1, 8, 8)
    permutation_penalty(ae, images).backward()
    assert all(p.grad is None for p in ae.encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in ae.decoder.parameters())
    # codes and images move together: each image is compared with its own decoded code (DeepSMOTE#3)
    ae.eval()
    with torch.no_grad():
        own = F.mse_loss(ae(images), images)
        torch.testing.assert_close(permutation_penalty(ae, images), own)


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


def numbered_images(n):
    """n random 8x8 grey images whose first pixel, i / n, names image i (``_record_autoencoder_training``)."""
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x[:, 0, 0, 0] = torch.arange(n) / n
    return x


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
    x = numbered_images(len(y))
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


def test_the_draws_are_those_of_a_step_by_step_loop_from_stage_seed(monkeypatch):
    """Each epoch draws its order, then each step's class and that class's images for P, in this order
    from one generator: the stream a loop drawing at each step makes, however the draws reach the device."""
    sizes = [120, 12, 2, 1]
    y = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))
    x = numbered_images(len(y))
    cfg = TrainConfig.from_dict(tiny_config(deepsmote_epochs=2, deepsmote_batch_size=64, deepsmote_latent_dim=16))
    gen = torch.Generator().manual_seed(cfg.stage_seed)
    members, classes = [torch.nonzero(y == c).flatten() for c in range(4)], [0, 1, 2]
    batches, penalties = [], []
    for _ in range(2):
        order = torch.randperm(len(y), generator=gen)
        for start in (0, 64, 128):
            batches.append(order[start:start + 64].tolist())
            c = classes[int(torch.randint(len(classes), (1,), generator=gen))]
            penalties.append(members[c][torch.randperm(len(members[c]), generator=gen)[:100]].tolist())
    assert _record_autoencoder_training(monkeypatch, x, y, cfg) == (batches, penalties)


@pytest.mark.parametrize("n, sizes", [(65, [64]), (66, [64, 2])])
def test_a_last_batch_of_one_image_is_left_out_as_batchnorm_cannot_train_on_it(monkeypatch, n, sizes):
    y = torch.arange(n) % 2
    x = numbered_images(len(y))
    cfg = TrainConfig.from_dict(tiny_config(deepsmote_epochs=1, deepsmote_batch_size=64, deepsmote_latent_dim=16))
    batches, penalties = _record_autoencoder_training(monkeypatch, x, y, cfg)
    assert [len(b) for b in batches] == sizes and len(penalties) == len(sizes)


def test_an_epochs_loss_is_the_mean_over_its_images_of_the_reconstruction_and_penalty(monkeypatch):
    # at an lr of 1e-12 no weight moves by more than 1e-12, so every batch's loss can be recomputed afterwards
    # from the recorded batches; the epoch's is their mean weighted by batch size (64, 64, 7), not by batch
    y = torch.repeat_interleave(torch.arange(3), torch.tensor([100, 30, 5]))
    x = numbered_images(len(y))
    cfg = TrainConfig.from_dict(tiny_config(deepsmote_epochs=1, deepsmote_batch_size=64, deepsmote_lr=1e-12,
                                            deepsmote_latent_dim=16))
    batches, penalties = _record_autoencoder_training(monkeypatch, x, y, cfg)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.stage_seed)
        ae = Autoencoder((1, 8, 8), 16).train()
    with torch.no_grad():
        losses = [F.mse_loss(ae(x[b]), x[b]) + permutation_penalty(ae, x[p])
                  for b, p in zip(batches, penalties)]
    _, metrics = train_autoencoder(x, y, cfg, torch.device("cpu"))
    assert [len(b) for b in batches] == [64, 64, 7]
    expected = sum(loss.item() * len(b) for loss, b in zip(losses, batches)) / len(y)
    assert metrics["ae_loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["ae_loss"] != pytest.approx(sum(loss.item() for loss in losses) / 3, rel=1e-3)


def test_the_autoencoder_kept_is_that_of_the_epoch_of_lowest_loss(caplog):
    # at this lr the loss of these 75 images turns up again after epoch 4 of 6
    y = torch.repeat_interleave(torch.arange(3), torch.tensor([60, 12, 3]))
    x = torch.rand(len(y), 1, 8, 8, generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig.from_dict(tiny_config(deepsmote_epochs=6, deepsmote_batch_size=16, deepsmote_lr=5e-4,
                                            deepsmote_latent_dim=16, stage_checkpoint_every=1))
    saved = []
    with caplog.at_level(logging.INFO, logger="core.deepsmote"):
        kept, metrics = train_autoencoder(x, y, cfg, torch.device("cpu"), save_state=saved.append)
    records = [r for r in caplog.records if r.msg.startswith("deepsmote autoencoder epoch")]
    assert [r.args[0] for r in records] == [1, 2, 3, 4, 5, 6]  # numbered from 1, as ae_best_epoch is
    losses = [r.args[1] for r in records]
    best = int(np.argmin(losses))
    assert len(losses) == len(saved) == 6 and best < 5, losses  # the last epoch's weights are not the answer
    assert metrics == {"ae_loss": losses[best], "ae_best_epoch": best + 1}
    assert kept.keys() == saved[best]["ae"].keys()
    assert all(torch.equal(kept[k], saved[best]["ae"][k]) for k in kept)
    assert not all(torch.equal(kept[k], saved[-1]["ae"][k]) for k in kept)


def test_the_autoencoder_saves_its_state_every_stage_checkpoint_every_epochs_and_after_the_last():
    # a period of 3 over 5 epochs tells the period's offset and the last epoch's save apart (2 would not)
    y = torch.arange(40) % 2
    cfg = TrainConfig.from_dict(tiny_config(deepsmote_epochs=5, deepsmote_batch_size=16, deepsmote_latent_dim=16,
                                            stage_checkpoint_every=3))
    saved = []
    train_autoencoder(numbered_images(len(y)), y, cfg, torch.device("cpu"), save_state=saved.append)
    assert [state["epoch"] for state in saved] == [3, 5]


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


def test_an_autoencoder_whose_first_epochs_loss_is_not_finite_stops_with_one_clear_error():
    # it returned no state and a loss of inf, and the classifier failed later, loading it
    y = torch.arange(40) % 2
    x = numbered_images(len(y))
    x[0, 0, 0, 0] = float("nan")
    cfg = TrainConfig.from_dict(tiny_config(deepsmote_epochs=3, deepsmote_latent_dim=16))
    with pytest.raises(ValueError, match="^deepsmote_lr: the autoencoder's loss is nan at epoch 1, with no finite "
                                         "epoch before it; lower deepsmote_lr, or check the training images for NaN$"):
        train_autoencoder(x, y, cfg, torch.device("cpu"))


def test_synthetic_images_are_the_decoded_smote_codes_clipped_and_rounded_to_uint8():
    # An autoencoder whose code is the image (in [0, 1], channels first) and whose decoder maps z to
    # 2 z - 0.5, so that some pixels leave [0, 1]; 1030 + 5 images pass the encoder and the 1025 synthetic
    # codes the decoder in more than one chunk.
    modes = []

    class Decoder(nn.Module):
        def forward(self, z):
            modes.append(self.training)
            return (2 * z - 0.5).view(-1, 3, 8, 8)

    ae = nn.Module()
    ae.encoder, ae.decoder = nn.Flatten(), Decoder()
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], [1030, 5]).astype(np.int32)  # labels keep their dtype too
    x = rng.integers(0, 256, size=(len(y), 8, 8, 3), dtype=np.uint8)
    new_x, new_y = deepsmote_oversample(x, y, ae, k=5, seed=3, device=torch.device("cpu"))
    codes = (x.transpose(0, 3, 1, 2).astype(np.float32) / 255).reshape(len(y), -1)
    ((c, z),) = smote_points(codes, y, 5, 3)
    decoded = np.clip(2 * z.astype(np.float32) - 0.5, 0, 1).reshape(-1, 3, 8, 8).transpose(0, 2, 3, 1)
    assert c == 1 and new_y[len(y):].tolist() == [1] * 1025 and new_y.dtype == np.int32
    assert np.array_equal(new_x[len(y):], np.rint(decoded * np.float32(255)).astype(np.uint8))
    assert (new_x[len(y):] == 0).any() and (new_x[len(y):] == 255).any()  # clipped on both sides
    assert len(modes) > 1 and not any(modes)  # decoded in chunks, in eval mode
    balanced = np.repeat([0, 1], 5)
    same_x, same_y = deepsmote_oversample(x[:10], balanced, ae, k=5, seed=3, device=torch.device("cpu"))
    assert np.array_equal(same_x, x[:10]) and np.array_equal(same_y, balanced)  # nothing to add


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
