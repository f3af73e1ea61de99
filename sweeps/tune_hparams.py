"""Optuna search over a method's hyperparameters (omega, alpha, tau, P, the DRW epoch), selected on a
validation split, and which of them matter.

The space is ``search_spaces.method_space``: only the parameters the chosen method reads are suggested
(omega for MAMix, tau and P for Remix, alpha for every mixing method, the DRW epoch for *_drw methods),
so ``--method mamix_remix_drw`` searches omega, alpha, tau, P and the DRW epoch together.

The paper has no validation split, and a search that picks its configuration by test accuracy reports
an optimistic number. Both presets hold out a balanced, seeded part of the balanced test set
(``val_split``: 100 of CIFAR-10's 1,000 test images per class, the protocol of M2m's official code;
20 of the digits' 50), the same for every trial, and select on the final-epoch validation accuracy
(``--objective val_acc``, the default whenever a split is on). The training set stays the paper's:
the head classes of a long-tailed subset use all their training images, so none are left to hold
out. Each configuration's test accuracy stands beside its validation accuracy in the ranked table, and
the chosen one's is printed once more at the end; none of them ranks or chooses.
``--objective test_acc`` (or ``--val-split none``) ranks on the test set, as the paper's tables do, and
the output says so.

The study is stored in ``<results-dir>/<name>.optuna.db``. Re-running with a larger ``--num-samples``
adds the missing trials to the same study in a new round (a sweep ``<name>-more<N>``, N the trials asked
before it, in the same MLflow experiment; its samplers seeded afresh, ``core.study.sampler_seed``);
re-running a finished search only tabulates and plots it again, and an interrupted one resumes its
round first; ``--restart`` sets the study and every round aside. ``--fuse K`` asks the study for K
configurations per Ray trial and trains them as one fused pack (``auto``: the trials spread over what
runs at once); ``--asha`` (early stopping on the objective) needs ``--fuse 1``, where
Ray's OptunaSearch drives the same stored study. ASHA ranks trials from ``--grace-period`` on, by default
the first epoch at which they are comparable (``search_spaces.comparable_epoch``: past the first
learning-rate decay and past the latest DRW epoch the space suggests). A DRW method's searched DRW epoch
reaches the last epoch, so there ``--asha`` needs an explicit, earlier ``--grace-period``.

At the end: parameter importances by fANOVA (and a random forest's mean decrease in impurity as a
second opinion), the optimisation history, and slice and contour plots of the two most important
parameters, saved beside the table and logged to the round's MLflow parent run.

    python sweeps/tune_hparams.py --preset demo --method mamix_drw --num-samples 12
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

if __package__ in (None, ""):  # run as a file (ray submit uploads the script alone)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pandas as pd  # noqa: E402

from core import study as studies  # noqa: E402
from core import tracking  # noqa: E402
from core.config import TRAIN_FIELDS, field_assignments  # noqa: E402
from core.methods import METHODS  # noqa: E402
from core.sweep import SweepResult, archive_sweep, one_driver, read_state, run_sweep, set_aside  # noqa: E402
from core.train import _number_or_name  # noqa: E402
from search_spaces import comparable_epoch, drw_epoch_bounds, method_params, method_space  # noqa: E402
from sweeps import cli  # noqa: E402
from sweeps.report import SEARCH, trials_from_mlflow  # noqa: E402

log = logging.getLogger(__name__)

PRESETS = {
    "paper": dict(dataset="cifar10", ratio=300.0, model="resnet32", epochs=200, milestones=[160, 180],
                  seeds=1, gpus_per_trial=0.25, val_split=100),
    "demo": dict(dataset="digits", ratio=10.0, model="small_cnn", epochs=10, milestones=[8], warmup_epochs=1,
                 seeds=1, gpus_per_trial=0.0, val_split=20),
}
OBJECTIVES = ("val_acc", "test_acc")
STUDY_FILE = ".optuna.db"  # the study of the search NAME: <results-dir>/NAME.optuna.db


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = cli.parser(__doc__, PRESETS)
    p.add_argument("--method", choices=sorted(METHODS), default="mamix_drw")
    p.add_argument("--num-samples", type=int, default=16, help="trials the study holds when the search ends")
    p.add_argument("--search-seed", type=int, default=0)
    p.add_argument("--objective", choices=OBJECTIVES,
                   help="default: val_acc with a validation split, else test_acc (test-set selection)")
    p.add_argument("--val-split", type=_number_or_name,
                   help="validation images held out of the test set: per class (e.g. 100), a fraction, or none")
    p.add_argument("--asha", action="store_true", help="early stopping on the objective (needs --fuse 1)")
    p.add_argument("--grace-period", type=int, help="epochs every trial trains before --asha may stop it "
                                                     "(default: the first comparable epoch)")
    args = p.parse_args(argv)
    chosen = cli.settings(args, PRESETS, f"tune_{args.method}", ("val_split",))
    epochs = chosen["epochs"]
    base = {k: v for k, v in chosen.items() if k in TRAIN_FIELDS}
    base.update(drw_epoch=drw_epoch_bounds(epochs)[1], seed=0)
    objective = args.objective or ("test_acc" if base["val_split"] == "none" else "val_acc")
    if objective == "val_acc" and base["val_split"] == "none":
        raise ValueError("objective: val_acc needs a validation split; pass --val-split N (images per class), "
                         "or --objective test_acc for test-set selection")
    if args.num_samples < 1:
        raise ValueError(f"num_samples: got {args.num_samples}; allowed: an integer >= 1")
    if args.asha and args.fuse != 1:
        raise ValueError("asha: early stopping stops whole Ray trials, and a fused trial is a pack of members; "
                         "pass --fuse 1 with --asha")
    if args.grace_period is not None and not args.asha:
        raise ValueError("grace_period: only with --asha, whose early stopping it delays")
    grace = asha_grace_period(args, base) if args.asha else None
    space = method_space(args.method, epochs)
    cli.check_space(space, base, fixed=field_assignments(args.set))
    cli.check_spec(cli.spec_from(chosen, args, base, {}), args.num_cpus)  # before the study and the store exist

    name, results_dir = chosen["name"], os.path.abspath(args.results_dir)
    path = os.path.join(results_dir, name + STUDY_FILE)
    os.makedirs(results_dir, exist_ok=True)
    uri = args.tracking_uri or tracking.default_tracking_uri(results_dir)
    with one_driver(results_dir, name):  # the whole search: --restart and every round
        if args.restart:  # a fresh search: the old study and every round of it go with the old search
            archive_search(uri, results_dir, name)
        study = studies.open_study(path, name, args.search_seed)

        def run_round(round_name: str, todo: int) -> tuple[str, str]:
            """Run (or resume) the round ``round_name`` of ``todo`` trials: its parent run and folder."""
            spec = search_spec({**chosen, "name": round_name}, args, base, space, objective, path, name, todo,
                               grace, asked_before=len(study.trials))
            cli.start(spec, args.num_cpus)
            result = run_sweep(spec)
            abandoned = studies.fail_abandoned(study)
            if abandoned:
                log.info("search %s: %d trial(s) asked by packs that restarted from scratch told FAIL", name,
                         abandoned)
            return result.parent_run_id, spec.path

        last = None
        interrupted = unfinished_round(uri, name, results_dir)
        if interrupted:
            log.info("search %s: round %s stopped before its trials ended; resuming it", name, interrupted[0])
            last = run_round(*interrupted)
        done = len(studies.finished(study))
        todo = args.num_samples - done
        if todo > 0:
            # Named by the trials asked so far, which every round adds to (failed ones too): no two alike.
            round_name = f"{name}-more{len(study.trials)}" if study.trials else name
            log.info("search %s: the study holds %d finished trial(s); %d more in round %s", name, done, todo,
                     round_name)
            last = run_round(round_name, todo)
        if last is None:
            log.info("search %s: the study already holds %d finished trial(s); tabulating it again", name, done)
            latest = tracking.latest_parent_run(uri, name)  # the last round: its run is named after its folder
            last = latest.info.run_id, os.path.join(results_dir, latest.info.run_name)
        parent, folder = last
        return report(study, name, uri, parent, folder, args.method, base, objective)


def archive_search(uri: str, results_dir: str, name: str) -> None:
    """``--restart``: the study and every round of the search ``name`` (folder and
    parent run) set aside, so that none of their trials reach the new search's tables."""
    set_aside(results_dir, name, STUDY_FILE)
    try:
        rounds = tracking.parent_runs(uri, name)
    except ValueError:  # no MLflow experiment of that name: nothing ran
        return
    for run in rounds:
        archive_sweep(uri, results_dir, run.info.run_name, {"parent_run_id": run.info.run_id})


def unfinished_round(uri: str, name: str, results_dir: str) -> tuple[str, int] | None:
    """The search's latest round if it stopped before its trials ended (Ctrl+C, or its driver killed),
    as its name and the trials it was to add: the same command resumes it before asking for more."""
    try:
        latest = tracking.latest_parent_run(uri, name)
    except ValueError:  # no round yet
        return None
    state = read_state(os.path.join(results_dir, latest.info.run_name))
    if latest.info.status not in ("RUNNING", "KILLED") or state is None:
        return None
    return latest.info.run_name, state["settings"]["num_samples"]


def asha_grace_period(args, base: dict) -> int:
    """``--grace-period``, else the method's first comparable epoch; refused where ASHA could stop
    no trial before its last epoch."""
    epochs = base["epochs"]
    if args.grace_period is not None:
        if not 1 <= args.grace_period < epochs:
            raise ValueError(f"grace_period: got {args.grace_period}; allowed: an integer from 1 to {epochs - 1} "
                             f"(epochs - 1)")
        return args.grace_period
    grace = comparable_epoch(args.method, epochs, base.get("milestones") or ())
    if grace >= epochs:
        why = (f"{args.method}'s DRW epoch is searched up to the last epoch (drw_epoch {epochs - 1}, 0-based), so "
               f"its trials minimise different losses until then" if "drw_epoch" in method_params(args.method)
               else f"the first learning-rate decay comes at the last epoch ({epochs}), and trials are ranked after it")
        raise ValueError(f"asha: {why}, and ASHA would stop no trial early; pass --grace-period N (1 to "
                         f"{epochs - 1}) to rank them earlier anyway, or leave out --asha")
    return grace


def search_spec(chosen: dict, args, base: dict, space, objective: str, path: str, name: str, todo: int,
                grace: int | None, asked_before: int):
    """The round's sweep (``todo`` more trials of the study ``name`` stored at ``path``, in the MLflow
    experiment ``name``, begun when the study held ``asked_before`` trials): Ray's OptunaSearch on the
    stored study with ``--fuse 1`` (ASHA from epoch ``grace`` on, when given), else fused packs that ask
    the study themselves (``core.tune.search_trial``)."""
    study = {"path": path, "name": name, "space": space, "objective": objective, "seed": args.search_seed,
             "asked_before": asked_before}
    extra = dict(experiment=study["name"], num_samples=todo, tags={"sweep_script": SEARCH})
    if args.fuse != 1:
        return cli.spec_from(chosen, args, base, {}, study=study, **extra)
    import optuna
    from ray.tune.schedulers import ASHAScheduler

    storage = optuna.storages.RDBStorage(studies.storage_url(path))
    searcher = studies.StoppedArePruned(space=space, metric=objective, mode="max", storage=storage,
                                        study_name=study["name"], epochs=base["epochs"],
                                        seed=studies.sampler_seed(args.search_seed, asked_before))
    scheduler = None
    if grace is not None:
        scheduler = ASHAScheduler(metric=objective, mode="max", time_attr="epoch", grace_period=grace,
                                  max_t=base["epochs"])
    return cli.spec_from(chosen, args, base, {}, search_alg=searcher, scheduler=scheduler, **extra)


def report(study, name: str, uri: str, parent: str, folder: str, method: str, base: dict, objective: str
           ) -> pd.DataFrame:
    """Every round's trials ranked on the objective with the test accuracy beside, and the study's
    importances and plots; printed, saved in ``folder`` and logged to the ``parent`` run."""
    trials = pd.concat([trials_from_mlflow(uri, run.info.experiment_id, run.info.run_id)
                        for run in tracking.parent_runs(uri, name)], ignore_index=True)
    params = list(method_params(method))
    # ties on the objective in parameter order: MLflow lists runs in the order concurrent packs made them
    order = [objective, *(p for p in params if p in trials.columns)]
    finished = trials[trials["status"] == "FINISHED"].sort_values(order, ascending=[False] + [True] * (len(order) - 1))
    metrics = list(dict.fromkeys([objective, "val_acc", "test_acc", "margin_gap"]))
    ranked = finished[[c for c in params + metrics if c in finished.columns]].reset_index(drop=True)
    selection = ("validation accuracy (each one's test accuracy beside it plays no part in the ranking or the choice)"
                 if objective == "val_acc" else "TEST accuracy: test-set selection, optimistic, as in the paper")
    where = f"{base['dataset']}, ratio {base['ratio']:g}, {base['epochs']} epochs"
    tables = [cli.Table("trials_ranked", f"Optuna search for {method} ({where}), {len(ranked)} finished trials, "
                                         f"ranked by final-epoch {selection}", ranked)]
    if len(studies.completed(study)) >= 4 and params:
        importance = studies.importances(study)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna's matplotlib backend is marked experimental
            plots = studies.plots(study, importance, objective)
        agree = "agree" if studies.evaluators_agree(importance) else "DISAGREE"
        tables.append(cli.Table("importances", f"Parameter importances for {objective} (fANOVA; a random forest's "
                                               f"mean decrease in impurity as a second opinion: the rankings {agree})",
                                importance.round(4), plots))
    result = SweepResult(trials, "", parent, uri, 0)
    cli.publish(result, folder, tables)
    best = ranked.iloc[0]
    print(f"chosen configuration (by {objective}): " + ", ".join(f"{k}={best[k]:.4g}" for k in params if k in best)
          + f"; its test accuracy {best['test_acc']:.4f}" + (f", validation {best['val_acc']:.4f}"
                                                             if "val_acc" in best else ""))
    return ranked


if __name__ == "__main__":
    cli.entry(main)
