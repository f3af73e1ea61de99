"""How many trials can log to one MLflow SQLite store at once without losing a metric?

Each of N processes plays one trial: it opens its child run and logs E evaluations (about 60
metrics each, as a real trial does) as fast as it can, through the platform's own
``core.tracking.TrialRun`` (with its retries). The script then counts the steps that arrived, prints a
JSON line per measurement and, at the end, their table (``--table`` prints a file's lines as that table).

    python bench/mlflow_concurrency.py --trials 1 4 16 32 --epochs 20 \\
        --json docs/results/mlflow-concurrency/sqlite.jsonl
    python bench/mlflow_concurrency.py --table docs/results/mlflow-concurrency/sqlite.jsonl
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pandas as pd  # noqa: E402

from bench.summarise import emit, read  # noqa: E402
from core import tracking  # noqa: E402
from core.reporting import markdown_table  # noqa: E402

# A measurement's fields and their column titles.
COLUMNS = {"trials": "trials at once", "expected_steps": "steps expected", "arrived_steps": "steps arrived",
           "buffered_events": "steps buffered after retries", "wall_s": "wall s", "steps_per_s": "steps/s"}


def log_trial(args: tuple[str, str, str, int, int]) -> tuple[str, int]:
    uri, experiment, parent, index, epochs = args
    run = tracking.TrialRun(uri, experiment, parent, f"t{index}", f"t{index}", {"seed": index})
    retries = 0
    for epoch in range(1, epochs + 1):
        metrics = {"epoch": epoch, "test_acc": index + epoch / 1000, "margin_gap": -epoch}
        metrics.update({f"class_acc_{c}": epoch / 100 for c in range(10)})
        metrics.update({f"class_margin_{c}": -epoch / 100 for c in range(10)})
        metrics.update({f"extra_{c}": float(c) for c in range(37)})
        run.log_epoch(metrics)
        retries += len(run.pending)
    run.finish("FINISHED")
    return run.run_id, retries


def measure(trials: int, epochs: int, folder: str) -> dict[str, float]:
    uri = tracking.default_tracking_uri(folder)
    experiment = tracking.experiment_id(uri, f"concurrency-{trials}", os.path.join(folder, "mlartifacts"))
    parent = tracking.start_parent_run(uri, experiment, f"concurrency-{trials}", {})
    start = time.perf_counter()
    # A fork server that has imported MLflow and its SQL store's module (a second of CPU each trial would
    # import) but opened no store: trials start in milliseconds, and no SQLite connection is shared
    # across a fork.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["core.tracking", "mlflow.store.tracking.sqlalchemy_store"])
    with context.Pool(trials) as pool:
        results = pool.map(log_trial, [(uri, experiment, parent, i, epochs) for i in range(trials)])
    wall = time.perf_counter() - start
    client = tracking.client(uri)
    arrived = sum(len(client.get_metric_history(run_id, "test_acc")) for run_id, _ in results)
    return {"trials": trials, "epochs": epochs, "expected_steps": trials * epochs, "arrived_steps": arrived,
            "buffered_events": sum(r for _, r in results), "wall_s": round(wall, 2),
            "steps_per_s": round(arrived / wall, 1)}


def table(rows: list[dict[str, float]]) -> str:
    """The measurements as a Markdown table, a row each in the order measured."""
    return markdown_table(pd.DataFrame(rows)[list(COLUMNS)].rename(columns=COLUMNS))


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--json", help="append one JSON line per measurement to this file")
    p.add_argument("--table", metavar="JSONL", help="only print the table of this file's measurements")
    args = p.parse_args(argv)
    if args.table:
        rows = read([args.table])
        print(table(rows))
        return rows
    rows = []
    for n in args.trials:
        with tempfile.TemporaryDirectory() as folder:
            row = measure(n, args.epochs, folder)
        emit(row, args.json)
        rows.append(row)
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
