"""Imbalanced training subsets: per-class target counts and the seeded subset that meets them.

Paper section 2.1: long-tailed imbalance decays exponentially with constant rho ** (1/(K-1));
step imbalance gives mu*K minority classes of size n_max/rho and the rest n_max.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

KINDS = ("long_tailed", "step", "balanced")


def class_counts(max_per_class: int, num_classes: int, ratio: float, kind: str = "long_tailed",
                 mu: float = 0.5) -> list[int]:
    """Target training count n_c for each class c = 0..K-1.

    long_tailed: ``floor(max * ratio ** (-c / (K - 1)))``; step: the first ``K - round(mu * K)``
    classes get ``max`` and the rest ``floor(max / ratio)``; balanced: ``max`` for all.
    """
    if kind not in KINDS:
        raise ValueError(f"imbalance: unknown kind {kind!r}; allowed: {list(KINDS)}")
    if ratio < 1:
        raise ValueError(f"ratio: got {ratio!r}; allowed: a number >= 1")
    if kind == "balanced" or num_classes == 1:
        return [int(max_per_class)] * num_classes
    if kind == "long_tailed":
        return [int(math.floor(max_per_class * ratio ** (-c / (num_classes - 1)))) for c in range(num_classes)]
    num_major = num_classes - int(round(mu * num_classes))
    return [int(max_per_class)] * num_major + [int(math.floor(max_per_class / ratio))] * (num_classes - num_major)


def imbalanced_indices(labels: np.ndarray, counts: Sequence[int], seed: int,
                       order: Sequence[int] | None = None) -> np.ndarray:
    """Indices of a subset with ``counts[c]`` samples of class c, drawn as in LDAM-DRW.

    Class by class in ``order`` (default 0..K-1), each class's indices (in dataset order) are shuffled
    by one local generator and the first n_c are kept, so the same seed gives the same subset; global
    RNGs are untouched. The order matters because the classes share the generator: SVHN's subsets
    are drawn in the order [1..9, 0], as in Yang & Xu's code that imbalanced-DL copies.
    """
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)  # LDAM-DRW's generator, so subsets match the published ones
    chosen = []
    for c in range(len(counts)) if order is None else order:
        idx = np.flatnonzero(labels == c)
        if counts[c] > len(idx):
            raise ValueError(f"counts: class {c} needs {counts[c]} samples but the data has {len(idx)}")
        rng.shuffle(idx)
        chosen.append(idx[:counts[c]])
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
