"""The Optuna study behind a hyperparameter search: stored, asked in packs, told, and explained.

A search's study lives in an SQLite file in the search's results folder, so a finished search can be
re-plotted, and extended with more trials without running the old ones again. Each Ray trial of a
search asks the study for K configurations of the define-by-run space (``search_spaces``), trains them
as one fused pack, and tells the study K results: the objective at the last epoch, ``PRUNED`` for a
member stopped early, ``FAIL`` for one that diverged. A search of one configuration per Ray trial is
driven by Ray's OptunaSearch on the same study instead (``StoppedArePruned``: the same three states).
After the search, parameter importances (fANOVA, and the mean decrease in impurity of a random forest
as a second opinion) and the usual plots (matplotlib, PNG) explain which of omega, alpha, tau, P and
the DRW epoch mattered.
"""

from __future__ import annotations

import io
import json
import logging
import math
from typing import Any, Callable

import optuna
import pandas as pd
from ray.tune.search.optuna import OptunaSearch

log = logging.getLogger(__name__)

Space = Callable[[optuna.trial.BaseTrial], dict[str, Any] | None]


def storage_url(path: str) -> str:
    return f"sqlite:///{path}"


def open_study(path: str, name: str, sampler_seed: int) -> optuna.Study:
    """The study ``name`` stored in the SQLite file ``path``, created on first use; maximised. Its TPE
    sampler is seeded with ``sampler_seed``: give each asker its own (``core.study.sampler_seed``), or
    two of them would start from the same random configurations."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(storage_url(path), engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                               sampler=optuna.samplers.TPESampler(seed=sampler_seed))


def sampler_seed(search_seed: int, asked_before: int, slot: int = 0) -> int:
    """The TPE seed of one asker of a search round: the pack ``slot`` (Ray's OptunaSearch: 0) of a round
    begun when the study held ``asked_before`` trials. TPE's first configurations are random draws of its
    seed, so two askers of one seed ask the same ones: every pack of every round gets its own, and the
    first round's stay ``search_seed * 100_003 + slot``."""
    return search_seed * 100_003 + asked_before * 1_000_003 + slot


def ask(study: optuna.Study, space: Space, count: int) -> list[tuple[optuna.trial.Trial, dict[str, Any]]]:
    """``count`` new trials and their configurations: the suggested values merged with the constants
    the space returns (the convention of Ray's OptunaSearch: constants win)."""
    asked = []
    for _ in range(count):
        trial = study.ask()
        constants = space(trial) or {}  # suggests first: trial.params is filled by the space
        asked.append((trial, {**trial.params, **constants}))
    return asked


def tell(study: optuna.Study, trial_number: int, value: float | None, finished: bool) -> None:
    """A member's result: its objective when it finished, ``PRUNED`` (with its last value as an
    intermediate one) when the search stopped it early, ``FAIL`` when it has no value."""
    if value is None or not math.isfinite(value):
        study.tell(trial_number, state=optuna.trial.TrialState.FAIL)
    elif finished:
        study.tell(trial_number, value)
    else:
        study.tell(trial_number, state=optuna.trial.TrialState.PRUNED)


class StoppedArePruned(OptunaSearch):
    """Ray's OptunaSearch, telling the study what ``tell`` tells for a fused member. Ray tells a trial
    with a last value COMPLETE, so a trial a scheduler (ASHA) stopped early would enter the study with its
    early value beside the finished trials' final ones, and a trial that crashed for good with the value
    it had; here they are PRUNED (Optuna keeps the last value Ray reported for it) and FAIL."""

    def __init__(self, *args, epochs: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.epochs = epochs

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result is not None and not error and result.get("epoch", 0) < self.epochs:
            self.on_trial_result(trial_id, result)  # Ray gives a searcher the result it stops on only here
            result = None  # no value and no error: Ray tells PRUNED, with the last value reported
        elif error:
            result = None  # no value: Ray tells FAIL
        super().on_trial_complete(trial_id, result, error)


def fail_abandoned(study: optuna.Study) -> int:
    """Tell FAIL the trials still RUNNING once a round has ended, and return how many. A pack whose
    process was killed before its first checkpoint restarts from scratch and asks anew, so nothing will
    tell the trials it had asked. Only while no other search asks this study."""
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in running:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(running)


def completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials with a result: completed, or stopped early with one. A trial of an interrupted round
    stays RUNNING until the round resumes, and one that failed may be asked again, so neither counts."""
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))


def in_canonical_order(study: optuna.Study) -> optuna.Study:
    """The study's completed trials, in memory, ordered by their parameters. Concurrent packs number
    their trials in the order they happen to ask, and the importance evaluators' forests depend on the
    order of their rows: in trial order, the same trials gave other importances, and other ranks, from
    one run of a search to the next."""
    ordered = optuna.create_study(directions=study.directions)
    ordered.add_trials(sorted(completed(study), key=lambda t: json.dumps(t.params, sort_keys=True)))
    return ordered


def importances(study: optuna.Study, seed: int = 0) -> pd.DataFrame:
    """Each parameter's importance for the objective by fANOVA (Hutter et al. 2014) and by a random
    forest's mean decrease in impurity, and their ranks; most important first; over the completed
    trials in their canonical order, so the same trials give the same table. Parameters that only
    some trials have (e.g. omega in a joint search over methods) are left out by Optuna."""
    from optuna.importance import (FanovaImportanceEvaluator, MeanDecreaseImpurityImportanceEvaluator,
                                   get_param_importances)

    study = in_canonical_order(study)
    fanova = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
    mdi = get_param_importances(study, evaluator=MeanDecreaseImpurityImportanceEvaluator(seed=seed))
    table = pd.DataFrame({"parameter": list(fanova), "fanova": list(fanova.values())})
    table["mean_decrease_impurity"] = table["parameter"].map(mdi)
    for column in ("fanova", "mean_decrease_impurity"):
        table[f"{column}_rank"] = table[column].rank(ascending=False, method="min").astype(int)
    return table.sort_values("fanova", ascending=False).reset_index(drop=True)


def evaluators_agree(table: pd.DataFrame) -> bool:
    """Whether both evaluators rank the parameters in the same order."""
    return list(table["fanova_rank"]) == list(table["mean_decrease_impurity_rank"])


def plots(study: optuna.Study, table: pd.DataFrame, objective: str, seed: int = 0) -> dict[str, bytes]:
    """PNG plots: importances (fANOVA's, computed as ``importances`` computes ``table``'s: same order,
    same ``seed``), optimisation history, and contour and slice plots of the two most important
    parameters (slice of the most important one when there is only one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis
    from optuna.importance import FanovaImportanceEvaluator

    top = list(table["parameter"][:2])
    figures = {"importances.png": lambda: vis.plot_param_importances(
                   in_canonical_order(study), evaluator=FanovaImportanceEvaluator(seed=seed), target_name=objective),
               "history.png": lambda: vis.plot_optimization_history(study, target_name=objective),
               "slice.png": lambda: vis.plot_slice(study, params=top, target_name=objective)}
    if len(top) == 2:
        figures["contour.png"] = lambda: vis.plot_contour(study, params=top, target_name=objective)
    out = {}
    for name, draw in figures.items():
        ax = draw()
        figure = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        plt.close(figure)
        out[name] = buffer.getvalue()
    return out
