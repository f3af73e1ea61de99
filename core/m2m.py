"""M2m, major-to-minor translation (Kim, Jeong and Shin, CVPR 2020), as its official code runs it
(alinlab/M2m, ``train.py``: ``train_gen_epoch``, ``train_net``, ``generation``; ``run.sh``).

Until the switch epoch (``drw_epoch``, the official ``--warm 160`` of 200) the classifier f trains as
ERM. From then on it draws class-balanced epochs (``Method.sampler``) and every batch is rewritten
before f's SGD step:

1. slots: sample j of class k = y_j is kept with probability n_k / n_max; otherwise it is a slot
   whose target is k.
2. seeds: for a slot, any sample i of the batch is a seed with weight p_ij = 1 - beta ** max(n_{y_i} - n_k, 0)
   (drawn in proportion to it); a slot without any positive weight (no larger class in the batch)
   stays real.
3. translation, in pixel space [0, 1]: x = clamp(x_i + delta, 0, 1), delta ~ U(-1/2, 1/2) rescaled to L2
   norm <= ``m2m_noise`` per channel over the whole batch of slots (``renorm(p=2, dim=1)``), then
   ``m2m_steps`` steps x <- clamp(x - eta grad L / ||grad L||_2, 0, 1) with
   L = CE(g(x), k) + lam f(x)_{y_i}: g's loss for the target plus f's raw logit of the seed class; f and
   g in eval mode. There is no projection onto a ball around x_i.
4. acceptance: softmax(g(x))_k >= gamma and a Bernoulli(p_ij) draw (the seed's weight serves twice, as
   in the official code). An accepted slot trains on x with its label k; any other sample stays real.

g is not f: it is a separate ERM model trained on the same imbalanced set (the stage
``m2m_generator``, ``core.stages``: its last epoch, or its best on a validation split as the official
code selects it, ``m2m_generator_selection``), frozen. The reference port's two faults (g is the network being
trained; the test-set-best checkpoint is reloaded at the switch) are not reproduced.

Vectorised over the members of a pack and the samples of a batch: every sample is computed as a slot
with a mask, so shapes are fixed, no Python loop runs over samples and nothing is read back to the
host. n_max is the largest training count (the official code divides by n_0, class 0's count, which is
the largest in its CIFAR profiles but the smallest in SVHN's). The uniform draws of slots, seeds and
acceptance are made once per epoch (``draw_translation``); the noise, C x H x W floats per sample,
is drawn per step from each member's generator rather than held for a whole epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from core.augment import standardise

Net = Callable[[torch.Tensor], torch.Tensor]  # (K, B, C, H, W) standardised -> (K, B, classes) logits


@dataclass(frozen=True)
class M2mParams:
    beta: float = 0.999
    gamma: float = 0.9
    lam: float = 0.5
    step_size: float = 0.1
    steps: int = 10
    noise: float = 0.5

    @classmethod
    def of(cls, cfg) -> "M2mParams":
        return cls(cfg.m2m_beta, cfg.m2m_gamma, cfg.m2m_lam, cfg.m2m_step_size, cfg.m2m_steps, cfg.m2m_noise)


@dataclass
class Translation:
    """One batch's outcome: the images f trains on (pixel space) and what happened to each sample."""

    x: torch.Tensor  # (K, B, C, H, W) in [0, 1]: accepted slots translated, the rest as given
    accepted: torch.Tensor  # (K, B) bool
    slots: torch.Tensor  # (K, B) bool: samples that were to be replaced and had a seed
    confidence: torch.Tensor  # (K, B) g's softmax of the target class on the translated image
    seeds: torch.Tensor  # (K, B) position in the batch of each slot's seed


def draw_translation(n: int, generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """An epoch's uniforms (n, 3): keep coin, seed draw and acceptance coin of each sample."""
    return torch.rand((n, 3), generator=generator, device=device)


def seed_weights(y: torch.Tensor, counts: torch.Tensor, beta: float) -> torch.Tensor:
    """p[k, j, i] = 1 - beta ** max(n_{y_i} - n_{y_j}, 0): the weight of sample i as a seed for a slot j
    of target y_j (official ``train_net``), (K, B, B)."""
    n = counts[y].to(torch.float64)
    gap = (n[:, None, :] - n[:, :, None]).clamp(min=0)
    return (1 - torch.pow(beta, gap)).float()  # a Python base: no host-to-device copy each step


def choose_seeds(p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Seed positions (K, B) drawn in proportion to each row of ``p`` by inverting its cumulative sum
    at the uniforms ``u`` (K, B) (a multinomial draw of one, made from a draw taken in advance)."""
    cdf = p.cumsum(-1)
    pick = torch.searchsorted(cdf, (u * cdf[..., -1])[..., None], right=True).squeeze(-1)
    return pick.clamp(max=p.shape[-1] - 1)


def initial_noise(u: torch.Tensor, slots: torch.Tensor, bound: float) -> torch.Tensor:
    """delta = U(-1/2, 1/2) rescaled, per member and channel, to an L2 norm of at most ``bound`` over the
    batch's slots: the official ``(rand_like - 0.5).renorm(p=2, dim=1, maxnorm=eps)`` on the slot
    batch (so each image gets about bound / sqrt(slots) of it). ``u`` (K, B, C, H, W) in [0, 1)."""
    delta = (u - 0.5) * slots[:, :, None, None, None]
    norm = delta.pow(2).sum(dim=(1, 3, 4), keepdim=True).sqrt()
    return delta * torch.where(norm > bound, bound / (norm + 1e-7), torch.ones_like(norm))


def translate(f: Net, g: Net, x: torch.Tensor, y: torch.Tensor, counts: torch.Tensor, uniforms: torch.Tensor,
              noise: torch.Tensor, active: torch.Tensor, params: M2mParams, mean: torch.Tensor,
              std: torch.Tensor) -> Translation:
    """Steps 1-4 of the module docstring on K members' batches.

    ``x`` (K, B, C, H, W) augmented images in [0, 1], ``y`` (K, B) labels, ``counts`` (C,) training
    counts; ``uniforms`` (K, B, 3) the batch's slice of ``draw_translation``; ``noise`` (K, B, C, H, W)
    uniforms of the random start; ``active`` (K,) the members that translate. f and g take
    standardised images and must be in eval mode; gradients flow to the images only.
    """
    n = counts[y].float()
    slots = (uniforms[..., 0] >= n / counts.max()) & active[:, None]
    p = seed_weights(y, counts, params.beta)
    slots &= p.sum(-1) > 0
    seeds = choose_seeds(p, uniforms[..., 1])
    p_seed = p.gather(-1, seeds[..., None]).squeeze(-1)
    seed_labels = y.gather(1, seeds)
    x_t = (torch.take_along_dim(x, seeds[:, :, None, None, None], dim=1)
           + initial_noise(noise, slots, params.noise)).clamp(0, 1)
    weight = slots.float()
    for _ in range(params.steps):
        x_t = x_t.detach().requires_grad_(True)
        inputs = standardise(x_t, mean, std)
        target_loss = F.cross_entropy(g(inputs).float().flatten(0, 1), y.flatten(), reduction="none")
        seed_logit = f(inputs).float().gather(-1, seed_labels[..., None]).squeeze(-1)
        loss = ((target_loss.view_as(weight) + params.lam * seed_logit) * weight).sum()
        grad, = torch.autograd.grad(loss, x_t)
        # Each image moves eta along its own normalised gradient, so summing the losses of all slots
        # (instead of the official mean) changes nothing.
        norm = grad.flatten(2).norm(dim=-1)[:, :, None, None, None]
        x_t = (x_t - params.step_size * grad / (norm + 1e-10)).clamp(0, 1)
    x_t = x_t.detach()
    with torch.no_grad():
        confidence = g(standardise(x_t, mean, std)).float().softmax(-1).gather(-1, y[..., None]).squeeze(-1)
    accepted = slots & (confidence >= params.gamma) & (uniforms[..., 2] < p_seed)
    return Translation(torch.where(accepted[:, :, None, None, None], x_t, x), accepted, slots, confidence, seeds)


def translate_batch(pack, draws, start: int, end: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The members' standardised batch (K, B, C, H, W) with M2m's accepted translations in place, for
    the members past their switch epoch; the others' batches are returned as they are."""
    active = [draws.epoch >= c.drw_epoch for c in pack.cfgs]
    if not any(active):
        return x
    g, data, net = pack.stage_models["m2m_generator"], pack.data, pack.net
    shape = x.shape[1:]
    # Only members that translate draw noise, so a member's draws do not depend on its pack.
    noise = torch.stack([torch.rand(shape, generator=gen, device=x.device) if on else
                         torch.zeros(shape, device=x.device) for gen, on in zip(pack.generators, active)])
    pixels = x * data.std[:, None, None] + data.mean[:, None, None]  # back to [0, 1]: M2m works in pixel space

    def g_members(inputs: torch.Tensor) -> torch.Tensor:
        return g(inputs.flatten(0, 1)).view(*inputs.shape[:2], -1)

    net.eval()
    try:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=pack.amp):
            out = translate(net, g_members, pixels, y, pack.counts, draws.translation[:, start:end], noise,
                            draws.translating, M2mParams.of(pack.cfg), data.mean, data.std)
    finally:
        net.train()
    return torch.where(out.accepted[:, :, None, None, None], standardise(out.x, data.mean, data.std), x)


TRANSLATORS = {"m2m": translate_batch}  # by Method.translation
