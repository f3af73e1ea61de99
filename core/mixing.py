"""The Mixup framework (paper Algorithm 1): mix a batch's inputs with lam_x and its labels with lam_y.

Convention, everywhere in this module: ``lam_x`` is x_i's share of the mixed input,
``x~ = lam_x * x_i + (1 - lam_x) * x_j`` (eq. 2, 4, 7, 9, 14), and ``lam_y`` is y_i's share of the
mixed label (eq. 3, 5, 10, 15). ``n_i`` and ``n_j`` are the training counts of y_i's and y_j's class.
Label rules differ only in how lam_y follows from lam_x; each is vectorised over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def mixup_lambda_y(lam_x: torch.Tensor, n_i: torch.Tensor, n_j: torch.Tensor, **_: float) -> torch.Tensor:
    """Mixup (eq. 3): the label is mixed like the input, lam_y = lam_x."""
    return torch.broadcast_to(lam_x, torch.broadcast_shapes(lam_x.shape, n_i.shape)).to(torch.float32)


def remix_lambda_y(lam_x: torch.Tensor, n_i: torch.Tensor, n_j: torch.Tensor, tau: float = 0.5,
                   kappa: float = 3.0, base: torch.Tensor | None = None, **_: float) -> torch.Tensor:
    """Remix (eq. 6, Chou et al. 2020): a mix dominated in input by a P-majority sample takes the
    minority label.

    lam_y = 0 if n_i/n_j >= kappa and lam_x < tau; 1 if n_i/n_j <= 1/kappa and 1 - lam_x < tau;
    else ``base`` (lam_x for Remix itself, MAMix's lam_y for MAMix-Remix). The second count condition
    is tested as n_j/n_i >= kappa: both quotients are correctly rounded in float64 and compared with
    kappa itself, so a ratio exactly at kappa (30/10 with kappa = 3, 11/10 with kappa = 1.1) is on the
    relabelled side as eq. 6 says, with no rounding of 1/kappa.

    Both rules can hold at once only when kappa = 1, n_i = n_j and 1 - tau < lam_x < tau (so
    tau > 0.5); lam_y = 0 then, as in the authors' code (imbalanced-DL's ``remix_data`` tests the
    lam_y = 0 rule first, in an if/elif).
    """
    n_i, n_j = n_i.to(torch.float64), n_j.to(torch.float64)
    otherwise = mixup_lambda_y(lam_x, n_i, n_j) if base is None else base
    lam_y = torch.where((n_j / n_i >= kappa) & (1 - lam_x < tau), torch.ones_like(otherwise), otherwise)
    return torch.where((n_i / n_j >= kappa) & (lam_x < tau), torch.zeros_like(otherwise), lam_y)


def mamix_balance_point(n_i: torch.Tensor, n_j: torch.Tensor, omega: float = 0.25) -> torch.Tensor:
    """c* = eta_j / (eta_i + eta_j) with eta_c = n_c ** -omega (eq. 13): the lam_x at which the mixed
    sample is labelled half i, half j. A majority x_i (n_i > n_j) needs a larger share to keep its label.

    In float64, where eta_c stays far from underflow for the paper's counts and omegas (5000 ** -8 is
    2.6e-30; in float32, 5000 ** -13 is 0 and equal counts would give 0 / 0).
    """
    eta_i = n_i.to(torch.float64).pow(-omega)
    eta_j = n_j.to(torch.float64).pow(-omega)
    return eta_j / (eta_i + eta_j)


def mamix_lambda_y(lam_x: torch.Tensor, n_i: torch.Tensor, n_j: torch.Tensor, omega: float = 0.25,
                   **_: float) -> torch.Tensor:
    """Margin-aware Mixup (eq. 16): lam_y is piecewise linear in lam_x through (0, 0), (c*, 0.5), (1, 1).

    lam_y = 0.5 * lam_x / c* if lam_x < c*, else 1 - 0.5 * (1 - lam_x) / (1 - c*). Equal counts give
    c* = 0.5 and lam_y = lam_x (Mixup). At lam_x == c* both branches give 0.5. Computed in float64,
    returned as float32.
    """
    c = mamix_balance_point(n_i, n_j, omega)
    lam = lam_x.to(torch.float64)
    below = 0.5 * lam / c
    # c* rounds to 1 when eta_i is negligible (omega = 8, n_i / n_j = 312 at CIFAR-10-LT-300); lam_x >= c*
    # then means lam_x = 1, whose lam_y is 1, not 0 / 0.
    above = 1.0 - 0.5 * (1.0 - lam) / (1.0 - c).clamp_min(torch.finfo(c.dtype).tiny)
    return torch.where(lam < c, below, above).to(torch.float32)


def mamix_remix_lambda_y(lam_x: torch.Tensor, n_i: torch.Tensor, n_j: torch.Tensor, omega: float = 0.25,
                         tau: float = 0.5, kappa: float = 3.0, **_: float) -> torch.Tensor:
    """MAMix-Remix (Table 2): Remix's relabelling applied on top of MAMix's lam_y."""
    base = mamix_lambda_y(lam_x, n_i, n_j, omega=omega)
    return remix_lambda_y(lam_x, n_i, n_j, tau=tau, kappa=kappa, base=base)


LabelRule = Callable[..., torch.Tensor]
LABEL_RULES: dict[str, LabelRule] = {
    "mixup": mixup_lambda_y,
    "remix": remix_lambda_y,
    "mamix": mamix_lambda_y,
    "mamix_remix": mamix_remix_lambda_y,
}


def sample_beta(alpha: float, n: int, generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """``n`` draws of Beta(alpha, alpha) as a float32 tensor on ``device``, from ``generator`` alone.

    ``torch.distributions.Beta`` takes no generator, and drawing on the host would cost a transfer.
    Beta(a, b) is the first coordinate of Dirichlet(a, b), and ``torch._sample_dirichlet`` (the
    sampler behind ``torch.distributions.Beta``) takes a generator: one kernel for all draws of an
    epoch, which matters on a GPU, where a ResNet-32 step is bound by kernel launches.
    """
    concentration = torch.full((n, 2), float(alpha), device=device)
    return torch._sample_dirichlet(concentration, generator=generator)[:, 0]


@dataclass
class MixedBatch:
    """A batch of K members (the leading axis; K = 1 for one run) as the loss sees it."""

    x: torch.Tensor  # mixed inputs x~ (K, B, C, H, W)
    y_i: torch.Tensor  # (K, B)
    y_j: torch.Tensor  # (K, B)
    lam_y: torch.Tensor  # (K, B): per sample, y_i's share of the label
    lam_x: torch.Tensor  # (K,): x_i's share of the input, one per member and batch
    x_i: torch.Tensor | None = None  # the clean inputs (K, B, C, H, W) of a mixed batch (TrainConfig.clean_forward)


def label_share(lam_x: torch.Tensor, n_i: torch.Tensor, n_j: torch.Tensor, rules: dict[str, torch.Tensor], *,
                omega: torch.Tensor, tau: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    """lam_y of each member's samples under that member's label rule (members may differ in rule).

    ``lam_x`` (K, 1); ``n_i``, ``n_j`` (K, B) training counts of y_i's and y_j's class; ``rules`` maps
    each rule used in the pack to its (K, 1) member mask; ``omega``, ``tau``, ``kappa`` are (K, 1).
    """
    lam_y = None
    for rule, members in rules.items():
        share = LABEL_RULES[rule](lam_x, n_i, n_j, omega=omega, tau=tau, kappa=kappa)
        lam_y = share if lam_y is None else torch.where(members, share, lam_y)
    return lam_y


def mix_batch(x_i: torch.Tensor, y_i: torch.Tensor, x_j: torch.Tensor, y_j: torch.Tensor, lam_x: torch.Tensor, *,
              counts: torch.Tensor, rules: dict[str, torch.Tensor], omega: torch.Tensor, tau: torch.Tensor,
              kappa: torch.Tensor) -> MixedBatch:
    """Mix pairs (x_i, x_j) of K members' batches (K, B, ...) with each member's lam_x (K,) and label
    rule: ``x~ = lam_x x_i + (1 - lam_x) x_j`` (eq. 2) and lam_y from ``label_share``.

    How partners are chosen (a permutation of the batch, or a nearest neighbour) and how lam_x is
    drawn is the caller's business; ``counts`` holds the training count of every class, on the device.
    """
    lam_y = label_share(lam_x[:, None], counts[y_i], counts[y_j], rules, omega=omega, tau=tau, kappa=kappa)
    weight = lam_x.to(x_i.dtype).view(-1, *([1] * (x_i.dim() - 1)))
    x = torch.lerp(x_j, x_i, weight)  # lam_x * x_i + (1 - lam_x) * x_j, one kernel
    return MixedBatch(x=x, y_i=y_i, y_j=y_j, lam_y=lam_y, lam_x=lam_x, x_i=x_i)
