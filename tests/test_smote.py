"""Neighbour tables of SMOTE-Mix / Neighbor-Mix and SMOTE oversampling, against brute force and toy data."""

import numpy as np
import pytest
import torch
from scipy import stats

from conftest import tiny_config
from core.config import TrainConfig
from core.smote import neighbour_table, smote_oversample
from core.train import draw_epoch, set_up


def _brute_force_distances(x):
    flat = x.reshape(len(x), -1).astype(np.float64)
    d = ((flat[:, None, :] - flat[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return d


def _random_data(seed=0, n=60, k=3):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 4, 4, 1)).astype(np.uint8)  # distinct points, no distance ties
    y = rng.integers(0, k, size=n)
    return x, y


def test_any_class_neighbours_are_the_true_nearest():
    x, y = _random_data()
    k = 5
    table = neighbour_table(x, y, k, same_class=False)
    assert table.shape == (len(x), k) and table.dtype.kind == "i"
    d = _brute_force_distances(x)
    for i in range(len(x)):
        assert i not in table[i]
        expected = np.argsort(d[i], kind="stable")[:k]
        # same set and order by distance (the values are distinct, so the order is unique)
        np.testing.assert_allclose(d[i, table[i]], d[i, expected])
        assert list(table[i]) == list(expected)
    # any-class neighbours cross class boundaries on random data
    assert (y[table] != y[:, None]).any()


def test_same_class_table_keeps_classes_excludes_self_and_finds_the_nearest_of_the_class():
    x, y = _random_data(seed=1)
    k = 4
    table = neighbour_table(x, y, k, same_class=True)
    assert table.shape == (len(x), k)
    assert (y[table] == y[:, None]).all()
    assert not (table == np.arange(len(x))[:, None]).any()
    d = _brute_force_distances(x)
    d[y[:, None] != y[None, :]] = np.inf
    for i in range(len(x)):
        assert list(table[i]) == list(np.argsort(d[i], kind="stable")[:k])


def test_small_classes_still_give_k_columns():
    rng = np.random.default_rng(2)
    # class 0: 20 samples, class 1: 3 samples (< k + 1), class 2: a single sample
    y = np.array([0] * 20 + [1] * 3 + [2])
    x = rng.normal(size=(len(y), 6)).astype(np.float32)
    k = 5
    table = neighbour_table(x, y, k, same_class=True)
    assert table.shape == (len(y), k)
    assert (y[table] == y[:, None]).all()
    small = np.flatnonzero(y == 1)
    for i in small:
        others = set(small) - {i}
        assert set(table[i]) == others  # both other members, repeated to fill k columns
    assert (table[23] == 23).all()  # the single sample is its own (only) partner
    # the cyclic repeat keeps the nearest first
    d = _brute_force_distances(x)
    for i in small:
        assert d[i, table[i, 0]] <= d[i, table[i, 1]]


def test_duplicate_points_never_pick_themselves_while_another_point_exists():
    x = np.zeros((4, 2), dtype=np.float32)  # all identical
    y = np.zeros(4, dtype=np.int64)
    table = neighbour_table(x, y, 2, same_class=True)
    assert not (table == np.arange(4)[:, None]).any()


def _two_far_classes(seed=0):
    rng = np.random.default_rng(seed)
    # 1-D "images": class 0 (30 samples) in [10, 60], class 1 (5) in [190, 200], class 2 (12) in [100, 120]
    x = np.concatenate([rng.integers(10, 61, 30), rng.integers(190, 201, 5), rng.integers(100, 121, 12)])
    y = np.array([0] * 30 + [1] * 5 + [2] * 12)
    return x.astype(np.uint8).reshape(-1, 1, 1, 1), y


def test_smote_balances_every_class_to_the_majority_and_keeps_the_originals():
    x, y = _two_far_classes()
    new_x, new_y = smote_oversample(x, y, k=5, seed=0)
    assert np.bincount(new_y).tolist() == [30, 30, 30]
    assert new_x.dtype == np.uint8 and new_x.shape[1:] == x.shape[1:]
    np.testing.assert_array_equal(new_x[: len(x)], x)
    np.testing.assert_array_equal(new_y[: len(y)], y)


def test_synthetic_samples_lie_between_a_sample_and_a_same_class_neighbour():
    x, y = _two_far_classes()
    new_x, new_y = smote_oversample(x, y, k=2, seed=0)
    synth_x, synth_y = new_x[len(x):].ravel().astype(int), new_y[len(y):]
    for c in (1, 2):
        members = x[y == c].ravel().astype(int)
        values = synth_x[synth_y == c]
        assert len(values) == 30 - len(members)
        assert values.min() >= members.min() and values.max() <= members.max(), c
    # with k = 1 every sample has one partner, so each synthetic value lies on one of the segments
    table = neighbour_table(x, y, 1, same_class=True)
    segments = [sorted((int(x[i].item()), int(x[table[i, 0]].item()))) for i in range(len(x))]
    new_x, new_y = smote_oversample(x, y, k=1, seed=3)
    for v, c in zip(new_x[len(x):].ravel().astype(int), new_y[len(y):]):
        assert any(lo <= v <= hi for (lo, hi), yc in zip(segments, y) if yc == c), (v, c)


def test_synthetic_images_interpolate_pixelwise_with_one_u_per_sample():
    # two 2-pixel images per class: a synthetic image is x + u (x_nn - x) with one u for all pixels
    x = np.array([[0, 200], [100, 0], [50, 50], [52, 50], [54, 50], [56, 50]], dtype=np.uint8).reshape(6, 1, 2, 1)
    y = np.array([0, 0, 1, 1, 1, 1])
    new_x, _ = smote_oversample(x, y, k=1, seed=0)
    for img in new_x[len(x):].reshape(-1, 2).astype(float):
        # on the segment from (0, 200) to (100, 0): p1 = 200 - 2 p0, up to rounding
        assert abs(img[1] - (200 - 2 * img[0])) <= 2.0, img


def test_bases_and_partners_are_drawn_uniformly_and_each_image_is_exactly_an_interpolation():
    # Minority images x_i = a_i e_i (one bright pixel each): the two nearest others of every sample are
    # those with the smallest a, so a synthetic image's two nonzero pixels name its base and partner.
    a = np.array([250, 240, 230, 220, 210, 60])
    x = np.concatenate([np.full((606, 6), 128), np.diag(a)]).astype(np.uint8).reshape(-1, 1, 6, 1)
    y = np.array([0] * 606 + [1] * 6)
    new_x, new_y = smote_oversample(x, y, k=2, seed=0)
    synth = new_x[len(x):].reshape(-1, 6).astype(float)
    assert len(synth) == 600 and (new_y[len(y):] == 1).all()
    table = neighbour_table(x, y, 2, same_class=True)[606:] - 606
    assert table[:4].tolist() == [[5, 4]] * 4

    def pairs(img):
        """(base, partner) pairs of which ``img`` is rint(x_b + u (x_p - x_b)) for some u in [0, 1]."""
        found = []
        for b in range(6):
            for p in table[b]:
                off = np.delete(img, [b, p])
                # u's interval from each of the two pixels, rounding included
                lo = max(0.0, (img[p] - 0.5) / a[p], 1 - (img[b] + 0.5) / a[b])
                hi = min(1.0, (img[p] + 0.5) / a[p], 1 - (img[b] - 0.5) / a[b])
                if (off == 0).all() and lo <= hi:
                    found.append((b, int(p)))
        return found

    found = [pairs(img) for img in synth]
    assert all(found), "every synthetic image lies on a segment from a sample to one of its 2 neighbours"
    # Images named by one pair, of bases 0 to 2: their segments are no other base's (3 shares {3, 4} with 4
    # and {3, 5} with 5), and only an image at a segment's end, where u rounds to 0 or 1, fits two.
    named = [f[0] for f in found if len(f) == 1 and f[0][0] < 3]
    assert len(named) > 250
    bases = np.bincount([b for b, _ in named], minlength=3)
    assert stats.chisquare(bases).pvalue > 1e-3, bases  # uniform over the class, with replacement
    nearest = sum(p == 5 for _, p in named)
    assert stats.binomtest(nearest, len(named), 0.5).pvalue > 1e-3, nearest  # either neighbour alike
    u = [img[p] / a[p] for img, f in zip(synth, found) if len(f) == 1 and f[0][0] < 3 for _, p in f]
    assert stats.kstest(u, "uniform").pvalue > 1e-3  # u ~ U(0, 1)


def test_a_class_smaller_than_k_plus_one_draws_each_of_its_neighbours_alike():
    # Three minority images x_i = a_i e_i and k = 5: each has two distinct neighbours, which the table
    # repeats cyclically (nearest, second, nearest, second, nearest). Drawn alike, each of the three
    # segments gets a third of the images; drawn by column, {1, 2} (both ends' nearest) would get 40 %.
    a = np.array([250, 200, 100])
    x = np.concatenate([np.full((3003, 3), 128), np.diag(a)]).astype(np.uint8).reshape(-1, 1, 3, 1)
    y = np.array([0] * 3003 + [1] * 3)
    new_x, _ = smote_oversample(x, y, k=5, seed=0)
    support = new_x[len(x):].reshape(-1, 3) > 0
    inner = support[support.sum(1) == 2]  # images at a segment's end (u rounded to 0 or 1) name no segment
    segments = [int((inner[:, i] & inner[:, j]).sum()) for i, j in ((0, 1), (0, 2), (1, 2))]
    assert sum(segments) == len(inner) > 2900
    assert stats.chisquare(segments).pvalue > 1e-3, segments


def test_a_class_of_one_sample_is_oversampled_with_copies_of_it():
    x, y = _random_data(seed=6, n=40)
    y = np.r_[np.zeros(39, dtype=np.int64), 1]  # class 1: the last sample alone, its own neighbour
    new_x, new_y = smote_oversample(x, y, k=3, seed=0)
    assert (new_y[len(y):] == 1).all() and len(new_y) == 78
    assert (new_x[len(x):] == x[-1]).all()


def test_smote_is_seeded():
    x, y = _random_data(seed=4, n=80)
    a = smote_oversample(x, y, k=3, seed=7)
    b = smote_oversample(x, y, k=3, seed=7)
    c = smote_oversample(x, y, k=3, seed=8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_balanced_data_is_returned_unchanged():
    x, y = _random_data(seed=5, n=30)
    y = np.repeat(np.arange(3), 10)
    new_x, new_y = smote_oversample(x, y, k=3, seed=0)
    np.testing.assert_array_equal(new_x, x)
    np.testing.assert_array_equal(new_y, y)


@pytest.mark.parametrize("same_class", [True, False])
def test_neighbour_table_on_a_real_imbalanced_digits_subset(same_class):
    from core.data import DATASETS, imbalanced_arrays, load

    x, y, counts = imbalanced_arrays(load("digits"), DATASETS["digits"], "long_tailed", 10, 0.5, 0)
    table = neighbour_table(x, y, 5, same_class)
    assert table.shape == (sum(counts), 5)
    assert not (table == np.arange(len(y))[:, None]).any()
    if same_class:
        assert (y[table] == y[:, None]).all()
    else:  # digits are well separated: most nearest neighbours share the label
        assert (y[table[:, 0]] == y).mean() > 0.9


@pytest.mark.parametrize("method, same_class", [("smote_mix_drw", True), ("neighbor_mix_drw", False)])
def test_a_mixing_partner_is_one_of_the_samples_distinct_neighbours_drawn_alike(method, same_class):
    # digits at ratio 40: its rarest classes have 3 samples, so 2 distinct same-class neighbours of k = 5
    pack = set_up([TrainConfig.from_dict(tiny_config(method=method, ratio=40.0, smote_k=5))])
    y = pack.data.y_train[pack.index[0]]
    draws = [draw_epoch(pack, 0) for _ in range(100)]
    order = torch.cat([d.order[0] for d in draws])
    column = torch.cat([d.neighbour_column[0] for d in draws])
    sizes = torch.bincount(y)[y[order]] if same_class else torch.full_like(order, len(y))
    distinct = torch.clamp(sizes - 1, max=5)
    assert distinct.min() == (2 if same_class else 5)
    for d in distinct.unique().tolist():
        columns = torch.bincount(column[distinct == d], minlength=d)
        assert len(columns) == d and stats.chisquare(columns.numpy()).pvalue > 1e-3, (d, columns)
    partners = pack.neighbours[order, column]
    assert (y[partners] == y[order]).all() == same_class
