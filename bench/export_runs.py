"""A sweep's MLflow runs as files, for committing a real-data run beside its command: each run's params,
tags, status and last metrics (runs.json), and every trial run's metric histories, one row per run and
epoch (history.csv). It prints how many metric steps were logged more than once (a resumed trial must
log each epoch once).

    python bench/export_runs.py sqlite:///RESULTS_DIR/mlflow.db EXPERIMENT OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys

import pandas as pd

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core import tracking  # noqa: E402


def export(uri: str, experiment: str, out: str) -> str:
    """Write ``out``/runs.json and ``out``/history.csv for ``experiment``'s runs; return the summary line."""
    client = tracking.client(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    info = [{"run_id": r.info.run_id, "run_name": r.info.run_name, "status": r.info.status,
             "start_time_ms": r.info.start_time, "end_time_ms": r.info.end_time, "params": r.data.params,
             "tags": {k: v for k, v in r.data.tags.items() if not k.startswith("mlflow.log-model")},
             "metrics": r.data.metrics} for r in runs]
    with open(f"{out}/runs.json", "w") as f:
        json.dump(info, f, indent=1, sort_keys=True)
    rows = [{"run_name": r.info.run_name, "step": m.step, "key": key, "value": m.value}
            for r in runs if "mlflow.parentRunId" in r.data.tags
            for key in r.data.metrics for m in client.get_metric_history(r.info.run_id, key)]
    steps = pd.DataFrame(rows)
    twice = steps.duplicated(["run_name", "key", "step"]).sum()
    history = steps.pivot_table(index=["run_name", "step"], columns="key", values="value").reset_index()
    history.to_csv(f"{out}/history.csv", index=False)
    return (f"{len(info)} runs; history: {history.shape[0]} rows x {history.shape[1]} columns; "
            f"metric steps logged more than once: {twice}")


if __name__ == "__main__":
    print(export(*sys.argv[1:4]))
