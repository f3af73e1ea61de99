"""Tables 2-4 of the paper: Mixup-DRW, Remix-DRW, MAMix-DRW and MAMix-Remix-DRW at extreme ratios.

Paper setting (``--preset paper``): CIFAR-10 long-tailed (``--dataset cinic10`` for Tables 3-4),
ratios 200, 250, 300, 5 seeds. Table 2 reports at ratio 300: Mixup-DRW 73.39 +- 0.47,
Remix-DRW 73.79 +- 0.29, MAMix-DRW 74.85 +- 0.29, MAMix-Remix-DRW 74.87 +- 0.56.

``--preset demo``: the embedded digits dataset at ratios 20 and 40 (its largest class has 120 images),
2 seeds, 10 epochs.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a file (ray submit uploads the script alone)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.reporting import summarise, wide  # noqa: E402
from search_spaces import EXTREME_METHODS, EXTREME_RATIO_GRID  # noqa: E402
from sweeps import cli  # noqa: E402

PRESETS = {
    "paper": dict(dataset="cifar10", imbalance="long_tailed", seeds=5, methods=EXTREME_METHODS,
                  ratios=[float(r) for r in EXTREME_RATIO_GRID], gpus_per_trial=0.25),
    "demo": dict(cli.DEMO, imbalance="long_tailed", methods=EXTREME_METHODS, ratios=[20.0, 40.0]),
}


def tables(trials, s) -> list[cli.Table]:
    summary = summarise(trials, ["method", "ratio"], {"test_acc": "Accuracy"})
    layout = wide(summary, "method", s["methods"], ["ratio"], "Accuracy")
    return [cli.Table("extreme", f"Top-1 test accuracy (final epoch, mean ± std over seeds) on extremely "
                                 f"long-tailed {s['dataset']}, by imbalance ratio", layout)]


SWEEP = cli.Sweep("extreme_imbalance", __doc__, PRESETS, {"methods": "method", "ratios": "ratio"}, tables)


def main(argv: list[str] | None = None) -> list[cli.Table]:
    return cli.run(SWEEP, argv)


if __name__ == "__main__":
    cli.entry(main)
