"""The paper's fixed grids and the method list of each table.

These are swept exhaustively (``tune.grid_search`` with the default searcher), not searched by
Optuna: they reproduce the paper's tables cell by cell. Method names are keys of
``core.methods.METHODS``, the baselines M2m and DeepSMOTE included.
"""

from __future__ import annotations

# Table 12: sensitivity of MAMix-DRW to omega, long-tailed CIFAR-10, rho = 300.
OMEGA_GRID = [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]

# Tables 9-11 and 13: imbalance ratios rho = n_max / n_min (Table 14, Tiny-ImageNet, uses 100 and 10).
RATIO_GRID = [100, 50, 10]

# Tables 2-4: extremely imbalanced settings (Table 4 uses 200 only, Table 12 uses 300).
EXTREME_RATIO_GRID = [200, 250, 300]

# Tables 4, 5, 9-11, 13, 14: the two imbalance profiles (values of TrainConfig.imbalance).
IMBALANCE_KINDS = ["long_tailed", "step"]

# The paper reports mean +- std over 5 runs with different seeds; the seed values are not given.
PAPER_SEEDS = [0, 1, 2, 3, 4]

# Table 1: SMOTE and its two mixing variants beside the baselines, long-tailed CIFAR-10, rho = 100.
TABLE1_METHODS = ["erm", "smote", "drw", "m2m", "deepsmote", "smote_mix_drw", "neighbor_mix_drw", "mixup_drw"]

# Table 2 (CIFAR-10, long-tailed 200/250/300).
EXTREME_METHODS = ["mixup_drw", "remix_drw", "mamix_drw", "mamix_remix_drw"]

# Table 3 (CINIC-10, long-tailed 200/250/300): Table 2's methods without MAMix-Remix.
EXTREME_CINIC10_METHODS = ["mixup_drw", "remix_drw", "mamix_drw"]

# Table 4 (CINIC-10, ratio 200, long-tailed and step): the baselines and the three mixing DRW methods.
EXTREME_KINDS_METHODS = ["erm", "drw", "ldam_drw", "mixup_drw", "remix_drw", "mamix_drw"]
EXTREME_KINDS_RATIO = 200

# Table 6 (CIFAR-10, long-tailed 300): margin gap of the two label-adjusting mixing methods.
TABLE6_METHODS = ["remix_drw", "mamix_drw"]

# Tables 9 (CIFAR-10), 10 (CIFAR-100) and 13 (SVHN), in Table 9's row order.
COMPARISON_METHODS = ["erm", "mixup", "remix", "mamix", "ldam", "drw", "m2m", "deepsmote", "ldam_drw",
                      "mixup_drw", "remix_drw", "mamix_drw"]

# The rows of each dataset's table: CINIC-10 (Table 11) and Tiny-ImageNet (Table 14) report a subset.
TABLE_METHODS = {
    "cifar10": COMPARISON_METHODS,
    "cifar100": COMPARISON_METHODS,
    "svhn": COMPARISON_METHODS,
    "cinic10": ["erm", "drw", "m2m", "ldam_drw", "mixup_drw", "remix_drw", "mamix_drw"],
    "tiny_imagenet": ["erm", "drw", "m2m", "ldam", "ldam_drw", "mixup_drw", "remix_drw", "mamix_drw"],
}

# Table 14 (Tiny-ImageNet) reports ratios 100 and 10 only.
TINY_RATIO_GRID = [100, 10]

# Table 5: margin gap, CIFAR-10, rho = 100, long-tailed and step.
MARGIN_METHODS = ["erm", "drw", "ldam_drw", "mixup_drw", "remix_drw", "mamix_drw"]
