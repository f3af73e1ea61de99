"""Losses and class weights: class-balanced weights (used from the DRW epoch on, ``core.schedule``),
LDAM, and the mixed cross-entropy of the Mixup framework (paper Algorithm 1).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from core.methods import REDUCTIONS


def class_balanced_weights(counts: Sequence[int], beta: float = 0.9999) -> torch.Tensor:
    """Class-balanced weights of Cui et al.: ``w_c = (1 - beta) / (1 - beta ** n_c)``, rescaled to sum to K.

    The inverse of the effective number of samples; DRW uses them from its switch epoch on.
    """
    n = torch.as_tensor(list(counts), dtype=torch.float64)
    w = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), n))
    return (w / w.sum() * len(n)).float()


def ldam_margins(counts: Sequence[int], max_m: float = 0.5) -> torch.Tensor:
    """LDAM's per-class margins ``m_c = max_m * (n_min / n_c) ** (1/4)`` (paper eq. 1 with C set by max_m)."""
    n = torch.as_tensor(list(counts), dtype=torch.float64)
    m = n.pow(-0.25)
    return (m * (max_m / m.max())).float()


def mixed_cross_entropy(logits: torch.Tensor, y_i: torch.Tensor, y_j: torch.Tensor, lam_y: torch.Tensor,
                        weight: torch.Tensor | None = None, reduction: str = "batch_mean") -> torch.Tensor:
    """``lam_y * CE(f(x~), y_i) + (1 - lam_y) * CE(f(x~), y_j)`` with a per-sample lam_y (Algorithm 1).

    Shapes: logits (..., B, C), labels and lam_y (..., B), weight (..., C); the result has the leading
    shape (one loss per member of a fused pack). With class weights w, each term is weighted by the
    weight of its label. ``batch_mean`` divides the sum by the batch size M, as Algorithm 1 and the
    authors' DRW and mixup trainers do; ``weighted_mean`` divides it by the total weight
    ``sum(lam_y w_{y_i} + (1 - lam_y) w_{y_j})``, which for hard labels is exactly
    ``F.cross_entropy(weight=w)`` as in LDAM-DRW (see ``core.methods``).
    """
    if reduction not in REDUCTIONS:  # checked first: without weights both are the mean
        raise ValueError(f"reduction: got {reduction!r}; allowed: {list(REDUCTIONS)}")
    log_p = F.log_softmax(logits.float(), dim=-1)
    nll_i = -log_p.gather(-1, y_i[..., None]).squeeze(-1)
    nll_j = -log_p.gather(-1, y_j[..., None]).squeeze(-1)
    if weight is None:
        return (lam_y * nll_i + (1 - lam_y) * nll_j).mean(-1)
    w_i, w_j = weight.gather(-1, y_i) * lam_y, weight.gather(-1, y_j) * (1 - lam_y)
    total = (w_i * nll_i + w_j * nll_j).sum(-1)
    if reduction == "weighted_mean":
        return total / (w_i + w_j).sum(-1)
    return total / logits.shape[-2]  # batch_mean


def ldam_logits(cos_logits: torch.Tensor, y: torch.Tensor, margins: torch.Tensor, s: torch.Tensor | float) -> torch.Tensor:
    """Label-distribution-aware margin logits (Cao et al. 2019): ``s * (cos_logits - m_y * onehot(y))``.

    Cross-entropy on these is the LDAM loss; the model's head must be a cosine classifier
    (``cosine_head=True``), whose logits lie in [-1, 1]. Shapes: cos_logits (..., B, C), y (..., B),
    margins (..., C) from ``ldam_margins``, s broadcastable to the leading shape.
    """
    m_y = margins.gather(-1, y)
    margin = torch.zeros_like(cos_logits, dtype=torch.float32).scatter_(-1, y[..., None], m_y[..., None].float())
    s = torch.as_tensor(s, dtype=torch.float32, device=cos_logits.device)
    return s.view(*s.shape, 1, 1) * (cos_logits.float() - margin)
