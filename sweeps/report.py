"""Rebuild a sweep's tables and plots from the MLflow tracking store alone.

A sweep run on a cluster is tabulated later from its MLflow server: the parent run names the sweep
script and its settings, the child runs hold each trial's config and final metrics, and the sweep's
own ``tables`` function turns them into the same tables it printed (Markdown, CSV, LaTeX, PNG).

    python -m sweeps.report --experiment omega_sensitivity-demo [--parent-run ID] [--tracking-uri URI]
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any

import pandas as pd

from core import tracking
from core.sweep import PROJECT_DIR
from sweeps import (cli, extreme_cinic10, extreme_imbalance, extreme_kinds, margin_study, method_comparison,
                    omega_sensitivity, smote_study)

SEARCH = "tune_hparams"  # sweeps/tune_hparams.py: its tables need the Optuna study, not MLflow alone
SWEEPS = {s.name: s for s in (omega_sensitivity.SWEEP, method_comparison.SWEEP, extreme_imbalance.SWEEP,
                              extreme_cinic10.SWEEP, extreme_kinds.SWEEP, smote_study.SWEEP, margin_study.SWEEP)}


def _value(text: str) -> Any:
    """An MLflow param back to the Python value it was logged from (numbers, lists, strings)."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return {"None": None, "True": True, "False": False}.get(text, text)


def trials_from_mlflow(tracking_uri: str, experiment_id: str, parent_run_id: str) -> pd.DataFrame:
    """One row per child run: its params, its last value of every metric, its name as ``trial``, its
    status (``STOPPED`` for a member a scheduler stopped before its last epoch) and, for a run that did
    not finish, the reason as ``error``."""
    rows = []
    for run in tracking.child_runs(tracking_uri, experiment_id, parent_run_id):
        row = dict(run.data.metrics)
        row.update({k: _value(v) for k, v in run.data.params.items()})  # as in core.sweep.trial_table
        stopped = run.data.tags.get(tracking.STOPPED_TAG)
        row.update(trial=run.info.run_name, status="STOPPED" if stopped else run.info.status,
                   error=stopped or run.data.tags.get("error", ""))
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["trial", "status", "error"])  # no run: still a table


def rebuild(experiment: str, tracking_uri: str,
            parent_run_id: str | None = None) -> tuple[list[cli.Table], list[str]]:
    """The sweep's tables from its MLflow runs, and a line for each table none of its finished trials falls in."""
    parent = (tracking.get_run(tracking_uri, parent_run_id) if parent_run_id
              else tracking.latest_parent_run(tracking_uri, experiment))
    script = parent.data.tags.get("sweep_script")
    if script == SEARCH:
        raise ValueError(f"experiment: {experiment} is a hyperparameter search; its tables are logged to each round's "
                         f"parent run (trials_ranked.md; importances.md from 4 trials on), and the same {SEARCH} "
                         f"command prints them again without training")
    if script not in SWEEPS:
        raise ValueError(f"parent_run: run {parent.info.run_id} has sweep_script={script!r}; "
                         f"allowed: {sorted(SWEEPS)}")
    settings = json.loads(parent.data.tags["settings"])
    sweep = SWEEPS[script]
    done = cli.finished(trials_from_mlflow(tracking_uri, parent.info.experiment_id, parent.info.run_id))
    if done.empty:
        raise ValueError(f"experiment: no trial of the sweep {experiment} (parent run {parent.info.run_id}, "
                         f"{parent.info.status}) has finished yet; there is no table to make")
    tables, not_made = cli.tables_with_rows(sweep, done, settings)
    if parent.info.status in ("RUNNING", "KILLED"):  # still running, or stopped before its trials ended
        cells = math.prod(len(settings[axis]) for axis in sweep.axes) * settings["seeds"]
        for table in tables:
            table.title += f" [sweep unfinished ({parent.info.status}): {len(done)} of its {cells} trials]"
    return tables, not_made


def main(argv: list[str] | None = None) -> list[cli.Table]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", required=True, help="the sweep's name (MLflow experiment)")
    p.add_argument("--parent-run", help="a sweep invocation's run id (default: the latest)")
    p.add_argument("--results-dir", default=os.path.join(PROJECT_DIR, "results"))
    p.add_argument("--tracking-uri", help="default: sqlite:///<results-dir>/mlflow.db")
    p.add_argument("--out", help="folder for the files (default: <results-dir>/<experiment>/report)")
    args = p.parse_args(argv)
    uri = args.tracking_uri or tracking.default_tracking_uri(args.results_dir)
    store = uri.removeprefix("sqlite:///")
    if uri.startswith("sqlite:///") and not os.path.exists(store):  # MLflow would create an empty one there
        raise ValueError(f"results_dir: no MLflow store at {store}; give the sweep's --results-dir (or --tracking-uri)")
    tables, not_made = rebuild(args.experiment, uri, args.parent_run)
    out = args.out or os.path.join(os.path.abspath(args.results_dir), args.experiment, "report")
    os.makedirs(out, exist_ok=True)
    for table in tables:
        print(table.markdown() + "\n")
        for name, content in cli.table_files(table).items():
            with open(os.path.join(out, name), "wb") as f:
                f.write(content)
    cli.print_not_made(not_made)
    print(f"written to {out}")
    return tables


if __name__ == "__main__":
    cli.entry(main)
