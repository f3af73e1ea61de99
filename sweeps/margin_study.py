"""The paper's margin analysis (section 5.2): Tables 5-8 and 15, and Fig. 3.

Paper setting (``--preset paper``): CIFAR-10, ratio 100, ResNet-32, long-tailed and step, 5 seeds,
ERM, DRW, LDAM-DRW, Mixup-DRW, Remix-DRW, MAMix-DRW. The paper reports margin gaps (Table 5,
long-tailed / step) ERM 7.645 / 8.515, DRW 6.089 / 7.086, LDAM-DRW 0.171 / 0.056, Mixup-DRW
-0.978 / -0.481, Remix-DRW -1.598 / -1.870, MAMix-DRW -1.136 / -1.798; L2 errors (Table 8) ERM 0.435,
LDAM-DRW 0.195, Mixup-DRW 0.0133, Remix-DRW 0.0179, MAMix-DRW 0.0126; and a Spearman rank
correlation of -0.820 between margin gap and accuracy over the long-tailed trials (Fig. 3); the
Fig. 3 table gives that value and, labelled, the one over long-tailed and step trials pooled.

Margins are computed on the balanced test set from the final epoch's logits (``core.margins``).
``--preset demo``: the embedded digits dataset at ratio 10, 2 seeds, 10 epochs.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a file (ray submit uploads the script alone)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pandas as pd  # noqa: E402

from core.margins import spearman  # noqa: E402
from core.reporting import scatter_plot, summarise, wide  # noqa: E402
from search_spaces import IMBALANCE_KINDS, MARGIN_METHODS  # noqa: E402
from sweeps import cli  # noqa: E402

PRESETS = {
    "paper": dict(dataset="cifar10", ratio=100.0, seeds=5, methods=MARGIN_METHODS, kinds=IMBALANCE_KINDS,
                  gpus_per_trial=0.25),
    "demo": dict(cli.DEMO, ratio=10.0, methods=MARGIN_METHODS, kinds=IMBALANCE_KINDS),
}
DECOMPOSITION = {"margin_neg_majority": "Majority γ<0", "margin_pos_majority": "Majority γ≥0",
                 "margin_neg_minority": "Minority γ<0", "margin_pos_minority": "Minority γ≥0"}


def tables(trials: pd.DataFrame, s) -> list[cli.Table]:
    where = f"{s['dataset']}, ratio {s['ratio']:g}, mean ± std over seeds"
    methods = s["methods"]
    gap = wide(summarise(trials, ["method", "imbalance"], {"margin_gap": "Margin gap"}), "method", methods,
               ["imbalance"], "Margin gap")
    long_tailed = trials[trials["imbalance"] == "long_tailed"]
    decomposition = summarise(long_tailed, ["method"], DECOMPOSITION)
    l2 = summarise(long_tailed, ["method"], {"margin_l2": "L2 error"})
    classes = sorted((c for c in trials.columns if c.startswith("class_acc_")), key=lambda c: int(c.rsplit("_", 1)[1]))
    per_class = long_tailed.groupby("method")[classes].mean().round(2)
    per_class.columns = [f"C{c.rsplit('_', 1)[1]}" for c in classes]
    fig3, scatter = spearman_table(trials, long_tailed, s)
    order = [m for m in methods if m in set(long_tailed["method"])]
    return [
        cli.Table("table5_margin_gap", f"Table 5: margin gap ({where})", gap),
        cli.Table("table7_decomposition", f"Table 7: margin decomposition, long-tailed ({where})",
                  _ordered(decomposition, order)[["method", *DECOMPOSITION.values()]]),
        cli.Table("table8_l2", f"Table 8: L2 error to the theoretical margins n^(-1/4), long-tailed ({where})",
                  _ordered(l2, order)[["method", "L2 error"]]),
        cli.Table("table15_per_class", f"Table 15: per-class test accuracy, long-tailed ({where.replace(' ± std', '')})",
                  per_class.loc[order].reset_index()),
        cli.Table("fig3_spearman", f"Fig. 3: Spearman rank correlation between margin gap and final-epoch accuracy "
                                   f"across trials ({s['dataset']}, ratio {s['ratio']:g})",
                  fig3, {"fig3_margin_gap_vs_accuracy.png": scatter}),
    ]


def spearman_table(trials: pd.DataFrame, long_tailed: pd.DataFrame, s) -> tuple[pd.DataFrame, bytes]:
    """Fig. 3: the rank correlation over the long-tailed trials, as in the paper, and beside it, labelled,
    over all trials (long-tailed and step pooled); the scatter plot shows the first row's trials. A grid
    of one kind has one row, over its trials (a row of no trial would print nan)."""
    def rho(frame: pd.DataFrame) -> float:
        return round(spearman(frame["margin_gap"].to_numpy(), frame["test_acc"].to_numpy()), 4)

    rows = [("long-tailed (the paper's Fig. 3)", "long-tailed", long_tailed)] if len(long_tailed) else []
    if len(trials) > len(long_tailed):
        rows.append(("long-tailed and step, pooled", "pooled", trials) if rows else ("step", "step", trials))
    table = pd.DataFrame({"trials": [label for label, _, _ in rows], "n": [len(f) for _, _, f in rows],
                          "spearman_rho": [rho(f) for _, _, f in rows]})
    _, kind, first = rows[0]
    plot = scatter_plot(first["margin_gap"], first["test_acc"], "margin gap", "test accuracy (final epoch)",
                        f"Spearman rho = {table['spearman_rho'][0]:.3f} over {len(first)} {kind} trials "
                        f"({s['dataset']}, ratio {s['ratio']:g})")
    return table, plot


def _ordered(summary: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    return summary.set_index("method").loc[order].reset_index()


SWEEP = cli.Sweep("margin_study", __doc__, PRESETS, {"methods": "method", "kinds": "imbalance"}, tables)


def main(argv: list[str] | None = None) -> list[cli.Table]:
    return cli.run(SWEEP, argv)


if __name__ == "__main__":
    cli.entry(main)
