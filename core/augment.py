"""Training augmentation as batched tensor operations (pad + random crop, horizontal flip), so it runs
wherever the images are, the GPU included. The random part is drawn apart from its application: a run
draws every crop offset and flip coin of an epoch at once (``draw_crops``), and each step applies its
slice (``pad_crop_flip``) without launching a draw of its own."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def draw_crops(n: int, pad: int, flip: bool, generator: torch.Generator,
               device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop offsets (n, 2) in [0, 2 * pad] (top, left of the crop in the padded image) and flip coins
    (n,) of ``n`` images; all-zero offsets without ``pad`` and no flips without ``flip``."""
    offsets = (torch.randint(0, 2 * pad + 1, (n, 2), generator=generator, device=device) if pad > 0
               else torch.zeros((n, 2), dtype=torch.int64, device=device))
    flips = (torch.rand(n, generator=generator, device=device) < 0.5 if flip
             else torch.zeros(n, dtype=torch.bool, device=device))
    return offsets, flips


def pad_crop_flip(x: torch.Tensor, pad: int, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Zero-pad each image by ``pad`` pixels, crop it back to its size at ``offsets``, and flip it
    horizontally where ``flips`` (He et al. 2016; LDAM-DRW's CIFAR augmentation).

    ``x`` is a float batch (B, C, H, W) in [0, 1]; ``offsets`` (B, 2) and ``flips`` (B,) come from
    ``draw_crops``.
    """
    b, c, h, w = x.shape
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad))
        rows = (offsets[:, :1] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (offsets[:, 1:] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        chan = torch.arange(c, device=x.device)[None, :, None, None]
        x = padded[batch, chan, rows, cols]
    return torch.where(flips[:, None, None, None], x.flip(3), x)


def to_unit(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images to float32 in [0, 1]; padding happens on this scale, so padded pixels are black
    as with torchvision's RandomCrop on PIL images."""
    return x_uint8.float().div_(255.0)


def standardise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-channel (x - mean) / std, with mean and std on the [0, 1] scale."""
    return (x - mean[:, None, None]) / std[:, None, None]
