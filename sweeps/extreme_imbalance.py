"""Tables 2 and 6 of the paper: the mixing DRW methods on extremely long-tailed CIFAR-10.

Paper setting (``--preset paper``): CIFAR-10 long-tailed, ratios 200, 250, 300, ResNet-32, 5 seeds,
Mixup-DRW, Remix-DRW, MAMix-DRW and MAMix-Remix-DRW. Table 2 reports (top-1 %, mean +- std):

    Imbalance ratio    200             250             300
    Mixup-DRW          77.02 +- 0.53   76.33 +- 0.78   73.39 +- 0.47
    Remix-DRW          77.23 +- 0.61   75.39 +- 0.72   73.79 +- 0.29
    MAMix-DRW          78.08 +- 0.23   76.34 +- 0.71   74.85 +- 0.29
    MAMix-Remix-DRW    78.01 +- 0.23   76.25 +- 0.63   74.87 +- 0.56

Table 6 (margin gap at ratio 300, the same trials): Remix-DRW -0.101, MAMix-DRW -0.487. It is
built from the trials at the largest ratio of the grid.

``--preset demo``: the embedded digits dataset at ratios 20 and 40 (its largest class has 120 images),
2 seeds, 10 epochs. CINIC-10 has its own scripts: ``extreme_cinic10.py`` (Table 3) and
``extreme_kinds.py`` (Table 4).
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a file (ray submit uploads the script alone)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pandas as pd  # noqa: E402

from core.reporting import summarise, wide  # noqa: E402
from search_spaces import EXTREME_METHODS, EXTREME_RATIO_GRID, TABLE6_METHODS  # noqa: E402
from sweeps import cli  # noqa: E402

PRESETS = {
    "paper": dict(dataset="cifar10", imbalance="long_tailed", seeds=5, methods=EXTREME_METHODS,
                  ratios=[float(r) for r in EXTREME_RATIO_GRID], gpus_per_trial=0.25),
    "demo": dict(cli.DEMO, imbalance="long_tailed", methods=EXTREME_METHODS, ratios=[20.0, 40.0]),
}


def accuracy_by_ratio(trials: pd.DataFrame, s, stem: str, table: str) -> cli.Table:
    """The layout of Tables 2 and 3: one row per method, one column per imbalance ratio."""
    summary = summarise(trials, ["method", "ratio"], {"test_acc": "Accuracy"})
    layout = wide(summary, "method", s["methods"], ["ratio"], "Accuracy")
    return cli.Table(stem, f"{table}: top-1 test accuracy (final epoch, mean ± std over seeds) on extremely "
                           f"long-tailed {s['dataset']}, by imbalance ratio", layout)


def tables(trials: pd.DataFrame, s) -> list[cli.Table]:
    ratio = max(s["ratios"])
    at_ratio = trials[(trials["ratio"] == ratio) & trials["method"].isin(TABLE6_METHODS)]
    gap = summarise(at_ratio, ["method"], {"margin_gap": "Margin gap"}).set_index("method")
    table6 = gap.loc[[m for m in TABLE6_METHODS if m in gap.index], ["Margin gap"]].reset_index()
    return [accuracy_by_ratio(trials, s, "table2", "Table 2"),
            cli.Table("table6_margin_gap", f"Table 6: margin gap on long-tailed {s['dataset']}, ratio {ratio:g} "
                                           f"(mean ± std over seeds)", table6)]


SWEEP = cli.Sweep("extreme_imbalance", __doc__, PRESETS, {"methods": "method", "ratios": "ratio"}, tables)


def main(argv: list[str] | None = None) -> list[cli.Table]:
    return cli.run(SWEEP, argv)


if __name__ == "__main__":
    cli.entry(main)
