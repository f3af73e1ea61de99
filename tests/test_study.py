"""The search's Optuna study: stored and extendable, asked in packs, told, and explained."""

import warnings

import optuna
import pandas as pd
import pytest

from core.study import (StoppedArePruned, ask, completed, evaluators_agree, fail_abandoned, importances, open_study,
                        plots, sampler_seed, storage_url, tell)
from search_spaces import method_space


def objective(params):
    """omega matters a lot, alpha a little, the DRW epoch not at all."""
    return -((params["omega"] - 1.0) ** 2) - 0.05 * abs(params["alpha"] - 1.0) + 0 * params["drw_epoch"]


def run(study, space, count, pack=3):
    while len(completed(study)) < count:
        for trial, config in ask(study, space, pack):
            tell(study, trial.number, objective(config), finished=True)


def test_a_stored_study_is_extended_by_a_second_run_not_restarted(tmp_path):
    space = method_space("mamix_drw", 10, {"dataset": "digits"})
    first = open_study(str(tmp_path / "s.db"), "search", sampler_seed=0)
    run(first, space, 6)
    again = open_study(str(tmp_path / "s.db"), "search", sampler_seed=1)
    assert len(completed(again)) == 6
    run(again, space, 12)
    assert len(completed(open_study(str(tmp_path / "s.db"), "search", sampler_seed=2))) == 12


def test_asked_configurations_carry_the_spaces_constants_and_only_the_methods_parameters(tmp_path):
    study = open_study(str(tmp_path / "s.db"), "search", sampler_seed=0)
    asked = ask(study, method_space("remix_drw", 10, {"dataset": "digits"}), 2)
    assert len({t.number for t, _ in asked}) == 2
    for _, config in asked:
        assert config["method"] == "remix_drw" and config["dataset"] == "digits"
        assert set(config) == {"method", "dataset", "alpha", "tau", "kappa", "drw_epoch"}


def test_members_stopped_early_or_failed_are_told_as_such(tmp_path):
    study = open_study(str(tmp_path / "s.db"), "search", sampler_seed=0)
    (a, _), (b, _), (c, _) = ask(study, method_space("mamix_drw", 10), 3)
    tell(study, a.number, 0.5, finished=True)
    tell(study, b.number, 0.4, finished=False)
    tell(study, c.number, float("nan"), finished=True)
    states = [t.state for t in study.get_trials()]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL]


def test_trials_left_running_when_a_round_ends_are_failed_and_rounds_ask_afresh(tmp_path):
    """A pack restarted from scratch asked anew: what it had asked stays RUNNING unless failed. And a
    second round's packs, seeded as the first round's, would ask its configurations again."""
    space = method_space("mamix_drw", 10)
    study = open_study(str(tmp_path / "s.db"), "search", sampler_seed(0, 0, slot=0))
    first = ask(study, space, 3)
    tell(study, first[0][0].number, 0.5, finished=True)
    assert fail_abandoned(study) == 2 and fail_abandoned(study) == 0
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.COMPLETE] + [optuna.trial.TrialState.FAIL] * 2
    later = open_study(str(tmp_path / "s.db"), "search", sampler_seed(0, len(study.trials), slot=0))
    assert ask(later, space, 1)[0][1] not in [config for _, config in first]
    assert sampler_seed(0, 0, slot=1) != sampler_seed(0, 0, slot=0) != sampler_seed(0, 3, slot=0)


def test_importances_find_the_parameter_that_matters_and_plots_are_pngs(tmp_path):
    study = open_study(str(tmp_path / "s.db"), "search", sampler_seed=0)
    run(study, method_space("mamix_drw", 10), 30)
    table = importances(study)
    assert list(table["parameter"])[0] == "omega"
    assert set(table["parameter"]) == {"omega", "alpha", "drw_epoch"}
    assert table["fanova"].sum() == pytest.approx(1.0)
    assert evaluators_agree(pd.DataFrame({"fanova_rank": [1, 2, 3], "mean_decrease_impurity_rank": [1, 2, 3]}))
    assert not evaluators_agree(pd.DataFrame({"fanova_rank": [1, 2, 3], "mean_decrease_impurity_rank": [2, 1, 3]}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's matplotlib backend is marked experimental
        images = plots(study, table, "val_acc")
    assert set(images) == {"importances.png", "history.png", "slice.png", "contour.png"}
    assert all(png.startswith(b"\x89PNG") for png in images.values())


def test_importances_of_the_same_trials_do_not_depend_on_the_order_they_were_asked(tmp_path, monkeypatch):
    """Concurrent packs number their trials in the order they happen to ask: the same trials told in
    another order give the same importance table, and the plot draws the table's numbers (in trial order,
    the evaluators' forests gave others, and the plot's own unseeded fANOVA others again)."""
    import optuna.visualization.matplotlib as vis
    from optuna.importance import get_param_importances

    study = open_study(str(tmp_path / "s.db"), "search", sampler_seed=0)
    run(study, method_space("mamix_drw", 10), 16)
    trials = completed(study)
    reordered = optuna.create_study(direction="maximize")
    reordered.add_trials(trials[1::2] + trials[::2])
    assert [t.params for t in reordered.trials] != [t.params for t in trials]
    table = importances(study)
    assert importances(reordered).equals(table)
    # what the importances plot is given to draw: the table's fANOVA numbers
    drawn = []
    plot = vis.plot_param_importances
    def watched(given, evaluator=None, **kwargs):
        drawn.append((given, evaluator))
        return plot(given, evaluator=evaluator, **kwargs)

    monkeypatch.setattr(vis, "plot_param_importances", watched)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's matplotlib backend is marked experimental
        plots(reordered, table, "val_acc")
    (given, evaluator), = drawn
    assert get_param_importances(given, evaluator=evaluator) == dict(zip(table["parameter"], table["fanova"]))


def test_ray_searches_tell_a_stopped_trial_pruned_and_a_crashed_one_failed(tmp_path):
    """What Ray's OptunaSearch would tell COMPLETE with its last value (the early score of a trial ASHA
    stopped, the last score of one that crashed for good) enters the study as a fused member's would."""
    open_study(str(tmp_path / "s.db"), "search", sampler_seed=0)
    searcher = StoppedArePruned(space=method_space("mamix", 4, {"dataset": "digits"}), metric="val_acc",
                                mode="max", storage=optuna.storages.RDBStorage(storage_url(str(tmp_path / "s.db"))),
                                study_name="search", seed=0, epochs=4)
    results = {"full": [0.5, 0.6, 0.7, 0.8], "stopped": [0.4, 0.3], "crashed": [0.2]}
    for trial_id, values in results.items():
        searcher.suggest(trial_id)
        *reported, last = [{"val_acc": v, "epoch": e, "training_iteration": e} for e, v in enumerate(values, 1)]
        for result in reported:  # as Ray does, the result a trial ends on goes to on_trial_complete only
            searcher.on_trial_result(trial_id, result)
        searcher.on_trial_complete(trial_id, last, error=trial_id == "crashed")
    told = [(t.state, t.value) for t in open_study(str(tmp_path / "s.db"), "search", sampler_seed=1).trials]
    assert told == [(optuna.trial.TrialState.COMPLETE, 0.8), (optuna.trial.TrialState.PRUNED, 0.3),
                    (optuna.trial.TrialState.FAIL, None)]
