"""The SMOTE family's neighbours: SMOTE oversampling (Chawla et al. 2002) and the partner tables of
SMOTE-Mix (eq. 7-8) and Neighbor-Mix (eq. 9-10).

The paper does not say in which space neighbours are searched; this platform searches in input space
(raw pixels of the imbalanced training set, Euclidean distance, scikit-learn's exact search), once per
run before training, as SMOTE itself does. Augmentation is applied after pairing, to both partners.
A partner is one of a sample's k neighbours, each alike; in a class of k or fewer samples, one of its
n_c - 1 others (``distinct_neighbours``), which the table repeats to fill its k columns.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np


def _knn(points: np.ndarray, k: int) -> np.ndarray:
    """The k nearest other points of every point (indices into ``points``), nearest first.

    A set with fewer than k + 1 points repeats its neighbours cyclically; a single point is its own
    neighbour, so the table always has k columns.
    """
    from sklearn.neighbors import NearestNeighbors  # here, not at the top: 0.7 s off every trial's start

    n = len(points)
    if n == 1:
        return np.zeros((1, k), dtype=np.int64)
    k_eff = min(k, n - 1)
    nn = NearestNeighbors(n_neighbors=k_eff + 1).fit(points)
    idx = nn.kneighbors(points, return_distance=False)
    # Drop each point itself; with duplicate points it need not be in column 0, or in the row at all
    # (then the farthest column goes).
    drop = idx == np.arange(n)[:, None]
    drop[~drop.any(1), -1] = True
    table = idx[~drop].reshape(n, k_eff)
    return table[:, np.arange(k) % k_eff]


def neighbour_table(x: np.ndarray, y: np.ndarray, k: int, same_class: bool) -> np.ndarray:
    """(N, k) indices of each training sample's k nearest neighbours, within its class or over all."""
    flat = x.reshape(len(x), -1).astype(np.float32, copy=False)
    if not same_class:
        return _knn(flat, k)
    table = np.empty((len(x), k), dtype=np.int64)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        table[members] = members[_knn(flat[members], k)]
    return table


def distinct_neighbours(sizes: np.ndarray | int, k: int) -> np.ndarray:
    """How many distinct neighbours a sample has in a set (its class, or all) of ``sizes`` points:
    min(k, size - 1), and 1 for a single point (its own neighbour). ``neighbour_table`` repeats them
    to fill k columns, so a partner is drawn from this many columns, not from all k."""
    return np.clip(np.minimum(k, np.asarray(sizes) - 1), 1, None)


def smote_points(points: np.ndarray, y: np.ndarray, k: int, seed: int) -> Iterator[tuple[int, np.ndarray]]:
    """SMOTE's new points, class by class: c and its n_max - n_c points ``z_b + u (z_p - z_b)``, with z_b a
    point of class c (uniform, with replacement), z_p one of its k_c = min(k, n_c - 1) nearest same-class
    neighbours (uniform; a class of one point is its own neighbour), u ~ U[0, 1) one scalar per point.

    Pixels for SMOTE, DeepSMOTE's codes for DeepSMOTE: one draw, from ``seed``, for both. A class
    yields its points before the next one's are computed, so a caller can shrink them (to uint8
    images) one class at a time.
    """
    rng = np.random.default_rng(seed)
    counts = np.bincount(y)
    table = neighbour_table(points, y, k, same_class=True)
    for c in np.flatnonzero(counts):
        need = counts.max() - counts[c]
        if need == 0:
            continue
        members = np.flatnonzero(y == c)
        base = rng.choice(members, size=need)
        partner = table[base, rng.integers(0, distinct_neighbours(len(members), k), size=need)]
        u = rng.random(need).reshape((need,) + (1,) * (points.ndim - 1))
        yield c, points[base] + u * (points[partner] - points[base])


def smote_oversample(x: np.ndarray, y: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Oversample every class to the majority size with SMOTE in pixel space (``smote_points``);
    synthetic samples keep the hard label. Returns the training set with the new samples appended
    (images rounded back to uint8)."""
    new_x, new_y = [x], [y]
    for c, synth in smote_points(x.astype(np.float32), y, k, seed):
        new_x.append(np.clip(np.rint(synth), 0, 255).astype(x.dtype))
        new_y.append(np.full(len(synth), c, dtype=y.dtype))
    return np.concatenate(new_x), np.concatenate(new_y)
