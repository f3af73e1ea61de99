"""Table 1 of the paper: from SMOTE to Mixup (ERM, SMOTE, DRW, M2m, DeepSMOTE, SMOTE-Mix-DRW,
Neighbor-Mix-DRW, Mixup-DRW).

Paper setting (``--preset paper``): CIFAR-10 long-tailed, ratio 100, ResNet-32, 5 seeds. The paper
reports ERM 71.23 +- 0.51, SMOTE 72.68 +- 1.41, DRW 75.08 +- 0.61, M2m 76.15 +- 0.72, DeepSMOTE
76.66 +- 0.57, SMOTE-Mix-DRW 77.46 +- 0.64, Neighbor-Mix-DRW 80.44 +- 0.32, Mixup-DRW 82.11 +- 0.57.
M2m's g and DeepSMOTE's autoencoder are trained once, before the trials (``core.stages``).

``--preset demo``: the embedded digits dataset, ratio 10, 2 seeds, 10 epochs.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a file (ray submit uploads the script alone)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.reporting import summarise  # noqa: E402
from search_spaces import TABLE1_METHODS  # noqa: E402
from sweeps import cli  # noqa: E402

PRESETS = {
    "paper": dict(dataset="cifar10", imbalance="long_tailed", ratio=100.0, seeds=5, methods=TABLE1_METHODS,
                  gpus_per_trial=0.25),
    "demo": dict(cli.DEMO, imbalance="long_tailed", ratio=10.0, methods=TABLE1_METHODS),
}


def tables(trials, s) -> list[cli.Table]:
    summary = summarise(trials, ["method"], {"test_acc": "Accuracy"}).set_index("method")
    layout = summary.loc[[m for m in s["methods"] if m in summary.index], ["Accuracy"]].reset_index()
    return [cli.Table("table1", f"Table 1: SMOTE and its mixing variants, top-1 test accuracy (final epoch, "
                                f"mean ± std over seeds), long-tailed {s['dataset']}", layout)]


SWEEP = cli.Sweep("smote_study", __doc__, PRESETS, {"methods": "method"}, tables)


def main(argv: list[str] | None = None) -> list[cli.Table]:
    return cli.run(SWEEP, argv)


if __name__ == "__main__":
    cli.entry(main)
