"""What every sweep script shares: presets and flags, the data check, Ray start-up, and the final
table printed, saved (CSV, Markdown) and logged to the sweep's parent MLflow run."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any, Callable

import pandas as pd

from core import tracking
from core.data import DATASETS, load
from core.sweep import PROJECT_DIR, SweepResult, SweepSpec

log = logging.getLogger(__name__)


def parser(description: str, presets: dict[str, dict[str, Any]]) -> argparse.ArgumentParser:
    """Flags shared by all sweeps; a flag left out takes the preset's value."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(presets), default="paper")
    p.add_argument("--name", help="MLflow experiment and Ray run name (default: the sweep's and preset's)")
    p.add_argument("--dataset", choices=sorted(DATASETS))
    p.add_argument("--data-root", help="absolute directory holding the dataset")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seeds", type=int, help="number of seeds per grid cell (seeds 0..N-1)")
    p.add_argument("--results-dir", default=os.path.join(PROJECT_DIR, "results"))
    p.add_argument("--tracking-uri", help="default: sqlite:///<results-dir>/mlflow.db; on a cluster "
                                          "http://<head-private-ip>:5000")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, help="fractions pack several trials on one GPU")
    p.add_argument("--cpu-fallback", action="store_true", help="run on CPUs when the cluster has no GPU")
    p.add_argument("--max-concurrent", type=int, default=0, help="0: as many as resources allow")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a crashed trial from its checkpoint")
    p.add_argument("--num-cpus", type=int, help="CPUs of a local Ray instance (ignored on a cluster)")
    return p


def settings(args: argparse.Namespace, presets: dict[str, dict[str, Any]], sweep: str) -> dict[str, Any]:
    """The preset's values overridden by every flag given on the command line."""
    chosen = dict(presets[args.preset])
    for key in ("dataset", "data_root", "epochs", "seeds", "gpus_per_trial"):
        if getattr(args, key) is not None:
            chosen[key] = getattr(args, key)
    if chosen.get("data_root"):
        chosen["data_root"] = os.path.abspath(chosen["data_root"])
    chosen["name"] = args.name or f"{sweep}-{args.preset}"
    return chosen


def check_data(dataset: str, data_root: str | None) -> None:
    """Stop at once, with the command that provides the data, when it cannot be loaded."""
    try:
        load(dataset, data_root)
    except (ValueError, OSError) as err:
        help_text = DATASETS[dataset].download_help
        raise SystemExit(f"{dataset} is not available: {err}\nTo provide it: {help_text}\n"
                         f"then pass --data-root DIR (an absolute path).") from None


def init_ray(num_cpus: int | None) -> None:
    """Connect to the running cluster (``ray submit``, RAY_ADDRESS) or start a local instance bound
    to the loopback address."""
    import ray

    # Checkpointing every epoch is intended; Ray's warning about frequent snapshots is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(include_dashboard=False)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1")


def spec_from(chosen: dict[str, Any], args: argparse.Namespace, base: dict[str, Any],
              grid: dict[str, list[Any]], **extra: Any) -> SweepSpec:
    return SweepSpec(name=chosen["name"], base=base, grid=grid, results_dir=args.results_dir,
                     tracking_uri=args.tracking_uri, preset=args.preset, cpus_per_trial=args.cpus_per_trial,
                     gpus_per_trial=chosen.get("gpus_per_trial", 0.0), cpu_fallback=args.cpu_fallback,
                     max_concurrent=args.max_concurrent, max_failures=args.max_failures, **extra)


def publish(result: SweepResult, spec: SweepSpec, table: pd.DataFrame, columns: list[str], stem: str,
            title: str, plots: dict[str, bytes] | None = None) -> str:
    """Print the table, save it as CSV and Markdown in the sweep's results folder, and log both (and
    the plots) to the parent MLflow run. Returns the Markdown."""
    markdown = f"{title}\n\n" + table[columns].to_markdown(index=False)
    if result.num_errors:
        markdown += f"\n\n{result.num_errors} trial(s) failed; see trials.csv"
    print(markdown)
    os.makedirs(spec.path, exist_ok=True)
    files = {f"{stem}.csv": table.to_csv(index=False).encode(), f"{stem}.md": (markdown + "\n").encode(),
             "trials.csv": result.trials.to_csv(index=False).encode(), **(plots or {})}
    for name, content in files.items():
        with open(os.path.join(spec.path, name), "wb") as f:
            f.write(content)
    tracking.log_artifacts(result.tracking_uri, result.parent_run_id, files)
    log.info("saved %s in %s", ", ".join(files), spec.path)
    return markdown


def entry(main: Callable[[], Any]) -> None:
    """Run a sweep's ``main`` as a command: bad input ends with one clear line naming the field,
    not a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        main()
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
