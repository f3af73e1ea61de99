"""What every sweep script shares: presets and flags, the data check, Ray start-up, and the final
tables printed, saved (CSV, Markdown, LaTeX) and logged to the sweep's parent MLflow run.

A sweep script declares a ``Sweep``: its presets, which preset entries are swept (grid axes), and a
``tables`` function from the finished trials to the paper's tables. ``run`` does the rest, and
``sweeps.report`` rebuilds the same tables from MLflow alone with the same ``tables`` function.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pandas as pd

from cluster.address import cluster_address
from core import tracking
from core.config import TRAIN_FIELDS, ConfigError, TrainConfig, dataset_defaults, field_assignments, schedule_within
from core.data import DATASETS, load
from core.reporting import markdown_table
from core.sweep import (PROJECT_DIR, SweepInterrupted, SweepResult, SweepSpec, claim_folder, grid_configs,
                        one_driver, run_sweep, signals_held)

log = logging.getLogger(__name__)

@dataclass
class Table:
    stem: str  # file name without extension
    title: str
    frame: pd.DataFrame  # exactly the columns to show
    plots: dict[str, bytes] = field(default_factory=dict)

    def markdown(self) -> str:
        return f"{self.title}\n\n" + markdown_table(self.frame)


@dataclass
class Sweep:
    name: str  # script name; the MLflow parent run's "sweep" tag
    doc: str
    presets: dict[str, dict[str, Any]]  # TrainConfig fields and grid axes (lists), per preset
    axes: dict[str, str]  # preset entry holding a list -> the TrainConfig field it sweeps
    tables: Callable[[pd.DataFrame, dict[str, Any]], list[Table]]  # finished trials, settings -> tables


def parser(description: str, presets: dict[str, dict[str, Any]]) -> argparse.ArgumentParser:
    """Flags shared by all sweeps; a flag left out takes the preset's value."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(presets), default="paper")
    p.add_argument("--name", help="MLflow experiment and Ray run name (default: the sweep's and preset's)")
    p.add_argument("--restart", action="store_true",
                   help="archive a previous sweep of this name (its folder and MLflow parent run) and start afresh; "
                        "without it, a re-run resumes the sweep, and only with the same settings")
    p.add_argument("--dataset", choices=sorted(DATASETS))
    p.add_argument("--data-root", help="absolute directory holding the dataset")
    p.add_argument("--download", action="store_true", default=None,
                   help="let torchvision download CIFAR-10/100 or SVHN into --data-root (needs internet)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seeds", type=int, help="number of seeds per grid cell (seeds 0..N-1)")
    p.add_argument("--results-dir", default=os.path.join(PROJECT_DIR, "results"))
    p.add_argument("--tracking-uri", help="default: sqlite:///<results-dir>/mlflow.db; on a cluster "
                                          "http://<head-private-ip>:5000")
    p.add_argument("--cpus-per-trial", type=_amount_or_auto, default="auto",
                   help="auto (default): 1 beside a GPU; on CPUs, the cluster's CPUs shared by the trials at once")
    p.add_argument("--gpus-per-trial", type=_amount_or_auto,
                   help="fractions pack several trials on one GPU; 'auto' measures one trial's memory and packs "
                        "as many as fit")
    p.add_argument("--cpu-fallback", action="store_true", help="run on CPUs when the cluster has no GPU")
    p.add_argument("--max-concurrent", type=int, default=0, help="0: as many as resources allow")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a crashed trial from its checkpoint")
    p.add_argument("--num-cpus", type=int, help="CPUs of a local Ray instance (ignored on a cluster)")
    p.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="TrainConfig fields over the preset's (YAML values), e.g. clean_forward=true; a field the "
                        "sweep varies has its own flag")
    p.add_argument("--fuse", type=_count_or_auto, default="auto",
                   help="grid cells of one shape train fused, at most K to a trial (core/fused.py); 1: a trial "
                        "per cell; auto (default): each shape's cells spread evenly over the trials that run at once")
    return p


def _amount_or_auto(text: str) -> float | str:
    return text if text == "auto" else float(text)


def _count_or_auto(text: str) -> int | str:
    return text if text == "auto" else int(text)


def settings(args: argparse.Namespace, presets: dict[str, dict[str, Any]], sweep: str,
             overridable: tuple[str, ...] = ()) -> dict[str, Any]:
    """The preset's values overridden by every flag given on the command line. The schedule is cut
    to ``epochs`` when a flag shortens it (milestones and the DRW epoch stay inside the run). ``--set``
    fields come between the preset and the named flags; the seed is the grid's (``--seeds``)."""
    fixed = field_assignments(args.set)
    if "seed" in fixed:
        raise ConfigError("set", "seed is the grid's: pass --seeds N for seeds 0..N-1")
    chosen = {**presets[args.preset], **fixed}
    for key in ("dataset", "data_root", "download", "epochs", "seeds", "gpus_per_trial", *overridable):
        if getattr(args, key, None) is not None:
            chosen[key] = getattr(args, key)
    if chosen.get("data_root"):
        chosen["data_root"] = os.path.abspath(chosen["data_root"])
    if chosen.get("epochs") is not None:
        schedule = {**dataset_defaults(chosen["dataset"]), **chosen}
        chosen.update(schedule_within(chosen["epochs"], schedule["milestones"], schedule["drw_epoch"],
                                      schedule["warmup_epochs"]))
    chosen["name"] = args.name or f"{sweep}-{args.preset}"
    chosen["preset"] = args.preset
    return chosen


def check_data(dataset: str, data_root: str | None, download: bool = False) -> None:
    """Stop at once, with the command that provides the data, when it cannot be loaded."""
    try:
        load(dataset, data_root, download)
    except (ValueError, OSError) as err:
        help_text = DATASETS[dataset].download_help
        raise SystemExit(f"{dataset} is not available: {err}\nTo provide it: {help_text}\n"
                         f"then pass --data-root DIR (an absolute path).") from None


def init_ray(num_cpus: int | None) -> None:
    """Join the Ray cluster this script was launched on, else start a local instance; one log line
    says which. In order:

    1. ``RAY_ADDRESS`` when set (``ray job submit`` sets it for the job's entrypoint);
    2. the cluster that ``ray start`` started on this node, if it answers (``ray submit`` runs the
       script on the head over SSH, with no RAY_ADDRESS); see ``cluster.address``;
    3. a local instance bound to the loopback address, with ``num_cpus`` CPUs.

    The address is passed to ``ray.init`` explicitly: given "auto", Ray switches the driver to token
    authentication whenever a ~/.ray/auth_token from an earlier local run exists, and a cluster
    started without tokens then refuses every call. A local instance defaults to RAY_AUTH_MODE
    disabled (it listens on 127.0.0.1 only) so that it writes no such token.
    """
    import ray

    # Checkpointing every epoch is intended; Ray's warning about frequent snapshots is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return
    address, source = cluster_address()
    if address:
        with signals_held("Ray was joining the cluster", held=(signal.SIGINT, signal.SIGHUP)):
            ray.init(address=address)
        nodes = [n for n in ray.nodes() if n["Alive"]]
        resources = ray.cluster_resources()
        log.info("Ray: joined the cluster at %s (%s): %d node(s), %g CPUs, %g GPUs", address, source,
                 len(nodes), resources.get("CPU", 0), resources.get("GPU", 0))
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # The local instance's processes share the driver's terminal, and a hangup (a dropped SSH
    # connection) would kill them under the sweep, which then waits on them for ever; they inherit an
    # ignored SIGHUP. The driver takes it as Ctrl+C while trials run (core.sweep.stop_signals_as_ctrl_c).
    # SIGTERM is Ray's own here: ray.init sets a handler that exits.
    with signals_held("Ray was starting", held=(signal.SIGINT,), ignored=(signal.SIGHUP,)):
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1")
    log.info("Ray: started a local instance with %g CPUs (%s)", ray.cluster_resources().get("CPU", 0), source)


def spec_from(chosen: dict[str, Any], args: argparse.Namespace, base: dict[str, Any],
              grid: dict[str, list[Any]], **extra: Any) -> SweepSpec:
    return SweepSpec(name=chosen["name"], base=base, grid=grid, results_dir=args.results_dir,
                     tracking_uri=args.tracking_uri, preset=args.preset, cpus_per_trial=args.cpus_per_trial,
                     gpus_per_trial=chosen.get("gpus_per_trial", 0.0), cpu_fallback=args.cpu_fallback,
                     max_concurrent=args.max_concurrent, max_failures=args.max_failures, restart=args.restart,
                     **{"fuse": args.fuse, **extra})


def check_spec(spec: SweepSpec, num_cpus: int | None) -> None:
    """What can be checked of a sweep before anything is made: its grid and cells, its fields, --num-cpus."""
    grid_configs(spec)
    if num_cpus is not None and num_cpus < 1:  # a local Ray of no CPU would wait for ever for the first trial
        raise ValueError(f"num_cpus: got {num_cpus}; allowed: an integer >= 1")


def start(spec: SweepSpec, num_cpus: int | None) -> None:
    """Everything that can fail on the user's input fails here, before Ray starts: the grid, the data,
    and the sweep folder (a re-run with other settings); then join or start Ray."""
    check_spec(spec, num_cpus)
    check_data(spec.base["dataset"], spec.base.get("data_root"), spec.base.get("download", False))
    claim_folder(spec)
    init_ray(num_cpus)


def run(sweep: Sweep, argv: list[str] | None = None) -> list[Table]:
    """Parse flags, run the grid, and publish the sweep's tables."""
    spec, chosen, args = grid_sweep(sweep, argv)
    with one_driver(spec.results_dir, spec.name):
        start(spec, args.num_cpus)
        result = run_sweep(spec)
        tables, not_made = tables_with_rows(sweep, finished_or_exit(result, spec), chosen)
        publish(result, spec.path, tables, not_made)
    return tables


def grid_sweep(sweep: Sweep, argv: list[str] | None) -> tuple[SweepSpec, dict[str, Any], argparse.Namespace]:
    """The grid the flags ask for: its spec, its settings (the preset's, over which the flags') and the flags."""
    p = parser(sweep.doc, sweep.presets)
    for axis in sweep.axes:
        kind = type(next(iter(sweep.presets.values()))[axis][0])
        p.add_argument("--" + axis.replace("_", "-"), type=kind, nargs="+", help=f"grid of {sweep.axes[axis]}")
    args = p.parse_args(argv)
    fixed = field_assignments(args.set)
    for axis, field_name in sweep.axes.items():
        if field_name in fixed:
            raise ConfigError("set", f"{field_name} is the grid's in this sweep: pass --{axis.replace('_', '-')}")
    chosen = settings(args, sweep.presets, sweep.name, tuple(sweep.axes))
    if chosen["seeds"] < 1:
        raise ValueError(f"seeds: got {chosen['seeds']}; allowed: an integer >= 1")
    base = {k: v for k, v in chosen.items() if k in TRAIN_FIELDS}
    grid = {field_name: list(chosen[axis]) for axis, field_name in sweep.axes.items()}
    grid["seed"] = list(range(chosen["seeds"]))
    # The parent run names the script and its settings from the start, so that sweeps.report can
    # tabulate the trials finished so far of a sweep still running or interrupted.
    tags = {"sweep_script": sweep.name, "settings": json.dumps(chosen, sort_keys=True)}
    return spec_from(chosen, args, base, grid, tags=tags), chosen, args


def check_space(space: Callable, base: dict[str, Any], fixed: Sequence[str] = (), samples: int = 64) -> None:
    """Sample the define-by-run space with a throwaway Optuna study and validate every resulting
    config, so an invalid combination fails here with the field's name, before any trial starts; a
    ``fixed`` field (``--set``) that the space sets is refused, as the search would overwrite it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(samples):
        trial = study.ask()
        constants = space(trial) or {}
        searched = sorted(set(fixed) & {*trial.params, *constants})
        if searched:
            raise ConfigError("set", f"{searched[0]} is the search's to choose; allowed: fields it leaves alone")
        TrainConfig.from_dict({**base, **trial.params, **constants})
        study.tell(trial, 0.0)


def tables_with_rows(sweep: Sweep, trials: pd.DataFrame, settings: dict[str, Any]) -> tuple[list[Table], list[str]]:
    """The sweep's tables over the finished ``trials``, less those none of them falls in (Table 6 of a
    grid without Remix-DRW and MAMix-DRW), and a line naming each of those: no file is made for it, and
    the line is printed after the tables that are."""
    tables = sweep.tables(trials, settings)
    not_made = [f"{table.title}\n\nnot made: none of the {len(trials)} finished trials is one of this table's rows"
                for table in tables if table.frame.empty]
    return [table for table in tables if not table.frame.empty], not_made


def print_not_made(lines: Sequence[str]) -> None:
    for line in lines:
        print(line + "\n")


def finished(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[trials["status"] == "FINISHED"].reset_index(drop=True)


def finished_or_exit(result: SweepResult, spec: SweepSpec) -> pd.DataFrame:
    """The finished trials; when none finished, the sweep ends here with one line and the reasons."""
    done = finished(result.trials)
    if done.empty:
        publish(result, spec.path, [])
        raise SystemExit(f"error: all {len(result.trials)} trials of {spec.name} failed; there is no table to "
                         f"make.\n\n{failures(result.trials)}")
    return done


def failures(trials: pd.DataFrame) -> str:
    """The trials that did not finish, with the reason for each, as a Markdown table."""
    failed = trials[trials["status"] != "FINISHED"]
    return failed[["trial", "status", "error"]].to_markdown(index=False)


def publish(result: SweepResult, folder: str, tables: list[Table], not_made: Sequence[str] = ()) -> None:
    """Print each table, save it as CSV, Markdown and LaTeX in the sweep's results folder with its
    plots and the trial table, and log all of them to the parent MLflow run. Trials that did not
    finish are listed under each table with their reasons; the lines of ``not_made`` tables follow."""
    files = {"trials.csv": result.trials.to_csv(index=False).encode()}
    failed = int((result.trials["status"] != "FINISHED").sum())
    for table in tables:
        text = table.markdown()
        if failed:
            text += f"\n\n{failed} of {len(result.trials)} trials did not finish (not in the table):\n\n" \
                    + failures(result.trials)
        print(text + "\n")
        files.update(table_files(table, text))
    print_not_made(not_made)
    os.makedirs(folder, exist_ok=True)
    for name, content in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(content)
    tracking.log_artifacts(result.tracking_uri, result.parent_run_id, files)
    log.info("saved %s in %s", ", ".join(files), folder)


def table_files(table: Table, markdown: str | None = None) -> dict[str, bytes]:
    return {f"{table.stem}.csv": table.frame.to_csv(index=False).encode(),
            f"{table.stem}.md": ((markdown or table.markdown()) + "\n").encode(),
            f"{table.stem}.tex": table.frame.to_latex(index=False, caption=table.title).encode(),
            **table.plots}


def entry(main: Callable[[], Any]) -> None:
    """Run a sweep's ``main`` as a command: bad input ends with one clear line naming the field, and
    Ctrl+C with one line on what was kept, not a traceback (exit status 130, as a shell gives Ctrl+C;
    143 for SIGTERM and 129 for SIGHUP, which stop it the same way)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        main()
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    except SweepInterrupted as stop:
        print(stop, file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None


# The embedded dataset's short schedule shared by every demo preset: warm-up, DRW with the first
# decay, 10 epochs; each trial takes seconds on a laptop CPU.
DEMO = dict(dataset="digits", model="small_cnn", epochs=10, milestones=[8], drw_epoch=8, warmup_epochs=1,
            seeds=2, gpus_per_trial=0.0)
