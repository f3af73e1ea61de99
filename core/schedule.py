"""When things happen in a run: the learning rate of each epoch (linear warm-up, step decay) and the epoch
from which class-balanced weights apply (CB from the start, DRW from its switch epoch). One schedule
serves every method, so the switch epoch lives in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from core.losses import class_balanced_weights

if TYPE_CHECKING:
    from core.config import TrainConfig


def learning_rate(cfg: TrainConfig, epoch: int) -> float:
    """Linear warm-up over the first ``warmup_epochs`` (Goyal et al.), then ``lr_factor`` at each milestone."""
    if epoch < cfg.warmup_epochs:
        return cfg.lr * (epoch + 1) / cfg.warmup_epochs
    return cfg.lr * cfg.lr_factor ** sum(epoch >= m for m in cfg.milestones)


class ClassWeights:
    """When class-balanced weights apply: never (``none``), from epoch 0 (``cb``) or from ``drw_epoch`` (DRW).

    One schedule serves every loss, so the switch epoch lives in one place.
    """

    def __init__(self, weighting: str, counts: Sequence[int], beta: float, drw_epoch: int):
        self.start = {"none": None, "cb": 0, "drw": drw_epoch}[weighting]
        self.weights = class_balanced_weights(counts, beta)

    def at(self, epoch: int, device: torch.device | str) -> torch.Tensor | None:
        if self.start is None or epoch < self.start:
            return None
        return self.weights.to(device)
