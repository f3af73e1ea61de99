"""The sweep's MLflow runs as files: each run's params, tags and status (runs.json), and every
metric's history, one row per epoch (history.csv)."""
import json, sys
import pandas as pd
from mlflow.tracking import MlflowClient

uri, experiment, out = sys.argv[1:4]
client = MlflowClient(uri)
exp = client.get_experiment_by_name(experiment)
runs = client.search_runs([exp.experiment_id], max_results=1000)
info = [{"run_id": r.info.run_id, "run_name": r.info.run_name, "status": r.info.status,
         "start_time_ms": r.info.start_time, "end_time_ms": r.info.end_time,
         "params": r.data.params, "tags": {k: v for k, v in r.data.tags.items() if not k.startswith("mlflow.log-model")},
         "metrics": r.data.metrics} for r in runs]
with open(f"{out}/runs.json", "w") as f:
    json.dump(info, f, indent=1, sort_keys=True)
rows = []
for r in runs:
    if "mlflow.parentRunId" not in r.data.tags:
        continue
    for key in r.data.metrics:
        for m in client.get_metric_history(r.info.run_id, key):
            rows.append({"run_name": r.info.run_name, "step": m.step, "key": key, "value": m.value})
twice = pd.DataFrame(rows).duplicated(["run_name", "key", "step"]).sum()
history = pd.DataFrame(rows).pivot_table(index=["run_name", "step"], columns="key", values="value").reset_index()
history.to_csv(f"{out}/history.csv", index=False)
print(f"{len(info)} runs; history: {history.shape[0]} rows x {history.shape[1]} columns; "
      f"metric steps logged more than once: {twice}")
