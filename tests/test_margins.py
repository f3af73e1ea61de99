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


# ----------------------------------------------------------------------------- exact boundaries and bad input

def test_majority_threshold_is_strict_at_n_over_k():
    # N = 60, K = 3, N / K = 20: the class at exactly 20 is minority, 21 would be majority
    assert majority_mask([30, 20, 10]).tolist() == [True, False, False]
    assert majority_mask([29, 21, 10]).tolist() == [True, True, False]
    # a class with no training images is a valid (minority) class
    assert majority_mask([10, 0]).tolist() == [True, False]
    assert majority_mask([5]).tolist() == [False]
    # in float64: N / K = 2^24 + 1/3, which float32 rounds to 2^24 (and 2^24 + 1 with it)
    assert majority_mask([2 ** 24, 2 ** 24, 2 ** 24 + 1]).tolist() == [False, False, True]


def test_margin_gap_side_with_a_single_image():
    # counts [10, 1]: N / K = 5.5, the minority side is one class of weight 1
    assert margin_gap([2.0, 0.5], [10, 1]) == 1.5


def test_class_margin_of_a_class_with_one_sample():
    assert class_margins(torch.tensor([0.25, 1.0, 3.0]), torch.tensor([0, 1, 1]), 2).tolist() == [0.25, 2.0]


def test_two_classes_are_enough_for_sample_margins():
    assert sample_margins(torch.tensor([[1.0, 3.0]]), torch.tensor([1])).tolist() == [2.0]


def test_statistics_are_float64_whatever_the_input_dtype():
    # float32 inputs whose float32 mean rounds: 1 + 2^-24 is 1 in float32
    gamma = torch.tensor([1.0, 2.0 ** -24, 2.0 ** -24, -1.0], dtype=torch.float32)
    targets = torch.tensor([0, 0, 0, 1])
    assert class_margins(gamma, targets, 2)[0].item() == (1.0 + 2.0 ** -23) / 3
    parts = margin_decomposition(gamma, targets, [10, 1])
    assert parts["pos_majority"] == (1.0 + 2.0 ** -23) / 3


def test_l2_error_leaves_out_classes_without_training_images_and_fits_small_margins():
    # a class with n_c = 0 has an infinite tau and no place in the fit
    assert theoretical_margin_l2([1.0, 0.5, 0.3], [1, 16, 0]) == pytest.approx(0.0, abs=1e-30)
    # margins below 1 (sum of squares < 1): the slope is still fitted, tau = [1, 1/2] = 10 * m
    assert theoretical_margin_l2([0.1, 0.05], [1, 16]) == pytest.approx(0.0, abs=1e-30)


def test_spearman_of_tensors_that_require_grad_and_of_empty_input():
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    assert spearman(x, torch.tensor([3.0, 1.0, 2.0], requires_grad=True)) == pytest.approx(-0.5)
    assert margin_gap(torch.tensor([1.0, 2.0], requires_grad=True), [10, 1]) == -1.0
    assert math.isnan(spearman([], []))
    assert math.isnan(spearman([1.0, math.nan, 3.0], [1.0, 2.0, 3.0]))
    assert math.isnan(spearman([1.0, 2.0, 3.0], [1.0, math.nan, 3.0]))


# id: (call, the message it must raise)
BAD_INPUT = {
    "logits-one-class": (lambda: sample_margins(torch.zeros(2, 1), torch.tensor([0, 0])),
                         r"logits: got shape \(2, 1\); allowed: \(B, K\) with K >= 2"),
    "logits-3d": (lambda: sample_margins(torch.zeros(2, 3, 4), torch.tensor([0, 0])),
                  r"logits: got shape \(2, 3, 4\)"),
    "targets-length": (lambda: sample_margins(torch.zeros(3, 4), torch.tensor([0, 0])),
                       r"targets: got shape \(2,\); allowed: \(3,\)"),
    "targets-k": (lambda: sample_margins(torch.zeros(2, 4), torch.tensor([0, 4])),
                  r"targets: labels must lie in \[0, 4\)"),
    "targets-negative": (lambda: sample_margins(torch.zeros(2, 4), torch.tensor([-1, 0])),
                         r"targets: labels must lie in \[0, 4\)"),
    "class-margins-length": (lambda: class_margins(torch.zeros(3), torch.tensor([0, 1]), 2),
                             r"margins/targets: got shapes \(3,\) and \(2,\); allowed: equal 1-D shapes"),
    "class-margins-2d": (lambda: class_margins(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long), 2),
                         r"margins/targets: got shapes \(2, 2\) and \(2, 2\)"),
    "class-margins-k": (lambda: class_margins(torch.zeros(2), torch.tensor([0, 2]), 2),
                        r"targets: labels must lie in \[0, 2\)"),
    "class-margins-negative": (lambda: class_margins(torch.zeros(2), torch.tensor([-1, 0]), 2),
                               r"targets: labels must lie in \[0, 2\)"),
    "decomposition-length": (lambda: margin_decomposition(torch.zeros(3), torch.tensor([0, 1]), COUNTS),
                             r"margins/targets: got shapes \(3,\) and \(2,\); allowed: equal 1-D shapes"),
    "decomposition-2d": (lambda: margin_decomposition(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long), COUNTS),
                         r"margins/targets: got shapes \(2, 2\) and \(2, 2\)"),
    "decomposition-k": (lambda: margin_decomposition(torch.zeros(2), torch.tensor([0, 3]), COUNTS),
                        r"targets: labels must lie in \[0, 3\)"),
    "decomposition-negative": (lambda: margin_decomposition(torch.zeros(2), torch.tensor([-1, 0]), COUNTS),
                               r"targets: labels must lie in \[0, 3\)"),
    "counts-empty": (lambda: majority_mask([]),
                     "counts: got an empty sequence; allowed: one training count per class"),
    "counts-2d": (lambda: majority_mask([[1, 2]]), r"counts: got shape \(1, 2\); allowed: a 1-D sequence"),
    "counts-negative": (lambda: majority_mask([3.0, -1.0]),
                        r"counts: got \[3.0, -1.0\]; allowed: finite numbers >= 0"),
    "counts-infinite": (lambda: majority_mask([3.0, math.inf]),
                        r"counts: got \[3.0, inf\]; allowed: finite numbers >= 0"),
    "gap-2d": (lambda: margin_gap([[1.0]], [1]), r"class_margins: got shape \(1, 1\); allowed: a 1-D sequence"),
    "gap-length": (lambda: margin_gap([1.0], [1, 2]), "class_margins/counts: got lengths 1 and 2; allowed: equal"),
    "l2-2d": (lambda: theoretical_margin_l2([[1.0]], [1]),
              r"class_margins: got shape \(1, 1\); allowed: a 1-D sequence"),
    "l2-length": (lambda: theoretical_margin_l2([1.0], [1, 2]),
                  "class_margins/counts: got lengths 1 and 2; allowed: equal"),
    "spearman-2d": (lambda: spearman([[1.0, 2.0]], [[1.0, 2.0]]),
                    r"x/y: got shapes \(1, 2\) and \(1, 2\); allowed: equal 1-D shapes"),
    "spearman-length": (lambda: spearman([1.0, 2.0], [1.0, 2.0, 3.0]), r"x/y: got shapes \(2,\) and \(3,\)"),
    "report-counts": (lambda: margin_report(LOGITS, TARGETS, [100, 10]),
                      r"counts: got 2 classes for logits of shape \(6, 3\)"),
    "report-1d-logits": (lambda: margin_report(LOGITS[0], TARGETS, COUNTS),
                         r"counts: got 3 classes for logits of shape \(3,\)"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_names_the_argument_and_what_is_allowed(case):
    call, message = BAD_INPUT[case]
    with pytest.raises(ValueError, match="^" + message):  # the message starts with the argument's name
        call()


def test_missing_statistics_are_math_nan_so_reports_of_one_run_compare_equal():
    """Same inputs, equal report dicts (the training tests compare whole reports): a NaN that a report
    stores directly is the one ``math.nan`` object, since NaN != NaN for two distinct float objects."""
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.0, 0.0, 1.0]])
    targets = torch.tensor([0, 1, 2])  # gamma = 3 (majority), -3 and 1 (minority)
    first, second = margin_report(logits, targets, COUNTS), margin_report(logits, targets, COUNTS)
    assert first["margin_neg_majority"] is math.nan  # the majority (class 0) has no gamma < 0 part
    assert first == second
    # a side whose classes have no training images weighs nothing
    assert margin_report(logits, targets, [100, 0, 0])["margin_minority"] is math.nan
