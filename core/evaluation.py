"""Evaluation on the balanced test (and validation) set: one forward pass, then every metric from its logits.

The forward pass runs in fp32 whatever precision training uses (``TrainConfig.amp``): bf16 would round
logits near 10 to steps of 0.0625, tying close classes (``argmax`` then picks the lower label, a head
class on CIFAR) and coarsening the margins of eq. 11. Metrics are computed on the device and read back in
a few transfers per member and split, none per training step.
"""

from __future__ import annotations

import torch
from core.data import DeviceData
from core.fused import FusedNetwork


@torch.no_grad()
def eval_logits(net: FusedNetwork, data: DeviceData, split: str, batch_size: int) -> torch.Tensor:
    """Every member's fp32 logits (K, N, C) on the whole ``test`` or ``val`` set, in eval mode (BatchNorm
    running statistics)."""
    net.eval()
    out = []
    for start in range(0, len(getattr(data, f"y_{split}")), batch_size):
        x = data.eval_inputs(split, slice(start, start + batch_size))
        with torch.autocast(x.device.type, enabled=False):
            out.append(net.forward_shared(x))
    net.train()
    return torch.cat(out, dim=1)


def accuracy_report(logits: torch.Tensor, targets: torch.Tensor, counts: list[int], many_shot: int,
                    few_shot: int) -> dict[str, float]:
    """Top-1 accuracy, balanced accuracy (mean per-class recall), per-class accuracy, and the mean
    per-class accuracy of the many-shot (n_c > many_shot), medium and few-shot (n_c < few_shot) groups.

    Groups without classes are left out; a class without test samples gets NaN and is skipped in means.
    """
    k = logits.shape[1]
    correct = (logits.argmax(1) == targets).float()
    hits = torch.zeros(k, device=logits.device).index_add_(0, targets, correct)
    seen = torch.bincount(targets, minlength=k).float()
    class_acc = hits / seen  # NaN for a class absent from the test set
    groups = {"many_shot_acc": [c for c, n in enumerate(counts) if n > many_shot],
              "medium_shot_acc": [c for c, n in enumerate(counts) if few_shot <= n <= many_shot],
              "few_shot_acc": [c for c, n in enumerate(counts) if n < few_shot]}
    values = {"test_acc": correct.mean(), "test_balanced_acc": class_acc.nanmean()}
    values.update({name: class_acc[members].nanmean() for name, members in groups.items() if members})
    stacked = torch.stack(list(values.values()) + list(class_acc)).tolist()  # the one device->host transfer
    report = dict(zip(values, stacked[: len(values)]))
    report.update({f"class_acc_{c}": v for c, v in enumerate(stacked[len(values):])})
    return report
