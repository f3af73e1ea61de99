"""Search spaces: pure Optuna define-by-run functions and the paper's fixed grids.

Nothing here imports Ray, Optuna or MLflow or does work at import time; sweeps pass these to
``OptunaSearch(space=..., metric=..., mode=...)`` or to ``tune.grid_search``.
"""

from search_spaces.grids import (
    COMPARISON_METHODS,
    EXTREME_CINIC10_METHODS,
    EXTREME_KINDS_METHODS,
    EXTREME_KINDS_RATIO,
    EXTREME_METHODS,
    EXTREME_RATIO_GRID,
    IMBALANCE_KINDS,
    MARGIN_METHODS,
    OMEGA_GRID,
    PAPER_SEEDS,
    RATIO_GRID,
    TABLE1_METHODS,
    TABLE6_METHODS,
    TABLE_METHODS,
    TINY_RATIO_GRID,
)
from search_spaces.spaces import (
    ALPHA_RANGE,
    KAPPA_RANGE,
    OMEGA_RANGE,
    TAU_RANGE,
    comparable_epoch,
    drw_epoch_bounds,
    drw_epoch_space,
    joint_space,
    mamix_space,
    method_params,
    method_space,
    mixup_alpha_space,
    paper_params,
    remix_space,
)

__all__ = [
    "ALPHA_RANGE", "KAPPA_RANGE", "OMEGA_RANGE", "TAU_RANGE",
    "comparable_epoch", "drw_epoch_bounds", "drw_epoch_space", "joint_space", "mamix_space", "method_params",
    "method_space", "mixup_alpha_space", "paper_params", "remix_space",
    "COMPARISON_METHODS", "EXTREME_CINIC10_METHODS", "EXTREME_KINDS_METHODS", "EXTREME_KINDS_RATIO",
    "EXTREME_METHODS", "EXTREME_RATIO_GRID", "IMBALANCE_KINDS", "MARGIN_METHODS",
    "OMEGA_GRID", "PAPER_SEEDS", "RATIO_GRID", "TABLE1_METHODS", "TABLE6_METHODS", "TABLE_METHODS", "TINY_RATIO_GRID",
]
