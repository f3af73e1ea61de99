"""The SMOTE family's neighbours: SMOTE oversampling (Chawla et al. 2002) and the partner tables of
SMOTE-Mix (eq. 7-8) and Neighbor-Mix (eq. 9-10).

The paper does not say in which space neighbours are searched; this platform searches in input space
(raw pixels of the imbalanced training set, Euclidean distance, scikit-learn's exact search), once per
run before training, as SMOTE itself does. Augmentation is applied after pairing, to both partners.
"""

from __future__ import annotations

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
    flat = x.reshape(len(x), -1).astype(np.float32)
    if not same_class:
        return _knn(flat, k)
    table = np.empty((len(x), k), dtype=np.int64)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        table[members] = members[_knn(flat[members], k)]
    return table


def smote_oversample(x: np.ndarray, y: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Oversample every class to the majority size with ``x + u (x_nn - x)``, u ~ U(0, 1), x_nn one of
    x's k same-class nearest neighbours; synthetic samples keep the hard label. Returns the training
    set with the new samples appended (images rounded back to uint8)."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(y)
    table = neighbour_table(x, y, k, same_class=True)
    new_x, new_y = [x], [y]
    for c in np.flatnonzero(counts):
        need = counts.max() - counts[c]
        if need == 0:
            continue
        base = rng.choice(np.flatnonzero(y == c), size=need)
        partner = table[base, rng.integers(0, k, size=need)]
        u = rng.random(need).reshape((need,) + (1,) * (x.ndim - 1))
        synth = x[base].astype(np.float32) + u * (x[partner].astype(np.float32) - x[base].astype(np.float32))
        new_x.append(np.clip(np.rint(synth), 0, 255).astype(x.dtype))
        new_y.append(np.full(need, c, dtype=y.dtype))
    return np.concatenate(new_x), np.concatenate(new_y)
