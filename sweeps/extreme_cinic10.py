"""Table 3 of the paper: the mixing DRW methods on extremely long-tailed CINIC-10.

Paper setting (``--preset paper``): CINIC-10 long-tailed, ratios 200, 250, 300, ResNet-18 (200
epochs, x0.01 at 160 and 180), evaluated on CINIC-10's balanced ``valid`` split as the authors' code
does, 5 seeds, Mixup-DRW, Remix-DRW, MAMix-DRW. The paper reports (top-1 %, mean +- std):

    Imbalance ratio    200             250             300
    Mixup-DRW          66.86 +- 0.50   65.24 +- 0.50   63.91 +- 0.39
    Remix-DRW          66.46 +- 0.51   64.76 +- 0.47   63.25 +- 0.17
    MAMix-DRW          67.59 +- 0.37   66.54 +- 0.36   65.27 +- 0.37

``--preset demo``: the embedded digits dataset at ratios 20 and 40, 2 seeds, 10 epochs.

    python sweeps/extreme_cinic10.py --preset paper --data-root /abs/data   # data-root/cinic10/{train,valid}
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a file (ray submit uploads the script alone)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pandas as pd  # noqa: E402

from search_spaces import EXTREME_CINIC10_METHODS, EXTREME_RATIO_GRID  # noqa: E402
from sweeps import cli  # noqa: E402
from sweeps.extreme_imbalance import accuracy_by_ratio  # noqa: E402

PRESETS = {
    "paper": dict(dataset="cinic10", imbalance="long_tailed", seeds=5, methods=EXTREME_CINIC10_METHODS,
                  ratios=[float(r) for r in EXTREME_RATIO_GRID], gpus_per_trial=0.25),
    "demo": dict(cli.DEMO, imbalance="long_tailed", methods=EXTREME_CINIC10_METHODS, ratios=[20.0, 40.0]),
}


def tables(trials: pd.DataFrame, s) -> list[cli.Table]:
    return [accuracy_by_ratio(trials, s, "table3", "Table 3")]


SWEEP = cli.Sweep("extreme_cinic10", __doc__, PRESETS, {"methods": "method", "ratios": "ratio"}, tables)


def main(argv: list[str] | None = None) -> list[cli.Table]:
    return cli.run(SWEEP, argv)


if __name__ == "__main__":
    cli.entry(main)
