"""Training augmentation as batched tensor operations (pad + random crop, horizontal flip), so it runs
wherever the images are, the GPU included, and draws only from the generator it is given."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_crop_flip(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad each image by ``pad`` pixels, take a random crop of the original size, and flip half of
    the images horizontally when ``flip`` (He et al. 2016; LDAM-DRW's CIFAR augmentation).

    ``x`` is a float batch (B, C, H, W) in [0, 1]; one crop offset and one flip coin per image.
    """
    b, c, h, w = x.shape
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator, device=x.device)
        ox = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator, device=x.device)
        rows = (oy + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (ox + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        chan = torch.arange(c, device=x.device)[None, :, None, None]
        x = padded[batch, chan, rows, cols]
    if flip:
        coin = torch.rand(b, generator=generator, device=x.device) < 0.5
        x = torch.where(coin[:, None, None, None], x.flip(3), x)
    return x


def to_unit(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images to float32 in [0, 1]; padding happens on this scale, so padded pixels are black
    as with torchvision's RandomCrop on PIL images."""
    return x_uint8.float().div_(255.0)


def standardise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-channel (x - mean) / std, with mean and std on the [0, 1] scale."""
    return (x - mean[:, None, None]) / std[:, None, None]
