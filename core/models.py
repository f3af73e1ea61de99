"""Networks, by name: CIFAR ResNet-32 (He et al. 2016, option-A shortcuts), the CIFAR variant of
ResNet-18, and a small CNN for the embedded dataset.

Every model is built as ``create_model(name, num_classes, in_channels, cosine_head, head_bias,
head_init)`` and its forward returns logits, or ``(logits, features)`` with ``return_features=True``.
The classifier on the pooled features is linear, or the cosine classifier that LDAM uses
(``cosine_head``). The linear one has a bias or not, and keeps ``nn.Linear``'s own initial draw or is
drawn Kaiming-normal with the convolutions (``HEAD_INITS``). The authors' code (imbalanced-DL) has no bias
and keeps the draw; Cao et al.'s LDAM-DRW code has a bias and the Kaiming draw. Models know nothing about
methods.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    MODELS[fn.__name__] = fn
    return fn


HEAD_INITS = ("pytorch", "kaiming_normal")  # nn.Linear's own U(+-1/sqrt(features)), or the body's draw


def create_model(name: str, num_classes: int, in_channels: int = 3, cosine_head: bool = False,
                 head_bias: bool = False, head_init: str = "pytorch") -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"model: unknown model {name!r}; allowed: {sorted(MODELS)}")
    if head_init not in HEAD_INITS:
        raise ValueError(f"head_init: got {head_init!r}; allowed: {list(HEAD_INITS)}")
    model = MODELS[name](num_classes=num_classes, in_channels=in_channels,
                         head=NormedLinear if cosine_head else partial(nn.Linear, bias=head_bias))
    # Drawn once the whole model exists, the body first: the order of the code before the head options,
    # so that a biased, Kaiming-drawn head reproduces its runs bit for bit.
    model.body.apply(_kaiming_init)
    if head_init == "kaiming_normal":
        model.head.apply(_kaiming_init)
    return model


class NormedLinear(nn.Module):
    """Cosine classifier: logits are cos(x, w_c) with x and each class weight L2-normalised, no bias."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features).uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=0)


class _Classifier(nn.Module):
    """A feature extractor followed by a head, ``head(num_features, num_classes)``."""

    def __init__(self, body: nn.Module, num_features: int, num_classes: int, head: Callable[[int, int], nn.Module]):
        super().__init__()
        self.body = body
        self.head = head(num_features, num_classes)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        features = self.body(x)
        logits = self.head(features)
        return (logits, features) if return_features else logits


def _kaiming_init(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight)


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = (OptionAShortcut(planes - in_planes) if shortcut == "A" else
                             nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class OptionAShortcut(nn.Module):
    """Parameter-free shortcut: stride-2 subsampling and zero-padded extra channels."""

    def __init__(self, extra_channels: int):
        super().__init__()
        self.pad = extra_channels // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


def _resnet_body(in_channels: int, widths: list[int], blocks: list[int], shortcut: str) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0] if shortcut == "A" else 64, 3, 1, 1, bias=False)]
    in_planes = widths[0] if shortcut == "A" else 64
    layers += [nn.BatchNorm2d(in_planes), nn.ReLU(inplace=True)]
    for stage, (planes, n) in enumerate(zip(widths, blocks)):
        for b in range(n):
            layers.append(_BasicBlock(in_planes, planes, 2 if (stage > 0 and b == 0) else 1, shortcut))
            in_planes = planes
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


@register_model
def resnet32(num_classes: int, in_channels: int, head: Callable[[int, int], nn.Module]) -> nn.Module:
    """CIFAR ResNet-32: 16-32-64 channels, 5 basic blocks per stage, option-A shortcuts (~0.46 M)."""
    return _Classifier(_resnet_body(in_channels, [16, 32, 64], [5, 5, 5], "A"), 64, num_classes, head)


@register_model
def resnet18(num_classes: int, in_channels: int, head: Callable[[int, int], nn.Module]) -> nn.Module:
    """CIFAR ResNet-18: 3x3 stride-1 stem, no max-pool, [2, 2, 2, 2] blocks of 64..512, 1x1 projections."""
    return _Classifier(_resnet_body(in_channels, [64, 128, 256, 512], [2, 2, 2, 2], "B"), 512, num_classes, head)


@register_model
def small_cnn(num_classes: int, in_channels: int, head: Callable[[int, int], nn.Module]) -> nn.Module:
    """Three conv-BN-ReLU layers and global pooling: trains on 8x8 digits in seconds on a CPU."""
    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    body = nn.Sequential(*block(in_channels, 32, 1), *block(32, 64, 2), *block(64, 64, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return _Classifier(body, 64, num_classes, head)
