"""Tables 9, 10, 11, 13, 14 of the paper: methods x imbalance kind x ratio, one preset per table, and
the cost of each method beside MAMix-DRW's.

Paper settings: long-tailed and step imbalance (mu = 0.5) at ratios 100, 50, 10 (Table 14: 100, 10),
5 seeds, the dataset's schedule from appendix A, and the rows that table has: ``--preset paper`` is
Table 9 (CIFAR-10, ResNet-32, 200 epochs), ``table10`` CIFAR-100, ``table11`` CINIC-10 (ResNet-18; no
DeepSMOTE row), ``table13`` SVHN, ``table14`` Tiny-ImageNet (ResNet-18, 120 epochs). Table 9
(long-tailed 100) reports e.g. ERM 71.23 +- 0.51, M2m 76.15 +- 0.72, DeepSMOTE 76.66 +- 0.57,
LDAM-DRW 77.75 +- 0.39, Mixup-DRW 82.11 +- 0.57, MAMix-DRW 82.29 +- 0.60.

M2m and DeepSMOTE need stages (M2m's g, DeepSMOTE's autoencoder; ``core.stages``): the sweep trains
each once per training set before the trials, logs it to MLflow as a run tagged ``stage``, and finds
it there when re-run. The cost table shows each method's wall time per trial, the one-off time of
its stages, and its training images per second; the paper argues both baselines are slower.

``--preset demo``: ERM, DRW, Mixup-DRW, MAMix-DRW, M2m and DeepSMOTE on the embedded digits dataset,
both kinds at ratio 10, 2 seeds, 10 epochs: a few minutes on 2 CPU cores.

    python sweeps/method_comparison.py --preset table10 --data-root /abs/data
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a file (ray submit uploads the script alone)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pandas as pd  # noqa: E402

from core.reporting import summarise, wide  # noqa: E402
from search_spaces import IMBALANCE_KINDS, RATIO_GRID, TABLE_METHODS, TINY_RATIO_GRID  # noqa: E402
from sweeps import cli  # noqa: E402


def paper(dataset: str, ratios: list[int] = RATIO_GRID) -> dict:
    return dict(dataset=dataset, seeds=5, methods=TABLE_METHODS[dataset], kinds=IMBALANCE_KINDS,
                ratios=[float(r) for r in ratios], gpus_per_trial=0.25)


PRESETS = {
    "paper": paper("cifar10"),  # Table 9
    "table10": paper("cifar100"),
    "table11": paper("cinic10"),
    "table13": paper("svhn"),
    "table14": paper("tiny_imagenet", TINY_RATIO_GRID),
    "demo": dict(cli.DEMO, methods=["erm", "drw", "mixup_drw", "mamix_drw", "m2m", "deepsmote"],
                 kinds=IMBALANCE_KINDS, ratios=[10.0]),
}
REFERENCE = "mamix_drw"  # the method whose cost the others are compared with
COST_COLUMNS = ("wall_s", "stage_s", "train_images")


def cost_table(trials: pd.DataFrame, methods: list[str]) -> cli.Table:
    """Mean per trial of each method: its own wall time, the one-off time of the stages it needs
    (trained once and shared by every trial of the same training set), training images per second of
    its own time, and (trial + stages) relative to MAMix-DRW's trial."""
    rows = trials.assign(img_s=trials["train_images"] / trials["wall_s"],
                         total_s=trials["wall_s"] + trials["stage_s"].fillna(0.0))
    means = rows.groupby("method")[["wall_s", "stage_s", "total_s", "img_s"]].mean()
    means = means.loc[[m for m in methods if m in means.index]]
    reference = means["wall_s"].get(REFERENCE, float("nan"))
    frame = pd.DataFrame({
        "method": means.index,
        "trial s": means["wall_s"].map("{:.1f}".format).values,
        "stages s": means["stage_s"].map("{:.1f}".format).values,
        "img/s": means["img_s"].map("{:.0f}".format).values,
        f"(trial + stages) / {REFERENCE} trial": (means["total_s"] / reference).map("{:.2f}".format).values,
    })
    return cli.Table("cost", "Cost per trial (mean over trials): wall time of the trial, one-off time of the "
                             "stages it needs, training images per second", frame)


def tables(trials, s) -> list[cli.Table]:
    summary = summarise(trials, ["method", "imbalance", "ratio"], {"test_acc": "Accuracy"})
    layout = wide(summary, "method", s["methods"], ["imbalance", "ratio"], "Accuracy")
    found = [cli.Table("methods", f"Top-1 test accuracy (final epoch, mean ± std over seeds) on imbalanced "
                                  f"{s['dataset']}", layout)]
    if set(COST_COLUMNS) <= set(trials.columns):  # runs logged before costs were measured lack them
        found.append(cost_table(trials, s["methods"]))
    return found


SWEEP = cli.Sweep("method_comparison", __doc__, PRESETS,
                  {"methods": "method", "kinds": "imbalance", "ratios": "ratio"}, tables)


def main(argv: list[str] | None = None) -> list[cli.Table]:
    return cli.run(SWEEP, argv)


if __name__ == "__main__":
    cli.entry(main)
