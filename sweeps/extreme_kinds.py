"""Table 4 of the paper: extremely imbalanced CINIC-10 at ratio 200, long-tailed and step.

Paper setting (``--preset paper``): CINIC-10 at ratio 200, long-tailed and step imbalance (mu = 0.5),
ResNet-18 (200 epochs, x0.01 at 160 and 180), evaluated on CINIC-10's balanced ``valid`` split as
the authors' code does, 5 seeds. The paper reports (top-1 %, mean +- std):

                 Long-tailed 200   Step 200
    ERM          56.22 +- 1.46     52.01 +- 0.52
    DRW          58.97 +- 0.30     57.87 +- 1.01
    LDAM-DRW     63.09 +- 0.54     65.47 +- 0.63
    Mixup-DRW    66.86 +- 0.50     65.61 +- 0.59
    Remix-DRW    66.46 +- 0.51     66.61 +- 0.27
    MAMix-DRW    67.59 +- 0.37     67.34 +- 0.32

(The long-tailed column of the mixing methods repeats Table 3's ratio-200 column.)

``--preset demo``: the embedded digits dataset at ratio 20, both kinds, 2 seeds, 10 epochs.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a file (ray submit uploads the script alone)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pandas as pd  # noqa: E402

from core.reporting import summarise, wide  # noqa: E402
from search_spaces import EXTREME_KINDS_METHODS, EXTREME_KINDS_RATIO, IMBALANCE_KINDS  # noqa: E402
from sweeps import cli  # noqa: E402

PRESETS = {
    "paper": dict(dataset="cinic10", ratio=float(EXTREME_KINDS_RATIO), seeds=5, methods=EXTREME_KINDS_METHODS,
                  kinds=IMBALANCE_KINDS, gpus_per_trial=0.25),
    "demo": dict(cli.DEMO, ratio=20.0, methods=EXTREME_KINDS_METHODS, kinds=IMBALANCE_KINDS),
}


def tables(trials: pd.DataFrame, s) -> list[cli.Table]:
    summary = summarise(trials, ["method", "imbalance"], {"test_acc": "Accuracy"})
    layout = wide(summary, "method", s["methods"], ["imbalance"], "Accuracy")
    layout.columns = ["method", *(f"{kind} {s['ratio']:g}" for kind in layout.columns[1:])]
    return [cli.Table("table4", f"Table 4: top-1 test accuracy (final epoch, mean ± std over seeds) on extremely "
                                f"imbalanced {s['dataset']}, ratio {s['ratio']:g}", layout)]


SWEEP = cli.Sweep("extreme_kinds", __doc__, PRESETS, {"methods": "method", "kinds": "imbalance"}, tables)


def main(argv: list[str] | None = None) -> list[cli.Table]:
    return cli.run(SWEEP, argv)


if __name__ == "__main__":
    cli.entry(main)
