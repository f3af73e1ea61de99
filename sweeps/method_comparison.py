"""Tables 9, 10, 11, 13, 14 of the paper: methods x imbalance kind x ratio, selected by ``--dataset``.

Paper setting (``--preset paper``): long-tailed and step imbalance (mu = 0.5) at ratios 100, 50, 10,
5 seeds, the dataset's schedule from appendix A (CIFAR-10/100 and SVHN: ResNet-32, 200 epochs;
CINIC-10: ResNet-18; Tiny-ImageNet: ResNet-18, 120 epochs). Table 9 (CIFAR-10, long-tailed 100)
reports e.g. ERM 71.23 +- 0.51, LDAM-DRW 77.75 +- 0.39, Mixup-DRW 82.11 +- 0.57, MAMix-DRW 82.29 +- 0.60.

``--preset demo``: ERM, DRW, Mixup-DRW, MAMix-DRW on the embedded digits dataset, both kinds at ratio 10,
2 seeds, 10 epochs: a few minutes on 2 CPU cores.

    python sweeps/method_comparison.py --preset paper --dataset cifar100 --data-root /abs/data
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a file (ray submit uploads the script alone)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.reporting import summarise, wide  # noqa: E402
from search_spaces import COMPARISON_METHODS, IMBALANCE_KINDS, RATIO_GRID  # noqa: E402
from sweeps import cli  # noqa: E402

PRESETS = {
    "paper": dict(dataset="cifar10", seeds=5, methods=COMPARISON_METHODS, kinds=IMBALANCE_KINDS,
                  ratios=[float(r) for r in RATIO_GRID], gpus_per_trial=0.25),
    "demo": dict(cli.DEMO, methods=["erm", "drw", "mixup_drw", "mamix_drw"], kinds=IMBALANCE_KINDS, ratios=[10.0]),
}


def tables(trials, s) -> list[cli.Table]:
    summary = summarise(trials, ["method", "imbalance", "ratio"], {"test_acc": "Accuracy"})
    layout = wide(summary, "method", s["methods"], ["imbalance", "ratio"], "Accuracy")
    return [cli.Table("methods", f"Top-1 test accuracy (final epoch, mean ± std over seeds) on imbalanced "
                                 f"{s['dataset']}", layout)]


SWEEP = cli.Sweep("method_comparison", __doc__, PRESETS,
                  {"methods": "method", "kinds": "imbalance", "ratios": "ratio"}, tables)


def main(argv: list[str] | None = None) -> list[cli.Table]:
    return cli.run(SWEEP, argv)


if __name__ == "__main__":
    cli.entry(main)
