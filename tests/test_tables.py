"""Every sweep's tables, built from a synthetic trial table (no Ray): the paper's layouts."""

import numpy as np
import pandas as pd
import pytest

from sweeps import cli, report


def fake_trials(sweep, settings):
    """A finished-trial table over the sweep's demo grid with random metrics, two seeds per cell."""
    rng = np.random.default_rng(0)
    grid = {field: settings[axis] for axis, field in sweep.axes.items()}
    cells = pd.MultiIndex.from_product([*grid.values(), [0, 1]], names=[*grid, "seed"]).to_frame(index=False)
    # Like Ray's trial table: only the swept fields (and seed) are columns, plus the metrics.
    for metric in ("test_acc", "test_acc_best", "margin_gap", "margin_l2", "margin_neg_majority",
                   "margin_pos_majority", "margin_neg_minority", "margin_pos_minority",
                   *[f"class_acc_{c}" for c in range(10)]):
        cells[metric] = rng.random(len(cells))
    cells["status"] = "FINISHED"
    return cells


@pytest.mark.parametrize("name", sorted(report.SWEEPS))
def test_each_sweep_builds_its_tables_in_the_paper_layout(name):
    sweep = report.SWEEPS[name]
    settings = dict(sweep.presets["demo"], name=f"{name}-demo", preset="demo")
    trials = fake_trials(sweep, settings)
    tables = sweep.tables(trials, settings)
    assert tables and all(isinstance(t, cli.Table) and len(t.frame) > 0 for t in tables)
    for table in tables:
        files = cli.table_files(table)
        assert {f"{table.stem}.md", f"{table.stem}.csv", f"{table.stem}.tex"} <= set(files)
        assert all(png.startswith(b"\x89PNG") for n, png in files.items() if n.endswith(".png"))
    first = tables[0].frame
    if "methods" in settings and "method" in first.columns:
        assert first["method"].tolist() == [m for m in settings["methods"]]
        # mean ± std over the two seeds of each cell
        assert all("±" in str(v) for v in first.iloc[:, 1])


def test_mean_and_std_are_over_seeds():
    from core.reporting import summarise

    trials = pd.DataFrame({"omega": [0.5, 0.5, 1.0], "test_acc": [0.2, 0.4, 0.9]})
    table = summarise(trials, ["omega"], {"test_acc": "Accuracy"})
    assert table["Accuracy"].tolist() == ["0.3000 ± 0.1414", "0.9000 ± 0.0000"]
    assert table["n"].tolist() == [2, 1]


def test_fig3_spearman_is_over_the_long_tailed_trials_with_the_pooled_value_beside_it():
    import scipy.stats

    from sweeps import margin_study

    settings = dict(margin_study.PRESETS["demo"], name="margin_study-demo", preset="demo")
    trials = fake_trials(margin_study.SWEEP, settings)
    long_tailed = trials["imbalance"] == "long_tailed"
    # long-tailed: accuracy falls exactly as the gap grows (rho = -1); step: it rises with it
    trials.loc[long_tailed, "margin_gap"] = np.arange(long_tailed.sum())
    trials.loc[long_tailed, "test_acc"] = -np.arange(long_tailed.sum())
    trials.loc[~long_tailed, "margin_gap"] = np.arange((~long_tailed).sum())
    trials.loc[~long_tailed, "test_acc"] = 10.0 + np.arange((~long_tailed).sum())
    fig3 = next(t for t in margin_study.tables(trials, settings) if t.stem == "fig3_spearman")
    pooled = scipy.stats.spearmanr(trials["margin_gap"], trials["test_acc"]).statistic
    assert fig3.frame.to_dict("list") == {
        "trials": ["long-tailed (the paper's Fig. 3)", "long-tailed and step, pooled"],
        "n": [int(long_tailed.sum()), len(trials)],
        "spearman_rho": [-1.0, round(pooled, 4)]}
    assert -1.0 < pooled < 1.0
    assert fig3.plots["fig3_margin_gap_vs_accuracy.png"].startswith(b"\x89PNG")
