"""DeepSMOTE (Dablain, Krawczyk and Chawla, TNNLS 2022) as its official code and the authors' 32x32x3
port run it (dd1github/DeepSMOTE ``DeepSMOTE_MNIST.py``, ``GenerateSamples.py``; imbalanced-DL
``deepsmote/``).

Stage 1 (``train_autoencoder``, cached as the stage ``deepsmote_autoencoder``, ``core.stages``): an
encoder/decoder trained on the imbalanced training set (pixels in [0, 1], no augmentation) with Adam,
separate optimisers for encoder and decoder, loss = MSE(D(E(x)), x) + P per batch, keeping the epoch of
lowest summed loss. P is the official "permutation" penalty: take one class at random, up to 100 of its
images, encode them, *detach* the codes, shift codes and images cyclically by the same one position
and take the MSE of the decoded codes against the images. Since codes and targets move together and
the codes are detached, P is a decoder-only reconstruction of up to 100 same-class images
(DeepSMOTE#3): no gradient of P reaches the encoder, whose BatchNorm statistics still see the batch.

Stage 2 (``deepsmote_oversample``): for every class c, n_max - n_c codes z = z_b + u (z_n - z_b) with
z_b a code of the class (uniform, with replacement), z_n one of its ``k`` Euclidean nearest
neighbours in code space (uniform; k = min(5, n_c - 1), the port's 4 for classes of 5), u ~ U[0, 1)
one scalar per sample; decoded in eval mode, clipped to [0, 1] and stored as uint8 images.

Stage 3 is the classifier's training (``core.train``): the imbalanced set, augmented, until the switch
epoch, then the balanced real + synthetic set without augmentation, as the port's classifier phase.
All three stages see the same imbalanced subset (``subset_seed``); the port's autoencoder saw the first
n_c images of each class and its classifier a random n_c, up to 2 n_c real images of a class in all.

The architecture is the port's 32x32x3 one, sized from the input shape (C, H, W) with H = W = 4 * 2^m:
m stride-2 convolutions (k4, p1) of 64, 128, ... channels (BatchNorm from the second, LeakyReLU 0.2),
then a k4 stride-1 convolution to 512 channels at 1x1 (BatchNorm, LeakyReLU), Linear(512, n_z); the
decoder is Linear(n_z, 512 (H/4)^2) + ReLU, two transposed convolutions (k4, s2, p1) 512 -> 256 -> 128
with BatchNorm and ReLU, a k3 transposed convolution to C channels, Tanh. For 32x32x3 this is the
port exactly (m = 3, n_z = 600); the 8x8x1 digits get m = 1. The MNIST original differs: four
stride-2 convolutions (28 -> 1) with BatchNorm on the last three, n_z = 300, and a decoder from 7x7
through k4 transposed convolutions of strides 1, 1, 2 to 28x28.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.augment import to_unit
from core.data import batch_bounds, channels_first
from core.smote import smote_points

log = logging.getLogger(__name__)

WIDTH = 64  # dim_h of the official code
MAX_PENALTY_IMAGES = 100  # images of the random class in P


def _downsamplings(height: int, width: int) -> int:
    m = int(round(math.log2(height / 4))) if height >= 8 else -1
    if height != width or m < 1 or 4 * 2 ** m != height:
        raise ValueError(f"dataset: DeepSMOTE's autoencoder needs square images of side 4 * 2^m >= 8 "
                         f"(8, 16, 32, 64, ...); got {height}x{width}")
    return m


class Encoder(nn.Module):
    def __init__(self, channels: int, size: int, latent_dim: int):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = channels
        for i in range(_downsamplings(size, size)):
            c_out = WIDTH * 2 ** i
            layers.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False))
            if i > 0:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c_in = c_out
        layers += [nn.Conv2d(c_in, WIDTH * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(WIDTH * 8),
                   nn.LeakyReLU(0.2, inplace=True)]
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Linear(WIDTH * 8, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


class Decoder(nn.Module):
    def __init__(self, channels: int, size: int, latent_dim: int):
        super().__init__()
        _downsamplings(size, size)
        self.side = size // 4
        self.fc = nn.Sequential(nn.Linear(latent_dim, WIDTH * 8 * self.side ** 2), nn.ReLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(WIDTH * 8, WIDTH * 4, 4, stride=2, padding=1), nn.BatchNorm2d(WIDTH * 4), nn.ReLU(True),
            nn.ConvTranspose2d(WIDTH * 4, WIDTH * 2, 4, stride=2, padding=1), nn.BatchNorm2d(WIDTH * 2), nn.ReLU(True),
            nn.ConvTranspose2d(WIDTH * 2, channels, 3, stride=1, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.fc(z).view(-1, WIDTH * 8, self.side, self.side))


class Autoencoder(nn.Module):
    def __init__(self, input_shape: tuple[int, int, int] | list[int], latent_dim: int):
        super().__init__()
        channels, height, width = input_shape
        _downsamplings(height, width)
        self.encoder = Encoder(channels, height, latent_dim)
        self.decoder = Decoder(channels, height, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def permutation_penalty(ae: Autoencoder, images: torch.Tensor) -> torch.Tensor:
    """The official P on one class's images: codes detached, codes and images shifted by one position
    together, MSE of the decoded codes against the images (a decoder-only reconstruction)."""
    codes = ae.encoder(images).detach()
    shift = torch.roll(torch.arange(len(images), device=images.device), -1)
    return F.mse_loss(ae.decoder(codes[shift]), images[shift])


def train_autoencoder(x: torch.Tensor, y: torch.Tensor, cfg, device: torch.device,
                      resume: dict[str, Any] | None = None,
                      save_state: Callable[[dict[str, Any]], None] | None = None
                      ) -> tuple[dict[str, Any], dict[str, float]]:
    """Stage 1 on the training images ``x`` (N, C, H, W) in [0, 1] and labels ``y``; returns the state
    dict of the lowest-loss epoch and its metrics. Every draw comes from one generator seeded with
    ``cfg.stage_seed`` (batch order, P's class and images); the model is initialised under it too.
    ``save_state(state)`` is called every ``cfg.stage_checkpoint_every`` epochs and after the last;
    passing such a state back as ``resume`` goes on from there, as if never stopped. A loss that is not
    finite before any finite epoch (NaN images, an lr that diverges at once) stops it with a ValueError:
    there is no epoch to keep."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.stage_seed)
        ae = Autoencoder(tuple(x.shape[1:]), cfg.deepsmote_latent_dim).to(device)
    gen = torch.Generator().manual_seed(cfg.stage_seed)
    enc_optim = torch.optim.Adam(ae.encoder.parameters(), lr=cfg.deepsmote_lr)
    dec_optim = torch.optim.Adam(ae.decoder.parameters(), lr=cfg.deepsmote_lr)
    first_epoch, best_loss, best_state, best_epoch = 0, math.inf, None, -1
    if resume is not None:
        ae.load_state_dict(resume["ae"])
        enc_optim.load_state_dict(resume["enc_optim"])
        dec_optim.load_state_dict(resume["dec_optim"])
        gen.set_state(resume["generator"])
        first_epoch, best_loss, best_state, best_epoch = (resume[k] for k in ("epoch", "best_loss", "best_state",
                                                                               "best_epoch"))
    y_cpu = y.cpu()
    members = [torch.nonzero(y_cpu == c).flatten() for c in range(int(y_cpu.max()) + 1)]
    # A class of one image would give BatchNorm a batch of one 1x1 map (the official code crashes there).
    classes = [c for c, m in enumerate(members) if len(m) >= 2]
    n, steps = len(x), batch_bounds(len(x), cfg.deepsmote_batch_size)
    for epoch in range(first_epoch, cfg.deepsmote_epochs):
        # The epoch's draws, in the order the official loop makes them (its order, then each step's class
        # and images for P), go to the device at once: a copy each step would make the GPU wait for the host.
        order = torch.randperm(n, generator=gen)
        chosen = []
        for _ in steps:
            c = classes[int(torch.randint(len(classes), (1,), generator=gen))]
            chosen.append(members[c][torch.randperm(len(members[c]), generator=gen)[:MAX_PENALTY_IMAGES]])
        order = order.to(device)
        chosen = torch.cat(chosen).to(device).split([len(i) for i in chosen]) if chosen else []
        total = torch.zeros((), device=device)
        ae.train()
        for (start, end), penalty_images in zip(steps, chosen):
            images = x[order[start:end]]
            loss = F.mse_loss(ae(images), images) + permutation_penalty(ae, x[penalty_images])
            enc_optim.zero_grad(set_to_none=True)
            dec_optim.zero_grad(set_to_none=True)
            loss.backward()
            enc_optim.step()
            dec_optim.step()
            total += loss.detach() * (end - start)
        epoch_loss = float(total) / n  # one read per epoch
        if not math.isfinite(epoch_loss) and best_state is None:  # NaN weights never recover: nothing to keep
            raise ValueError(f"deepsmote_lr: the autoencoder's loss is {epoch_loss} at epoch {epoch + 1}, with no "
                             f"finite epoch before it; lower deepsmote_lr, or check the training images for NaN")
        if epoch_loss < best_loss:
            best_loss, best_epoch = epoch_loss, epoch
            best_state = copy.deepcopy(ae.state_dict())
        log.info("deepsmote autoencoder epoch %d loss %.5f", epoch + 1, epoch_loss)
        if save_state is not None and ((epoch + 1) % cfg.stage_checkpoint_every == 0
                                       or epoch + 1 == cfg.deepsmote_epochs):
            save_state(copy.deepcopy({"epoch": epoch + 1, "ae": ae.state_dict(), "enc_optim": enc_optim.state_dict(),
                                      "dec_optim": dec_optim.state_dict(), "generator": gen.get_state(),
                                      "best_loss": best_loss, "best_state": best_state, "best_epoch": best_epoch}))
    return best_state, {"ae_loss": best_loss, "ae_best_epoch": best_epoch + 1}


@torch.no_grad()
def _encode(ae: Autoencoder, x: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    return torch.cat([ae.encoder(x[i:i + chunk]) for i in range(0, len(x), chunk)])


@torch.no_grad()
def _decode(ae: Autoencoder, z: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    return torch.cat([ae.decoder(z[i:i + chunk]) for i in range(0, len(z), chunk)])


def deepsmote_oversample(x: np.ndarray, y: np.ndarray, ae: Autoencoder, k: int, seed: int,
                         device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Stage 2: the training set (N, H, W, C) uint8 with n_max - n_c DeepSMOTE images of every class c
    appended (same layout and dtype), so that every class has n_max images: SMOTE's draw
    (``core.smote.smote_points``, from ``seed``) in code space, decoded."""
    ae.eval()
    images = to_unit(channels_first(x, device))
    codes = _encode(ae, images).float().cpu().numpy()
    new_codes, new_y = [], []
    for c, z in smote_points(codes, y, k, seed):
        new_codes.append(z)
        new_y.append(np.full(len(z), c, dtype=y.dtype))
    if not new_codes:
        return x, y
    decoded = _decode(ae, torch.from_numpy(np.concatenate(new_codes)).float().to(device))
    synthetic = (decoded.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return np.concatenate([x, synthetic]), np.concatenate([y, *new_y])
