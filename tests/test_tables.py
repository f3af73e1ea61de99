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
