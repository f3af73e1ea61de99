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
    from core.reporting import markdown_table, summarise

    trials = pd.DataFrame({"omega": [0.5, 0.5, 1.0], "test_acc": [0.2, 0.4, 0.9]})
    table = summarise(trials, ["omega"], {"test_acc": "Accuracy"})
    # one seed has no spread to show: its mean alone, not "± 0.0000"
    assert table["Accuracy"].tolist() == ["0.3000 ± 0.1414", "0.9000"]
    assert table["n"].tolist() == [2, 1]
    # a table of one-seed means keeps the paper's digits in Markdown (tabulate would print 0.9)
    single = summarise(trials.iloc[2:], ["omega"], {"test_acc": "Accuracy"})
    assert "| 0.9000     |" in markdown_table(single[["omega", "Accuracy"]])


def test_trend_is_the_least_squares_slope_per_doubling_over_every_trial():
    import scipy.stats

    from core.reporting import trend

    # accuracy falls by exactly 0.5 per doubling of omega, the seeds 0.2 apart; the gap falls with noise
    omegas = [0.25, 0.5, 1.0, 2.0, 4.0]
    trials = pd.DataFrame([{"omega": w, "seed": s, "acc": 70.0 - 0.5 * np.log2(w) + 0.2 * s}
                           for w in omegas for s in (0, 1)])
    trials["gap"] = -0.1 * np.log2(trials["omega"]) + np.random.default_rng(0).normal(0, 0.05, len(trials))
    trials["flat"] = 1.0
    table = trend(trials, "omega", {"acc": "Accuracy (%)", "gap": "Margin gap", "flat": "Constant"},
                  digits={"acc": 2}).set_index("metric")
    assert table.loc["Accuracy (%)", "Slope per doubling"] == "-0.50"
    assert table.loc["Accuracy (%)", "n"] == 10
    # the seeds' offset is the residual spread: the interval is around -0.5 and excludes 0
    low, high = (float(v) for v in table.loc["Accuracy (%)", "95% CI"].split(" to "))
    assert low < -0.5 < high < 0
    rho = scipy.stats.spearmanr(trials["omega"], trials["acc"]).statistic
    assert table.loc["Accuracy (%)", "Spearman rho"] == f"{rho:.3f}"
    # against a fit by hand on log2(omega), and its p-value against Student's t with n - 2 degrees of freedom
    x = np.log2(trials["omega"])
    slope, intercept = np.polyfit(x, trials["gap"], 1)
    assert table.loc["Margin gap", "Slope per doubling"] == f"{slope:.4f}"
    residual = trials["gap"] - (intercept + slope * x)
    error = np.sqrt((residual ** 2).sum() / (len(trials) - 2) / ((x - x.mean()) ** 2).sum())
    half = scipy.stats.t.ppf(0.975, len(trials) - 2) * error
    assert table.loc["Margin gap", "95% CI"] == f"{slope - half:.4f} to {slope + half:.4f}"
    assert table.loc["Margin gap", "p (slope)"] == f"{2 * scipy.stats.t.sf(abs(slope / error), len(trials) - 2):.2g}"
    # a metric that does not move has slope 0 and no rank correlation to show
    assert table.loc["Constant", "Slope per doubling"] == "0.0000"
    assert table.loc["Constant", "95% CI"] == table.loc["Constant", "Spearman rho"] == "-"
    # a slope per unit of omega without log2; nothing to fit on two trials or on one omega
    assert "Slope" in trend(trials, "omega", {"acc": "A"}, log2=False).columns
    for few in (trials.iloc[:2], trials[trials["omega"] == 1.0]):
        row = trend(few, "omega", {"acc": "A"}).iloc[0]
        assert row["Slope per doubling"] == row["95% CI"] == row["p (slope)"] == row["Spearman rho"] == "-"


def test_omega_sweep_tables_the_trend_over_every_trial_beside_the_means():
    from sweeps import omega_sensitivity

    settings = dict(omega_sensitivity.PRESETS["demo"], name="omega_sensitivity-demo", preset="demo")
    trials = fake_trials(omega_sensitivity.SWEEP, settings)
    trials["test_acc"] = 0.9 - 0.01 * np.log2(trials["omega"])
    table, slopes = omega_sensitivity.tables(trials, settings)
    assert slopes.stem == "table12_trend" and "per doubling of omega" in slopes.title
    row = slopes.frame.set_index("metric").loc["Accuracy (final epoch)"]
    assert row["n"] == len(trials) == 2 * len(settings["omegas"])
    assert row["Slope per doubling"] == "-0.0100" and row["Spearman rho"] == "-1.000"


def test_method_comparison_reports_each_methods_cost_beside_mamix_drw():
    from sweeps import method_comparison

    trials = pd.DataFrame({"method": ["mamix_drw", "mamix_drw", "m2m", "deepsmote"],
                           "imbalance": "long_tailed", "ratio": 10.0, "test_acc": [0.5, 0.6, 0.7, 0.8],
                           "wall_s": [10.0, 30.0, 50.0, 20.0], "stage_s": [0.0, 0.0, 10.0, 40.0],
                           "train_images": [4000, 4000, 4000, 8000]})
    tables = method_comparison.tables(trials, {"methods": ["m2m", "deepsmote", "mamix_drw"], "dataset": "digits"})
    cost = tables[1].frame.set_index("method")
    assert cost.index.tolist() == ["m2m", "deepsmote", "mamix_drw"]
    assert cost.loc["m2m", "trial s"] == "50.0" and cost.loc["m2m", "stages s"] == "10.0"
    assert cost.loc["deepsmote", "img/s"] == "400" and cost.loc["mamix_drw", "img/s"] == "267"
    ratio = [c for c in cost.columns if c.startswith("(trial + stages)")][0]
    assert cost[ratio].tolist() == ["3.00", "3.00", "1.00"]  # (50 + 10) / 20, (20 + 40) / 20


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



@pytest.mark.parametrize("kind", ["long_tailed", "step"])
def test_fig3_of_a_grid_of_one_kind_has_one_row_over_its_trials(kind):
    """A grid of one imbalance kind printed a second row: the same numbers twice (long-tailed only), or
    a long-tailed row of n 0 and rho nan beside step trials labelled as pooled (step only)."""
    from sweeps import margin_study

    settings = dict(margin_study.PRESETS["demo"], name="margin_study-demo", preset="demo", kinds=[kind])
    trials = fake_trials(margin_study.SWEEP, settings)
    trials["margin_gap"], trials["test_acc"] = np.arange(len(trials)), -np.arange(len(trials))
    fig3 = next(t for t in margin_study.tables(trials, settings) if t.stem == "fig3_spearman")
    label = {"long_tailed": "long-tailed (the paper's Fig. 3)", "step": "step"}[kind]
    assert fig3.frame.to_dict("list") == {"trials": [label], "n": [len(trials)], "spearman_rho": [-1.0]}

# ----------------------------------------------------------------------------- Tables 2, 3, 4 and 6

def _cells(settings, **axes):
    """A finished-trial table with one row per grid cell and seed, like Ray's (swept fields + metrics)."""
    frame = pd.MultiIndex.from_product([*axes.values(), [0, 1]], names=[*axes, "seed"]).to_frame(index=False)
    frame["status"] = "FINISHED"
    return frame


def test_table2_and_table6_layout_and_values():
    from sweeps import extreme_imbalance

    settings = dict(extreme_imbalance.PRESETS["demo"], name="x", preset="demo")
    trials = _cells(settings, method=settings["methods"], ratio=settings["ratios"])
    # accuracy encodes (method, ratio, seed); the margin gap at ratio 40 is 1, 2 (remix) and 5, 9 (mamix)
    index = {m: i for i, m in enumerate(settings["methods"])}
    trials["test_acc"] = [index[m] + r / 100 + s / 1000 for m, r, s in zip(trials["method"], trials["ratio"],
                                                                           trials["seed"])]
    gaps = {("remix_drw", 40.0): [1.0, 2.0], ("mamix_drw", 40.0): [5.0, 9.0]}
    trials["margin_gap"] = [gaps.get((m, r), [100.0, 100.0])[s] for m, r, s in zip(trials["method"], trials["ratio"],
                                                                                   trials["seed"])]
    table2, table6 = extreme_imbalance.tables(trials, settings)
    assert table2.stem == "table2" and table2.title.startswith("Table 2:")
    assert list(table2.frame.columns) == ["method", "20.0", "40.0"]
    assert table2.frame["method"].tolist() == ["mixup_drw", "remix_drw", "mamix_drw", "mamix_remix_drw"]
    assert table2.frame.iloc[2].tolist() == ["mamix_drw", "2.2005 ± 0.0007", "2.4005 ± 0.0007"]
    # Table 6: Remix-DRW and MAMix-DRW only, at the largest ratio of the grid
    assert table6.stem == "table6_margin_gap" and "ratio 40" in table6.title
    assert table6.frame.to_dict("list") == {"method": ["remix_drw", "mamix_drw"],
                                            "Margin gap": ["1.5000 ± 0.7071", "7.0000 ± 2.8284"]}


def test_table3_layout():
    from sweeps import extreme_cinic10

    settings = dict(extreme_cinic10.PRESETS["demo"], name="x", preset="demo")
    trials = _cells(settings, method=settings["methods"], ratio=settings["ratios"])
    trials["test_acc"] = np.where(trials["ratio"] == 20.0, 0.5, 0.25) + 0.01 * trials["seed"]
    (table3,) = extreme_cinic10.tables(trials, settings)
    assert table3.title.startswith("Table 3:") and list(table3.frame.columns) == ["method", "20.0", "40.0"]
    assert table3.frame.to_dict("list") == {"method": ["mixup_drw", "remix_drw", "mamix_drw"],
                                            "20.0": ["0.5050 ± 0.0071"] * 3, "40.0": ["0.2550 ± 0.0071"] * 3}


def test_table4_layout():
    from sweeps import extreme_kinds

    settings = dict(extreme_kinds.PRESETS["demo"], name="x", preset="demo")
    trials = _cells(settings, method=settings["methods"], imbalance=settings["kinds"])
    trials["test_acc"] = np.where(trials["imbalance"] == "step", 0.25, 0.75) + 0.01 * trials["seed"]
    (table4,) = extreme_kinds.tables(trials, settings)
    assert table4.title.startswith("Table 4:") and "ratio 20" in table4.title
    assert list(table4.frame.columns) == ["method", "long_tailed 20", "step 20"]
    assert table4.frame["method"].tolist() == ["erm", "drw", "ldam_drw", "mixup_drw", "remix_drw", "mamix_drw"]
    assert set(table4.frame["long_tailed 20"]) == {"0.7550 ± 0.0071"} and set(table4.frame["step 20"]) == {
        "0.2550 ± 0.0071"}


@pytest.mark.parametrize("name, dataset, grid", [
    ("extreme_imbalance", "cifar10", dict(imbalance=["long_tailed"], ratio=[200.0, 250.0, 300.0],
                                          method=["mixup_drw", "remix_drw", "mamix_drw", "mamix_remix_drw"])),
    ("extreme_cinic10", "cinic10", dict(imbalance=["long_tailed"], ratio=[200.0, 250.0, 300.0],
                                        method=["mixup_drw", "remix_drw", "mamix_drw"])),
    ("extreme_kinds", "cinic10", dict(imbalance=["long_tailed", "step"], ratio=[200.0],
                                      method=["erm", "drw", "ldam_drw", "mixup_drw", "remix_drw", "mamix_drw"])),
])
def test_paper_presets_are_the_papers_settings(name, dataset, grid):
    """Each paper preset's grid is the paper's table, 5 seeds, with the dataset's appendix-A schedule."""
    from core.config import TrainConfig

    sweep = report.SWEEPS[name]
    preset = sweep.presets["paper"]
    assert preset["dataset"] == dataset and preset["seeds"] == 5
    cells = {field: preset[axis] for axis, field in sweep.axes.items()}
    scalars = {field: [preset[field]] for field in ("imbalance", "ratio") if field in preset}
    assert {**scalars, **cells} == grid
    for method in grid["method"]:
        for kind in grid["imbalance"]:
            for ratio in grid["ratio"]:
                cfg = TrainConfig.from_dict(dict(dataset=dataset, method=method, imbalance=kind, ratio=ratio))
                assert (cfg.model, cfg.epochs, cfg.milestones, cfg.drw_epoch) == (
                    {"cifar10": "resnet32", "cinic10": "resnet18"}[dataset], 200, (160, 180), 160)
                assert cfg.eval_split == {"cifar10": "test", "cinic10": "valid"}[dataset]


def test_the_margin_chart_runs_from_head_to_tail_whatever_the_labels_order(monkeypatch):
    from core import reporting

    monkeypatch.setattr(reporting, "_png", lambda fig: fig)
    # SVHN's order: label 0 is the rarest class
    table = reporting.per_class_table({f"class_margin_{c}": float(c) for c in range(4)}, [10, 1000, 599, 40],
                                      ["0", "1", "2", "3"])
    fig = reporting.margin_bar_chart(table, "margins")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1", "2", "3", "0"]
    assert [bar.get_height() for bar in fig.axes[0].patches] == [1.0, 2.0, 3.0, 0.0]
