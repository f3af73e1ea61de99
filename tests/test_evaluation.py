"""core.evaluation.accuracy_report by hand: overall, balanced and per-class accuracy, and the
many/medium/few-shot groups with their exact boundaries (> many_shot, < few_shot)."""

import math

import pytest
import torch

from core.evaluation import accuracy_report


def _logits_for(preds, k):
    """Logits whose argmax is ``preds`` (one-hot scaled, plus noise far smaller than the gap)."""
    g = torch.Generator().manual_seed(0)
    return torch.nn.functional.one_hot(torch.tensor(preds), k).float() * 5 + 0.1 * torch.randn(len(preds), k,
                                                                                                 generator=g)


def test_accuracy_report_by_hand():
    # training counts: class 0 many-shot (> 100), classes 1 and 2 medium (20..100), class 3 few-shot (< 20)
    counts = [200, 100, 20, 19]
    targets = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3]
    preds = [0, 0, 0, 1, 1, 0, 2, 2, 0, 2]  # class 0: 3/4, class 1: 1/2, class 2: 2/2, class 3: 0/2
    report = accuracy_report(_logits_for(preds, 4), torch.tensor(targets), counts, many_shot=100, few_shot=20)
    expected = {"test_acc": 6 / 10, "test_balanced_acc": (0.75 + 0.5 + 1.0 + 0.0) / 4,
                "many_shot_acc": 0.75, "medium_shot_acc": (0.5 + 1.0) / 2, "few_shot_acc": 0.0,
                "class_acc_0": 0.75, "class_acc_1": 0.5, "class_acc_2": 1.0, "class_acc_3": 0.0}
    assert set(report) == set(expected)
    for key, value in expected.items():
        assert report[key] == pytest.approx(value, rel=1e-6, abs=0), key
    assert all(isinstance(v, float) for v in report.values())


def test_accuracy_report_leaves_out_empty_groups_and_absent_classes():
    counts = [500, 300, 150]  # all many-shot
    targets = [0, 0, 1, 1, 1]  # class 2 has no test samples
    preds = [0, 1, 1, 1, 0]
    report = accuracy_report(_logits_for(preds, 3), torch.tensor(targets), counts, many_shot=100, few_shot=20)
    assert "medium_shot_acc" not in report and "few_shot_acc" not in report
    assert math.isnan(report["class_acc_2"])
    assert report["test_acc"] == pytest.approx(3 / 5, rel=1e-6, abs=0)
    assert report["test_balanced_acc"] == pytest.approx((0.5 + 2 / 3) / 2, rel=1e-6, abs=0)
    assert report["many_shot_acc"] == pytest.approx((0.5 + 2 / 3) / 2, rel=1e-6, abs=0)


@pytest.mark.parametrize("many_shot, few_shot", [(100, 20), (7, 3)])
def test_group_boundaries_are_exact(many_shot, few_shot):
    """n_c = many_shot + 1 is many-shot, n_c = many_shot and n_c = few_shot are medium, few_shot - 1 is
    few-shot; every class has its own accuracy, so a class in the wrong group changes a group's mean."""
    counts = [many_shot + 1, many_shot, few_shot, few_shot - 1]
    targets = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
    preds = [0, 0, 0, 0, 1, 1, 1, 0, 2, 2, 0, 0, 3, 0, 0, 0]  # 4/4, 3/4, 2/4, 1/4
    report = accuracy_report(_logits_for(preds, 4), torch.tensor(targets), counts, many_shot, few_shot)
    assert report["many_shot_acc"] == 1.0
    assert report["medium_shot_acc"] == (0.75 + 0.5) / 2
    assert report["few_shot_acc"] == 0.25
    assert report["test_acc"] == report["test_balanced_acc"] == 10 / 16


def test_overall_accuracy_weighs_samples_and_balanced_accuracy_weighs_classes():
    # 8 test samples of class 0, all right; 2 of class 1, both wrong
    targets = [0] * 8 + [1] * 2
    preds = [0] * 8 + [0] * 2
    report = accuracy_report(_logits_for(preds, 2), torch.tensor(targets), [50, 5], many_shot=10, few_shot=1)
    assert report["test_acc"] == pytest.approx(0.8, rel=1e-6, abs=0)
    assert report["test_balanced_acc"] == 0.5
    assert (report["many_shot_acc"], report["medium_shot_acc"]) == (1.0, 0.0)
    assert "few_shot_acc" not in report
    assert [report["class_acc_0"], report["class_acc_1"]] == [1.0, 0.0]
