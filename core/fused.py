"""Fused networks: K members of one architecture trained as one module whose tensors carry a member axis.

A sweep's grid is many small models of the same shape (Table 12: 35 ResNet-32 runs). Trained one
after another, or as separate processes on one GPU, each step of each member is ~800 small kernel
launches. Fused, every layer runs once for all K members (horizontal fusion, Wang et al., "Horizontally
Fused Training Array", MLSys 2021): a convolution becomes one grouped convolution with K groups, a
BatchNorm one BatchNorm over K x C channels, a linear head one batched matmul. Members never mix: each
group sees only its member's channels, so a member's outputs, gradients and BatchNorm statistics are
those it would have alone.

Canonical state: every parameter and buffer of the member architecture, stacked along a leading member
axis (``weight[k]`` is member k's tensor, named as in the member model), so that one SGD optimiser over
the stacked tensors is K independent ones (momentum and weight decay are element-wise). Two executors
read the same tensors:

* ``grouped``: the HFTA layout above, activations as (B, K*C, H, W). One launch per layer for all K.
* ``per_member``: member k's layers called on views ``t[k]`` (``torch.func.functional_call``), one
  member after another: K times the launches, but each member's activations stay small.

Chosen by measurement on this project's 2-core CPU machine (docs/PERFORMANCE.md, "Fused trials"; raw
lines in docs/results/cpu-fused/): for ResNet-32, 4 members x 128 CIFAR images, ``grouped`` ran 318
img/s and ``per_member`` 454 (four members' stacked activations leave the cache); for the digits small
CNN, 8 members x 64 images, the fused pack (grouped) ran 25,046 img/s against 20,047 one member after
another. ``torch.vmap(grad(loss))`` over ``functional_call``, the ``torch.func`` way, timed on the same
batches by ``bench/executors.py`` (docs/results/cpu-fused/executors_vmap.jsonl), ran 4 ResNet-32 members
at 76 img/s against 302 grouped and 391 per member, and 8 small CNNs at 18,206 img/s against 29,325
grouped; hence explicit fused layers. On an H200 (docs/results/gpu-2026-12-04/), one SGD step of ResNet-32
members in fp32 ran 52,503 img/s grouped, 19,620 through vmap and 8,575 per member for 7 members, and
66,326, 34,774 and 8,498 for 35; vmap's step fails under bf16 autocast (its BatchNorm backward refuses the
mixed dtypes). ``auto`` takes ``grouped`` where launches dominate (any CUDA device, and CPU packs whose
activations are small) and ``per_member`` for large CPU activations.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from core.models import NormedLinear, OptionAShortcut

# On the CPU, ``auto`` groups members when one step's largest activation of all members together stays
# below this many bytes (about a cache's size): above it, stacked activations spill to memory and the
# grouped step ran 0.63x of one member after another (ResNet-32, 4 x 128 CIFAR images: 32 MiB; 318 img/s
# against 505, docs/results/cpu-fused/).
CPU_GROUPED_ACTIVATION_BYTES = 8 * 2**20


class GroupedConv2d(nn.Module):
    """K convolutions as one with ``K * groups`` groups; weight (K, O, I/groups, kh, kw)."""

    def __init__(self, convs: Sequence[nn.Conv2d]):
        super().__init__()
        c = convs[0]
        if c.padding_mode != "zeros":
            raise ValueError(f"model: cannot fuse a Conv2d with padding_mode={c.padding_mode!r}; allowed: 'zeros'")
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in convs]))
        self.bias = None if c.bias is None else nn.Parameter(torch.stack([m.bias.detach() for m in convs]))
        self.stride, self.padding, self.dilation, self.groups = c.stride, c.padding, c.dilation, c.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.flatten()
        return F.conv2d(x, self.weight.flatten(0, 1), bias, self.stride, self.padding, self.dilation,
                        self.groups * self.weight.shape[0])


class GroupedBatchNorm2d(nn.Module):
    """K BatchNorms as one over K x C channels; statistics stay per channel, hence per member."""

    def __init__(self, norms: Sequence[nn.BatchNorm2d]):
        super().__init__()
        n = norms[0]
        if not (n.affine and n.track_running_stats and n.momentum is not None):
            raise ValueError("model: only affine BatchNorm2d with running statistics and a momentum can be fused")
        self.eps, self.momentum = n.eps, n.momentum
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in norms]))
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in norms]))
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, torch.stack([getattr(m, name) for m in norms]).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.num_batches_tracked.add_(1)
        # The flattened views share storage with the stacked buffers, so the update lands there.
        return F.batch_norm(x, self.running_mean.view(-1), self.running_var.view(-1), self.weight.flatten(),
                            self.bias.flatten(), self.training, self.momentum, self.eps)


class GroupedLinear(nn.Module):
    """K linear heads as one batched matmul: (B, K*F) features in, (K, B, out) logits out."""

    def __init__(self, linears: Sequence[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in linears]))  # (K, out, F)
        self.bias = None if linears[0].bias is None else nn.Parameter(torch.stack([m.bias.detach() for m in linears]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.weight.shape[0]
        features = x.view(x.shape[0], k, -1).transpose(0, 1)  # (K, B, F)
        if self.bias is None:
            return torch.bmm(features, self.weight.transpose(1, 2))
        return torch.baddbmm(self.bias[:, None, :], features, self.weight.transpose(1, 2))


class GroupedNormedLinear(nn.Module):
    """K cosine classifiers (LDAM's head) as one batched matmul; weight (K, F, out)."""

    def __init__(self, heads: Sequence[NormedLinear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in heads]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.weight.shape[0]
        features = F.normalize(x.view(x.shape[0], k, -1), dim=2).transpose(0, 1)
        return torch.bmm(features, F.normalize(self.weight, dim=1))


class GroupedOptionA(nn.Module):
    """Option-A shortcuts of K members: subsample, then zero-pad each member's channels."""

    def __init__(self, shortcuts: Sequence[OptionAShortcut]):
        super().__init__()
        self.pad, self.members = shortcuts[0].pad, len(shortcuts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::2, ::2]
        b, kc, h, w = x.shape
        x = F.pad(x.reshape(b, self.members, kc // self.members, h, w), (0, 0, 0, 0, self.pad, self.pad))
        return x.reshape(b, -1, h, w)


# Layers with parameters, or whose shape depends on the member count, and how K of them fuse.
# Parameter-free layers that act per channel (ReLU, pooling, Flatten, Identity) are shared as they are.
FUSERS: dict[type, Callable[[Sequence[nn.Module]], nn.Module]] = {
    nn.Conv2d: GroupedConv2d,
    nn.BatchNorm2d: GroupedBatchNorm2d,
    nn.Linear: GroupedLinear,
    NormedLinear: GroupedNormedLinear,
    OptionAShortcut: GroupedOptionA,
}
CHANNELWISE = (nn.ReLU, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity)


def fuse_modules(members: Sequence[nn.Module]) -> nn.Module:
    """The grouped module of K members of one architecture: the same tree, each layer fused."""
    first = members[0]
    if type(first) in FUSERS:
        return FUSERS[type(first)](members)
    if isinstance(first, CHANNELWISE):
        return copy.deepcopy(first)
    if not list(first.children()) or list(first.named_parameters(recurse=False)) or list(first.named_buffers(recurse=False)):
        raise ValueError(f"model: cannot fuse layers of type {type(first).__name__}; fusable: "
                         f"{sorted(t.__name__ for t in (*FUSERS, *CHANNELWISE))}")
    fused = copy.copy(first)  # the container's own forward (a residual block, a classifier) is kept
    fused._parameters, fused._buffers = {}, {}
    fused._modules = {name: fuse_modules([getattr(m, name) for m in members]) for name, _ in first.named_children()}
    return fused


class FusedNetwork(nn.Module):
    """K members of one architecture; ``forward`` maps (K, B, C, H, W) inputs to (K, B, classes) logits.

    Build it from K initialised member models (each under its own seed): the fused network starts with
    exactly their weights. ``member_state(k)`` gives member k's state dict, loadable into the member
    architecture.
    """

    def __init__(self, members: Sequence[nn.Module], executor: str = "grouped", channels_last: bool = False):
        super().__init__()
        if executor not in ("grouped", "per_member"):
            raise ValueError(f"fuse_executor: got {executor!r}; allowed: ['grouped', 'per_member']")
        self.members, self.executor, self.channels_last = len(members), executor, channels_last
        self.grouped = fuse_modules(members)
        if channels_last:
            self._convolution_weights_channels_last()
        # The member architecture without storage: the per-member executor calls it on views t[k].
        self.template = [copy.deepcopy(members[0]).to("meta")]  # a list: not registered as a submodule

    def train(self, mode: bool = True) -> "FusedNetwork":
        self.template[0].train(mode)  # BatchNorm's mode in the per-member executor
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.executor == "per_member":
            return torch.stack([self._member_forward(k, x[k]) for k in range(self.members)])
        # Members side by side in the channel axis: (K, B, C, H, W) -> (B, K*C, H, W).
        return self._grouped_forward(x.transpose(0, 1).reshape(x.shape[1], -1, *x.shape[3:]))

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's logits on the same inputs (B, C, H, W), e.g. the test set: (K, B, classes)."""
        if self.executor == "per_member":
            return torch.stack([self._member_forward(k, x) for k in range(self.members)])
        return self._grouped_forward(x.repeat(1, self.members, 1, 1))

    def _grouped_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.grouped(x.contiguous(memory_format=torch.channels_last) if self.channels_last else x)

    def _member_forward(self, k: int, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        return functional_call(self.template[0], self.member_tensors(k), (x,))

    @torch.no_grad()
    def _convolution_weights_channels_last(self) -> None:
        """Lay the stacked convolution weights out so that both executors' views of them (t.flatten(0, 1)
        and t[k]) are channels_last, as cuDNN's fastest kernels want; before the optimiser exists."""
        for module in self.grouped.modules():
            if isinstance(module, GroupedConv2d):
                w = module.weight
                w.data = w.data.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(w.shape)

    def member_tensors(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's parameters and buffers as views into the stacked tensors (updates land there)."""
        return {name: t[k] for name, t in (*self.grouped.named_parameters(), *self.grouped.named_buffers())}

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's state dict, a copy, loadable into ``create_model(...)`` of the member architecture."""
        return {name: t.detach().clone() for name, t in self.member_tensors(k).items()}

    @torch.no_grad()
    def zero_member(self, k: int) -> None:
        """Set member k's parameters and buffers to zero: a member frozen out of training stays finite
        (its NaN weights would otherwise keep producing NaN), and its zero loss gradient leaves it so."""
        for t in self.member_tensors(k).values():
            t.zero_()


def activation_bytes(model: nn.Module, batch_shape: Sequence[int]) -> int:
    """The largest activation (bytes) of one member's forward pass on a batch of ``batch_shape``,
    found on the meta device: shapes only, nothing computed, the model untouched."""
    largest = 0

    def hook(module: nn.Module, inputs, output) -> None:
        nonlocal largest
        if torch.is_tensor(output):
            largest = max(largest, output.numel() * output.element_size())

    shape_only = copy.deepcopy(model).to("meta").eval()
    for m in shape_only.modules():
        m.register_forward_hook(hook)
    shape_only(torch.empty(*batch_shape, device="meta"))
    return largest


def choose_executor(executor: str, device: torch.device, member: nn.Module, batch_shape: Sequence[int],
                    members: int) -> str:
    """``auto``: grouped on CUDA, and on the CPU while K members' largest activation fits a cache."""
    if executor != "auto":
        return executor
    if device.type == "cuda" or members * activation_bytes(member, batch_shape) <= CPU_GROUPED_ACTIVATION_BYTES:
        return "grouped"
    return "per_member"
