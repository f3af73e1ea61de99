"""Replays: a pack's final weights evaluated after one more epoch of forward passes, once per way of
forwarding, to see what BatchNorm's running statistics alone do to the evaluation.

In train mode BatchNorm normalises each batch with the batch's own statistics, so a forward pass changes
no weight, only the running statistics that evaluation normalises with (momentum 0.1: an epoch of 84
steps leaves 0.9 ** 84, about 1e-4, of the old ones). The authors' Mixup-family trainers forward the
clean batch before the mixed one each step (``TrainConfig.clean_forward``); this platform forwards the
mixed batch only. Replaying an epoch at learning rate 0 each way, from the same weights and on the same
draws, tells the two apart without training twice (``REPLAYS``).

Why repeats, and the best of them: the paper's tables print the authors' ``best_acc1``, the best test
accuracy over all epochs. In Table 12's last 20 epochs the learning rate is 1e-5, and an epoch there
changes the evaluation only through those statistics ("mixed, trained", one more epoch of real steps,
against "mixed" on the same draws tells). So each repeat of "clean, then mixed" is one epoch at rest as
the authors evaluated it, and the best of n repeats is what their ``best_acc1`` saw over n such epochs:
a lower bound on the best over all 200, selected on the test set.

Used by ``bench/bn_statistics.py`` (one cell trained on the CPU, replayed) and ``bench/table12_fused.py
--replays`` (every member of a GPU window, replayed in the time its window has left).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import torch

from core.config import TrainConfig
from core.mixing import MixedBatch
from core.train import (Metrics, Pack, batch_bounds, draw_epoch, epoch_weights, evaluate, make_batch, restore,
                        set_up, train_step, update_batchnorm)

# What each step of the replayed epoch does with its batch. The forwarding ways touch BatchNorm's running
# statistics only; "mixed, trained" is one more epoch of training at the learning rate training ended with
# (the optimiser's state): the same forwards as "mixed", plus what the steps do to the weights.
REPLAYS: dict[str, Callable[[Pack, MixedBatch, torch.Tensor], object]] = {
    "mixed": lambda pack, batch, weights: update_batchnorm(pack, batch.x),  # this platform's training
    # the authors' trainers (clean_forward)
    "clean, then mixed": lambda pack, batch, weights: [update_batchnorm(pack, x) for x in (batch.x_i, batch.x)],
    "clean": lambda pack, batch, weights: update_batchnorm(pack, batch.x_i),  # the clean training images alone
    "mixed, trained": train_step,
}
FORWARDING = ("mixed", "clean, then mixed", "clean")  # the ways that change no weight
AUTHORS = "clean, then mixed"  # the way the authors' trainers leave the statistics they evaluate with


def replays(cfgs: Sequence[TrainConfig], state: dict[str, Any], repeats: int, names: Sequence[str] = FORWARDING,
            deadline: float | None = None) -> list[dict[str, list[Metrics]]]:
    """Each member's test metrics as trained and after one more epoch of each replay (``names``), once per
    repeat: repeat r uses the r-th epoch of draws after those training made (from the generators as it
    left them), the same draws for every replay and member. ``state`` is a ``train_pack`` state of
    ``cfgs``; members it failed get no rows. Repeats stop before one that, at the last one's pace, would
    end past ``deadline`` (``time.time()``), with every replay run as often as the others."""
    # Forward passes only: a compiled pack would compile graphs for them first.
    pack = set_up([dataclasses.replace(c, compile=False) for c in cfgs])
    restore(pack, state)
    state = {**state, "configs": [c.to_dict() for c in pack.cfgs]}  # checked once: no warning per restore
    members = [m for m in range(pack.size) if m not in state["failures"]]
    out: list[dict[str, list[Metrics]]] = [{} for _ in cfgs]
    for m, metrics in evaluate(pack, members).items():
        out[m] = {"as trained": [metrics], **{name: [] for name in names}}
    epochs = [draw_epoch(pack, state["epoch"]) for _ in range(repeats)]  # no replay draws: drawn once for all
    weights = epoch_weights(pack, state["epoch"])
    took = 0.0
    for draws in epochs:
        if deadline is not None and time.time() + took > deadline:
            break
        started = time.time()
        for name in names:
            restore(pack, state)
            for step, (start, end) in enumerate(batch_bounds(draws.order.shape[1], pack.cfg.batch_size)):
                REPLAYS[name](pack, make_batch(pack, draws, step, start, end), weights)
            for m, metrics in evaluate(pack, members).items():
                out[m][name].append(metrics)
        took = time.time() - started
    return out
