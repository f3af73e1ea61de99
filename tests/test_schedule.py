"""The schedule of a run: the learning rate of every epoch and the epoch re-weighting starts."""

import pytest

from core.config import TrainConfig
from core.schedule import ClassWeights, learning_rate


def test_learning_rate_schedule_follows_the_paper():
    cfg = TrainConfig(dataset="cifar10")  # 0.1, 5 warm-up epochs, x0.01 at 160 and 180
    assert [round(learning_rate(cfg, e), 6) for e in (0, 4, 5, 159, 160, 179, 180, 199)] == \
        [0.02, 0.1, 0.1, 0.1, 0.001, 0.001, 0.00001, 0.00001]


def test_learning_rate_boundaries_are_exact():
    cfg = TrainConfig(dataset="digits", lr=0.4, warmup_epochs=4, milestones=[6, 8], lr_factor=0.5, epochs=10,
                      drw_epoch=6)
    # warm-up: (epoch + 1) / warmup_epochs of lr, full lr at the warm-up's end; a milestone applies at its epoch
    assert [learning_rate(cfg, e) for e in range(10)] == [0.1, 0.2, 0.30000000000000004, 0.4, 0.4, 0.4, 0.2, 0.2,
                                                          0.1, 0.1]
    assert learning_rate(TrainConfig(dataset="digits", warmup_epochs=0, milestones=[], epochs=3, drw_epoch=1), 0) == \
        pytest.approx(0.05)


def test_drw_weights_start_at_the_drw_epoch_and_cb_at_once():
    counts = [100, 10]
    assert [ClassWeights("drw", counts, 0.99, 3).at(e, "cpu") is None for e in (0, 2, 3, 4)] == [True, True, False, False]
    assert ClassWeights("cb", counts, 0.99, 3).at(0, "cpu") is not None
    assert ClassWeights("none", counts, 0.99, 0).at(5, "cpu") is None
    w = ClassWeights("drw", counts, 0.99, 0).at(0, "cpu")
    assert w.sum().item() == pytest.approx(2.0) and w[1] > w[0]
