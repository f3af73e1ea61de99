"""Tests for core.margins: hand-computed margins, eq. (17) weighting, Table 7/8 statistics, Spearman."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from core.margins import (
    DECOMPOSITION_KEYS,
    class_margins,
    majority_mask,
    margin_decomposition,
    margin_gap,
    margin_report,
    sample_margins,
    spearman,
    theoretical_margin_l2,
)

# Six samples over K = 3 classes whose margins are worked out by hand (eq. 11):
#   [3, 1, 0]    y=0:  3 - 1   =  2   (the true class is the max, so it must be masked out)
#   [1, 2, .5]   y=0:  1 - 2   = -1
#   [0, 4, 1]    y=1:  4 - 1   =  3
#   [2, 2, 0]    y=1:  2 - 2   =  0   (runner-up ties the true logit)
#   [0, 1, -1]   y=2: -1 - 1   = -2
#   [.5, 0, 3.5] y=2: 3.5 - .5 =  3
LOGITS = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 4.0, 1.0],
                       [2.0, 2.0, 0.0], [0.0, 1.0, -1.0], [0.5, 0.0, 3.5]])
TARGETS = torch.tensor([0, 0, 1, 1, 2, 2])
GAMMA = [2.0, -1.0, 3.0, 0.0, -2.0, 3.0]
CLASS_MARGINS = [0.5, 1.5, 0.5]  # (2 - 1) / 2, (3 + 0) / 2, (-2 + 3) / 2
# N = 120, N / K = 40: only class 0 is a majority class.
COUNTS = [100, 10, 10]
CIFAR10_LT_100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_sample_margins_match_hand_values():
    assert sample_margins(LOGITS, TARGETS).tolist() == GAMMA


def test_sample_margin_is_zero_when_runner_up_ties():
    # Two rivals tie each other above the true class, and a rival ties the true class.
    logits = torch.tensor([[1.0, 3.0, 3.0], [5.0, 2.0, 5.0]])
    assert sample_margins(logits, torch.tensor([0, 2])).tolist() == [-2.0, 0.0]


def test_class_margins_are_per_class_means():
    gamma = torch.tensor(GAMMA)
    assert class_margins(gamma, TARGETS, 3).tolist() == CLASS_MARGINS


def test_class_margins_mark_absent_class_as_nan():
    gamma = torch.tensor([2.0, -1.0, -2.0, 3.0])
    out = class_margins(gamma, torch.tensor([0, 0, 2, 2]), 4)
    assert out[0].item() == 0.5 and out[2].item() == 0.5
    assert math.isnan(out[1].item()) and math.isnan(out[3].item())


def test_class_margins_agree_with_a_loop_on_random_data():
    gen = torch.Generator().manual_seed(0)
    gamma = torch.randn(500, generator=gen)
    targets = torch.randint(0, 7, (500,), generator=gen)
    expected = [gamma[targets == c].double().mean().item() for c in range(7)]
    assert class_margins(gamma, targets, 7).tolist() == pytest.approx(expected, abs=1e-12)


def test_majority_mask_single_majority_class():
    assert majority_mask(COUNTS).tolist() == [True, False, False]


@pytest.mark.parametrize("convert", [list, np.array, torch.tensor], ids=["list", "ndarray", "tensor"])
def test_majority_mask_cifar10_lt_100_matches_table7_caption(convert):
    # N / K = 12406 / 10 = 1240.6; Table 7: "Majority: Class 0 to Class 2".
    mask = majority_mask(convert(CIFAR10_LT_100))
    assert mask.dtype == torch.bool
    assert mask.nonzero().flatten().tolist() == [0, 1, 2]


def test_majority_mask_balanced_set_has_no_majority():
    # "Exceed 1/K" is strict: classes exactly at N / K are minority.
    assert not majority_mask([50, 50, 50]).any()


def test_margin_gap_hand_value():
    # Majority {0}: 0.5. Minority {1, 2}: (10 * 1.5 + 10 * 0.5) / 20 = 1.0.
    assert margin_gap(CLASS_MARGINS, COUNTS) == pytest.approx(-0.5)


def test_margin_gap_weights_by_training_counts():
    # Counts [300, 200, 10, 30]: N / K = 135, majority {0, 1}.
    # Weighted: (300 * 1 + 200 * 3) / 500 - (10 * 0 + 30 * 2) / 40 = 1.8 - 1.5 = 0.3;
    # a plain mean of class margins would give 2.0 - 1.0 = 1.0.
    assert margin_gap([1.0, 3.0, 0.0, 2.0], [300, 200, 10, 30]) == pytest.approx(0.3)


def test_margin_gap_ignores_class_missing_from_evaluation():
    # Class 2 has no evaluation samples. Without it the minority side is class 1 alone:
    # 0.5 - 1.5 = -1.0 (counting the NaN as 0 would give 0.5 - 0.75 = -0.25).
    gamma = torch.tensor(GAMMA[:4])
    per_class = class_margins(gamma, TARGETS[:4], 3)
    assert math.isnan(per_class[2].item())
    assert margin_gap(per_class, COUNTS) == pytest.approx(-1.0)


def test_margin_gap_is_nan_without_majority_class():
    assert math.isnan(margin_gap([1.0, 2.0], [10, 10]))


def test_margin_decomposition_hand_values():
    # Majority (class 0) samples: -1 | 2. Minority samples: -2 | 3, 0, 3 (the tie at 0 counts
    # as gamma >= 0). The pooled minority mean 6 / 3 = 2.0 differs from the mean of the class
    # means (1.5 + 3) / 2 = 2.25, so this pins pooling over samples.
    out = margin_decomposition(torch.tensor(GAMMA), TARGETS, COUNTS)
    assert list(out) == list(DECOMPOSITION_KEYS)
    assert out == pytest.approx({
        "neg_majority": -1.0, "pos_majority": 2.0, "neg_minority": -2.0, "pos_minority": 2.0,
        "frac_neg_majority": 0.5, "frac_pos_majority": 0.5,
        "frac_neg_minority": 0.25, "frac_pos_minority": 0.75,
    })


def test_margin_decomposition_empty_part_is_nan():
    # Majority samples are all correct: no gamma < 0 part; minority group has no samples.
    out = margin_decomposition(torch.tensor([1.0, 2.0]), torch.tensor([0, 0]), COUNTS)
    assert math.isnan(out["neg_majority"]) and out["frac_neg_majority"] == 0.0
    assert out["pos_majority"] == 1.5 and out["frac_pos_majority"] == 1.0
    assert all(math.isnan(out[k]) for k in DECOMPOSITION_KEYS if k.endswith("minority"))


def test_theoretical_margin_l2_is_zero_for_proportional_margins():
    counts = np.array([5000.0, 500.0, 50.0, 5.0])
    assert theoretical_margin_l2(2.0 * counts ** -0.25, counts) == pytest.approx(0.0, abs=1e-20)


def test_theoretical_margin_l2_hand_value():
    # tau = [1, 1/2, 1/3] for counts [1, 16, 81]; m = [1, 1, 0] gives a = 1.5 / 2 = 0.75 and
    # residuals [1/4, -1/4, 1/3]: RSS = 1/16 + 1/16 + 1/9 = 17/72. Class 3 (NaN) is ignored.
    assert theoretical_margin_l2([1.0, 1.0, 0.0, math.nan], [1, 16, 81, 256]) == pytest.approx(17 / 72)


def test_theoretical_margin_l2_all_zero_margins_use_zero_slope():
    # a = 0, so the error is sum(tau ** 2) = 1 + 1/4.
    assert theoretical_margin_l2([0.0, 0.0], [1, 16]) == pytest.approx(1.25)


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(1234)
    for size in (2, 3, 5, 10, 40):
        for _ in range(20):
            # Small integer ranges guarantee ties.
            x = rng.integers(0, 4, size).astype(float)
            y = rng.integers(0, 4, size).astype(float)
            if np.ptp(x) == 0 or np.ptp(y) == 0:  # scipy warns and returns NaN here
                assert math.isnan(spearman(x, y))
            else:
                assert spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 3), st.integers(-3, 3)), min_size=3, max_size=30))
def test_spearman_matches_scipy_property(pairs):
    x, y = (np.array(v, dtype=float) for v in zip(*pairs))
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        assert math.isnan(spearman(x, y))
    else:
        assert spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-9)


def test_spearman_hand_values_and_degenerate_inputs():
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    # Ranks [1.5, 1.5, 3] and [1, 2, 3]: Pearson = 1.5 / sqrt(1.5 * 2) = sqrt(3) / 2.
    assert spearman([7, 7, 9], [1, 2, 3]) == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(spearman([1.0], [2.0]))
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_margin_report_keys_types_and_values():
    report = margin_report(LOGITS, TARGETS, COUNTS)
    expected_keys = ({"margin_gap", "margin_l2", "margin_majority", "margin_minority"}
                     | {f"margin_{k}" for k in DECOMPOSITION_KEYS}
                     | {f"class_margin_{c}" for c in range(3)})
    assert set(report) == expected_keys
    assert all(type(v) is float for v in report.values())
    assert [report[f"class_margin_{c}"] for c in range(3)] == CLASS_MARGINS
    assert report["margin_majority"] == pytest.approx(0.5)
    assert report["margin_minority"] == pytest.approx(1.0)
    assert report["margin_gap"] == pytest.approx(-0.5)
    assert report["margin_pos_minority"] == pytest.approx(2.0)
    assert report["margin_l2"] == pytest.approx(theoretical_margin_l2(CLASS_MARGINS, COUNTS))


def test_margin_report_missing_class_is_nan():
    report = margin_report(LOGITS[:4], TARGETS[:4], COUNTS)
    assert math.isnan(report["class_margin_2"])
    assert report["margin_gap"] == pytest.approx(-1.0)


def test_margin_report_rejects_counts_of_wrong_length():
    with pytest.raises(ValueError, match="counts"):
        margin_report(LOGITS, TARGETS, [100, 10])
