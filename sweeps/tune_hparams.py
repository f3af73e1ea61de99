"""Optuna search over a method's hyperparameters (omega, alpha, tau, P, the DRW epoch).

The space is ``search_spaces.method_space``: only the parameters the chosen method reads are
suggested (omega for MAMix, tau and P for Remix, alpha for every mixing method, the DRW epoch for
*_drw methods). Ray's OptunaSearch drives it (TPE, seeded); ``--asha`` adds early stopping with a
grace period past the largest DRW epoch, so no trial is judged before its re-weighting starts.

The objective is the final-epoch accuracy on the balanced test set, as in the paper, which has no
separate validation split: the best configuration is selected on the test set and is reported as
such, not as a validation estimate.

    python sweeps/tune_hparams.py --preset demo --method mamix_drw --num-samples 8
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a file (ray submit uploads the script alone)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.methods import METHODS  # noqa: E402
from core.sweep import run_sweep  # noqa: E402
from search_spaces import drw_epoch_bounds, method_space  # noqa: E402
from sweeps import cli  # noqa: E402

PRESETS = {
    "paper": dict(dataset="cifar10", ratio=300.0, model="resnet32", epochs=200, milestones=[160, 180],
                  seeds=1, gpus_per_trial=0.25),
    "demo": dict(dataset="digits", ratio=10.0, model="small_cnn", epochs=10, milestones=[8], warmup_epochs=1,
                 seeds=1, gpus_per_trial=0.0),
}
METRIC = "test_acc"


def main(argv: list[str] | None = None):
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    p = cli.parser(__doc__, PRESETS)
    p.add_argument("--method", choices=sorted(METHODS), default="mamix_drw")
    p.add_argument("--num-samples", type=int, default=16)
    p.add_argument("--search-seed", type=int, default=0)
    p.add_argument("--asha", action="store_true", help="early stopping, grace period past the largest DRW epoch")
    args = p.parse_args(argv)
    chosen = cli.settings(args, PRESETS, f"tune_{args.method}")
    epochs = chosen["epochs"]
    base = {k: v for k, v in chosen.items() if k in cli.TRAIN_FIELDS}
    base.update(drw_epoch=drw_epoch_bounds(epochs)[1], seed=0)
    space = method_space(args.method, epochs)
    cli.check_space(space, base)
    searcher = OptunaSearch(space=space, metric=METRIC, mode="max", sampler=None, seed=args.search_seed)
    scheduler = None
    if args.asha:
        grace = drw_epoch_bounds(epochs)[1] + 1
        scheduler = ASHAScheduler(metric=METRIC, mode="max", time_attr="epoch", grace_period=grace, max_t=epochs)
    spec = cli.spec_from(chosen, args, base, {}, search_alg=searcher, scheduler=scheduler,
                         num_samples=args.num_samples)
    cli.start(spec, args.num_cpus)
    result = run_sweep(spec)
    trials = cli.finished_or_exit(result, spec).sort_values(METRIC, ascending=False)
    params = [c for c in ("method", "alpha", "omega", "tau", "kappa", "drw_epoch") if c in trials.columns]
    table = trials[params + [METRIC, "test_acc_best", "margin_gap", "status"]]
    best = table.iloc[0]
    cli.publish(result, spec, [cli.Table(
        "trials_ranked", f"Optuna search for {args.method} on {base['dataset']} (ratio {base['ratio']:g}, "
                         f"{epochs} epochs); ranked by final-epoch test accuracy (test-set selection, as in the paper)",
        table)])
    print("best configuration (selected on the test set): " + ", ".join(f"{k}={best[k]}" for k in params))
    return table


if __name__ == "__main__":
    cli.entry(main)
