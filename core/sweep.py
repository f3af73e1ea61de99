"""The sweep runner shared by every script in ``sweeps/``: a sweep spec in, a trial table out.

A spec names the base TrainConfig, the swept fields (a grid, or an Optuna searcher), the results
folder, the tracking URI and the resources per trial. Running it validates every grid cell before
any trial starts, opens (or, for an interrupted sweep, reopens) the parent MLflow run, runs the Ray
Tune grid with retries from checkpoints, and returns one row per trial.

A sweep's folder (``<results_dir>/<name>``) records the settings it was started with (sweep.json).
Re-running the same spec after an interruption resumes it with ``Tuner.restore``: finished trials
are not run again. A spec with other settings under the same name is refused before anything runs,
since resuming would publish the old trials under the new settings; ``restart`` archives the old
folder and its MLflow parent run, then starts afresh.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import math
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
import ray
from ray import tune
from ray.tune.logger import JsonLoggerCallback

from core import stage_cache, stages, tracking
from core.config import FORMER_DEFAULTS, TRAIN_DEFAULTS, TrainConfig
from core.progress import DONE, SweepProgress, error_reason, member_cells, stop_reason, trial_label
from core.train import pack_key
from core.tune import FAULT_POINTS, end_stopped_run, search_trial, trial

log = logging.getLogger(__name__)

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATE_FILE = "sweep.json"  # in the sweep's folder: parent run, tracking URI, settings
NOT_SETTINGS = ("download",)  # base fields that do not change what a trial computes


@dataclass
class SweepSpec:
    name: str  # MLflow experiment and Ray run name
    base: dict[str, Any]  # TrainConfig fields shared by all trials
    grid: dict[str, list[Any]] = field(default_factory=dict)  # swept TrainConfig fields, full grid
    results_dir: str = os.path.join(PROJECT_DIR, "results")
    tracking_uri: str | None = None  # default: sqlite under results_dir
    preset: str = ""
    cpus_per_trial: float | str = "auto"  # "auto": one beside a GPU; on CPUs, the cluster's shared by the trials
    gpus_per_trial: float | str = 0.0  # a fraction packs trials on one GPU; "auto" measures the model
    cpu_fallback: bool = False  # run on CPUs when the cluster has no GPU, instead of refusing
    max_concurrent: int = 0  # 0: as many as the resources allow
    max_failures: int = 2  # retries of a crashed trial, each from its last checkpoint
    search_alg: Any = None  # e.g. OptunaSearch; then grid must be empty and num_samples set
    num_samples: int = 1
    scheduler: Any = None  # searcher and scheduler carry their own metric and mode
    fault: tuple[str, int] | None = None  # drill: (a kind of core.tune.FAULT_POINTS, epoch), once per trial
    restart: bool = False  # archive a previous sweep of this name (folder and parent run) and start afresh
    # Grid cells that share a fusable key (core.train.pack_key) train as one Ray trial of at most this
    # many members; 1: a trial per cell; "auto": each key's cells spread evenly over the trials the
    # cluster runs at once.
    fuse: int | str = 1
    experiment: str | None = None  # MLflow experiment (default: name); rounds of one search share one
    parent_run_id: str | None = None  # a round of a grown grid: its sweep's parent run (``grid_rounds``)
    tags: dict[str, str] = field(default_factory=dict)  # more parent-run tags (sweeps.report reads a script's)
    # A fused search (core.tune.search_trial): study path and name, space, objective, sampler seed;
    # num_samples members are asked, ``fuse`` to a Ray trial.
    study: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.results_dir = os.path.abspath(self.results_dir)

    @property
    def path(self) -> str:
        return os.path.join(self.results_dir, self.name)

    @property
    def uri(self) -> str:
        return self.tracking_uri or tracking.default_tracking_uri(self.results_dir)


@dataclass
class SweepResult:
    trials: pd.DataFrame
    experiment_id: str
    parent_run_id: str
    tracking_uri: str
    num_errors: int


class SettingsChanged(ValueError):
    """A sweep folder holds a sweep started with other settings."""


class SweepInterrupted(KeyboardInterrupt):
    """The sweep was stopped (Ctrl+C, or a signal taken as Ctrl+C: ``signum``) before all its trials
    ended: nothing is tabulated, and the same command goes on with it."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum


def hung_up(terminal: list[int]) -> None:
    """After SIGHUP: the shell passes its own on too (one stop, not two), and every write to the
    ``terminal`` descriptors now fails (EIO), which would end the stop half-way: they go nowhere."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with open(os.devnull, "w") as devnull:
        for fd in terminal:
            os.dup2(devnull.fileno(), fd)


@contextlib.contextmanager
def signal_handlers(handlers: dict[int, Any], restored: tuple[int, ...] = ()):
    """``handlers`` installed for the block; on the way out, the handlers that those signals and the
    ``restored`` ones had before it are put back."""
    previous = {signum: signal.getsignal(signum) for signum in restored}
    previous.update({signum: signal.signal(signum, handler) for signum, handler in handlers.items()})
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


@contextlib.contextmanager
def stop_signals_as_ctrl_c():
    """SIGTERM (what ``ray job stop``, Slurm's ``scancel`` and Kubernetes send first) and SIGHUP (the
    terminal closed: a dropped ``ray submit`` SSH connection) stop the sweep as Ctrl+C does: while the
    trials run, Ray Tune saves the experiment and stops them; before, a KeyboardInterrupt. Else Ray's
    driver aborts on SIGTERM, and SIGHUP kills it, leaving every run RUNNING. Set after ``ray.init``,
    whose core worker installs the SIGTERM handler; only the main thread may set one. Yields the
    signals received. Ctrl+C's own handler is restored on the way out: Ray Tune leaves its handler in
    place after a fit (``tune._setup_signal_catching``), and Ctrl+C, or a signal taken as it, outside the
    next fit (between a search's rounds) only logged Tune's warning and stopped nothing."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    terminal = [fd for fd in (1, 2) if os.isatty(fd)]  # stdout, stderr

    def stop(signum: int, frame: Any) -> None:
        if signum == signal.SIGHUP:
            hung_up(terminal)
        received.append(signum)
        handler = signal.getsignal(signal.SIGINT)  # Ray Tune's while it runs trials
        if not callable(handler):  # Ctrl+C ignored: a job started in the background by a script
            raise KeyboardInterrupt
        handler(signum, frame)

    with signal_handlers({signal.SIGTERM: stop, signal.SIGHUP: stop}, restored=(signal.SIGINT,)):
        yield received


@contextlib.contextmanager
def signals_held(what: str, held: tuple[int, ...], ignored: tuple[int, ...] = ()):
    """The ``held`` signals (Ctrl+C's SIGINT, SIGHUP) wait for the block to end, then stop the sweep with
    one line; a second one stops it at once, in case the block hangs. The ``ignored`` ones are ignored,
    by the block and by the processes it starts. For ``ray.init``: interrupted while it starts a local
    instance, it leaves some of that instance's processes running without a driver (seen: its
    dashboard and runtime-env agents, for a minute or more). Only the main thread may set a handler."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    terminal = [fd for fd in (1, 2) if os.isatty(fd)]  # stdout, stderr

    def hold(signum: int, frame: Any) -> None:
        if signum == signal.SIGHUP:
            hung_up(terminal)
        received.append(signum)
        if len(received) > 1:
            raise KeyboardInterrupt

    with signal_handlers({**{signum: hold for signum in held}, **{signum: signal.SIG_IGN for signum in ignored}}):
        yield
    if received:
        raise SweepInterrupted(f"interrupted while {what}, before any trial; the same command starts the sweep",
                               received[0])


def grid_configs(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every cell of the grid as a full, validated TrainConfig dict; a bad value of the grid or of the spec
    fails here, before Ray."""
    for key, values in spec.grid.items():
        if len(values) == 0:
            raise ValueError(f"{key}: the grid holds no value; give at least one")
        # A value given twice would train its cells twice and count them as more seeds in the tables.
        twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if twice is not None:
            raise ValueError(f"{key}: the grid holds {twice!r} twice; give each value once (more trials of a "
                             f"cell: more seeds)")
    if spec.num_samples < 1:
        raise ValueError(f"num_samples: got {spec.num_samples}; allowed: an integer >= 1")
    gpus, cpus = spec.gpus_per_trial, spec.cpus_per_trial
    if gpus != "auto" and (not isinstance(gpus, (int, float)) or gpus < 0):
        raise ValueError(f"gpus_per_trial: got {gpus!r}; allowed: a number >= 0 or 'auto'")
    if cpus != "auto" and (not isinstance(cpus, (int, float)) or cpus <= 0):
        raise ValueError(f"cpus_per_trial: got {cpus!r}; allowed: a number > 0 or 'auto'")
    if spec.max_concurrent < 0:
        raise ValueError(f"max_concurrent: got {spec.max_concurrent}; allowed: an integer >= 0 (0: as many as the "
                         f"resources allow)")
    check_fuse(spec.fuse)
    if spec.fault is not None and spec.fault[0] not in FAULT_POINTS:
        raise ValueError(f"fault: got {spec.fault[0]!r}; allowed: {sorted(FAULT_POINTS)}")
    return [TrainConfig.from_dict({**spec.base, **cell}).to_dict() for cell in grid_cells(spec)]


def grid_cells(spec: SweepSpec) -> list[dict[str, Any]]:
    """The grid's cells in grid order: each one's swept values (one empty cell for an empty grid)."""
    keys = list(spec.grid)
    return [dict(zip(keys, values)) for values in itertools.product(*spec.grid.values())] or [{}]


def check_fuse(fuse: int | str) -> None:
    if fuse != "auto" and not (isinstance(fuse, int) and not isinstance(fuse, bool) and fuse >= 1):
        raise ValueError(f"fuse: got {fuse!r}; allowed: an integer >= 1 (members per trial) or 'auto'")


def concurrent_trials(spec: SweepSpec, resources: dict[str, float]) -> int:
    """How many trials of ``resources`` the cluster runs at once (at most ``max_concurrent``)."""
    cluster = ray.cluster_resources()
    slots = int(cluster.get("CPU", 0) // resources["cpu"]) if resources["cpu"] else 1 << 30
    if resources["gpu"]:
        slots = min(slots, int(cluster.get("GPU", 0) // resources["gpu"]))
    if spec.max_concurrent:
        slots = min(slots, spec.max_concurrent)
    return max(1, slots)


def packs(spec: SweepSpec, slots: int) -> list[list[dict[str, Any]]]:
    """The grid's cells (swept values) grouped into Ray trials: cells of one fusable key, in grid order,
    at most ``spec.fuse`` to a trial; with ``auto``, each key's cells split evenly over ``slots`` trials."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for cell in grid_cells(spec):
        key = json.dumps(pack_key(TrainConfig.from_dict({**spec.base, **cell})), sort_keys=True, default=str)
        groups.setdefault(key, []).append(cell)
    out = []
    for group in groups.values():
        size = -(-len(group) // slots) if spec.fuse == "auto" else spec.fuse
        out += [group[i:i + size] for i in range(0, len(group), size)]
    return out


def trial_resources(spec: SweepSpec) -> dict[str, float]:
    """Resources per trial, checked against the cluster: a GPU request on a cluster without GPUs
    would leave every trial pending forever, so it is refused, or turned to CPU with ``cpu_fallback``."""
    cluster = ray.cluster_resources()
    gpus = spec.gpus_per_trial
    if gpus == "auto":
        gpus = auto_gpus_per_trial(spec.base) if cluster.get("GPU", 0) >= 1 else 0.0
        log.info("gpus_per_trial auto: %s", gpus)
    if gpus > 0 and cluster.get("GPU", 0) < gpus:
        if not spec.cpu_fallback:
            raise ValueError(f"gpus_per_trial: {gpus} requested but the Ray cluster has {cluster.get('GPU', 0):g} "
                             f"GPUs; use --gpus-per-trial 0, or --cpu-fallback to run on CPUs")
        log.warning("no GPU in the Ray cluster: running trials on CPUs (--cpu-fallback)")
        gpus = 0
    cpus = spec.cpus_per_trial
    if cpus != "auto" and cluster.get("CPU", 0) < cpus:
        raise ValueError(f"cpus_per_trial: {cpus} requested but the Ray cluster has {cluster.get('CPU', 0):g} CPUs; "
                         f"allowed: at most {cluster.get('CPU', 0):g}, or 'auto'")
    return {"cpu": 1.0 if cpus == "auto" else cpus, "gpu": gpus}


def auto_cpus(spec: SweepSpec, resources: dict[str, float], trials: int) -> float:
    """CPUs per trial for ``cpus_per_trial`` "auto": one beside a GPU (the data and the augmentation
    live on the GPU); on CPUs, the cluster's shared evenly by the trials that run at once, at most one
    node's (a trial runs on one node), so that a grid smaller than the cluster, say one paper cell on
    a laptop, still trains on every core rather than on one."""
    if spec.cpus_per_trial != "auto" or resources["gpu"]:
        return resources["cpu"]
    nodes = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]]
    at_once = min(trials, spec.max_concurrent or trials)
    return float(max(1, min(max(nodes), sum(nodes) // at_once)))


def trials_per_gpu(peak_bytes: int, total_bytes: int, headroom: float = 0.8, most: int = 8) -> int:
    """How many trials of a measured peak memory fit on one GPU, keeping 20 % headroom (fractional
    GPUs share memory with no isolation), at most ``most``."""
    return max(1, min(most, int(headroom * total_bytes // max(peak_bytes, 1))))


def auto_gpus_per_trial(base: dict[str, Any]) -> float:
    """Measure one trial's peak GPU memory over a short run (one epoch) on a GPU of the cluster and
    pack as many trials per GPU as fit: ``1 / trials_per_gpu``."""

    @ray.remote(num_gpus=1)
    def probe() -> tuple[int, int]:
        import torch

        from core.train import train

        torch.cuda.reset_peak_memory_stats()
        train({**base, "epochs": 1, "warmup_epochs": 0, "milestones": [], "drw_epoch": 0})
        return torch.cuda.max_memory_allocated(), torch.cuda.get_device_properties(0).total_memory

    peak, total = ray.get(probe.remote())
    return 1.0 / trials_per_gpu(peak, total)


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_DIR, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def sweep_settings(spec: SweepSpec) -> dict[str, Any]:
    """What the trials of a sweep compute, as JSON values: a re-run resumes only when they are equal."""
    settings: dict[str, Any] = {k: v for k, v in spec.base.items() if k not in NOT_SETTINGS}
    # A field whose default changed what trials compute is recorded even at its default, so that a sweep
    # started before the change (whose settings lack it: it meant the former value) does not resume.
    settings.update({k: TRAIN_DEFAULTS[k] for k in FORMER_DEFAULTS if k not in settings and k not in spec.grid})
    settings.update({f"{k} (grid)": v for k, v in spec.grid.items()})
    settings["num_samples"] = spec.num_samples
    settings["fuse"] = spec.fuse
    for key, part in (("search", spec.search_alg), ("scheduler", spec.scheduler)):
        if part is not None:
            settings[key] = type(part).__name__
    return json.loads(json.dumps(settings, default=str))


def read_state(path: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(path, STATE_FILE)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def setting_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key old -> new`` for every setting that differs, in key order; a setting the old record lacks
    that has a former default (``FORMER_DEFAULTS``) had that value."""
    def value(settings: dict[str, Any], key: str) -> Any:
        return settings.get(key, FORMER_DEFAULTS.get(key, "(not set)"))

    return [f"{key} {json.dumps(value(old, key))} -> {json.dumps(value(new, key))}"
            for key in sorted(set(old) | set(new)) if value(old, key) != value(new, key)]


def claim_folder(spec: SweepSpec) -> None:
    """Make sure the sweep's folder may be used by this spec, before anything runs: it is free, or it
    holds this very sweep (same settings and tracking store: it resumes), or this sweep with a grid that
    the spec grows (``grid_rounds``). A sweep with other settings stops here with one message naming
    them; with ``spec.restart`` it is archived first, with the rounds its grid grew by."""
    state = read_state(spec.path)
    if state is None and not tune.Tuner.can_restore(spec.path):
        return  # nothing to resume or protect (absent, or e.g. only a sweeps.report folder)
    if spec.restart:
        archive_sweep(spec.uri, spec.results_dir, spec.name, state)
        return
    if state is None or "settings" not in state:
        problem = "was started by an older version that did not record its settings"
    else:
        recorded, requested = grown_settings(state), sweep_settings(spec)
        differences = setting_differences(recorded, requested)
        if state.get("tracking_uri") != spec.uri:
            differences.append(f"tracking_uri {state.get('tracking_uri')} -> {spec.uri}")
        if not differences or grows(recorded, requested):
            return
        problem = "was started with other settings: " + "; ".join(differences)
    raise SettingsChanged(
        f"name: the sweep in {spec.path} {problem}. Resuming it would report its old trials under the new "
        f"settings. Either run this one under another name (--name NEW_NAME), or pass --restart to archive "
        f"the old sweep (folder and MLflow parent run) and start this one afresh; a grid may grow (more seeds, "
        f"more values of a swept field) but keeps every value it had")


GRID = " (grid)"  # the suffix of a swept field's key in a sweep's settings


def grown_settings(state: dict[str, Any]) -> dict[str, Any]:
    """A sweep's settings (its folder's sweep.json, ``state``) with its grid grown by each of its rounds."""
    settings = dict(state["settings"])
    for round_ in state.get("rounds", []):
        for field_name, values in round_["grid"].items():
            settings[field_name + GRID] = settings[field_name + GRID] + [v for v in values
                                                                          if v not in settings[field_name + GRID]]
    return settings


def grid_of(settings: dict[str, Any]) -> dict[str, list[Any]]:
    """The swept fields of a sweep's ``settings`` and their values."""
    return {k.removesuffix(GRID): v for k, v in settings.items() if k.endswith(GRID)}


def grows(recorded: dict[str, Any], requested: dict[str, Any]) -> bool:
    """Whether ``requested`` is ``recorded`` with more values in some swept fields and nothing else changed."""
    if set(recorded) != set(requested):
        return False
    return all(recorded[k] == requested[k] if not k.endswith(GRID) else set(map(json.dumps, recorded[k]))
               <= set(map(json.dumps, requested[k])) for k in recorded)


def grid_rounds(spec: SweepSpec) -> list[SweepSpec]:
    """The sweep as the rounds it trains in, each a Ray Tune experiment of its own folder under the
    sweep's one parent run: its first grid (``spec.name``), then each growth (``<name>-more<N>``, N the
    cells before it). A re-run whose grid holds more values (more seeds, say) adds a round per swept
    field that grew, of exactly the new cells: the trials already done are neither trained again nor
    relabelled. The rounds are recorded in the first folder's sweep.json before any of them runs, so that
    an interrupted sweep resumes each. Needs ``claim_folder(spec)`` done (it refuses any other change)."""
    state = read_state(spec.path)
    if spec.study or spec.search_alg or not spec.grid or state is None or "settings" not in state:
        return [spec]

    def round_spec(round_: dict[str, Any]) -> SweepSpec:
        return replace(spec, name=round_["name"], grid=round_["grid"], experiment=spec.experiment or spec.name,
                       parent_run_id=state["parent_run_id"])

    requested = sweep_settings(spec)
    rounds = [replace(spec, grid=grid_of(state["settings"]))] + [round_spec(r) for r in state.get("rounds", [])]
    grown = grid_of(grown_settings(state))
    added = []
    for field_name in spec.grid:
        new = [v for v in requested[field_name + GRID] if v not in grown[field_name]]
        if new:
            cells = math.prod(len(v) for v in grown.values())
            added.append({"name": f"{spec.name}-more{cells}", "grid": {**grown, field_name: new}})
            grown[field_name] = grown[field_name] + new
    if added:
        state["rounds"] = state.get("rounds", []) + added
        write_state(spec.path, state)
        for round_ in added:
            log.info("the sweep %s grows by %d trial(s), trained in the round %s", spec.name,
                     math.prod(len(v) for v in round_["grid"].values()) * spec.num_samples, round_["name"])
    return rounds + [round_spec(r) for r in added]


def write_state(path: str, state: dict[str, Any]) -> None:
    os.makedirs(path, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path, delete=False) as f:
        json.dump(state, f, indent=1)
    os.replace(f.name, os.path.join(path, STATE_FILE))


class SweepRunning(ValueError):
    """Another driver runs the sweep of this name in this results folder now."""


@contextlib.contextmanager
def one_driver(results_dir: str, name: str):
    """Hold the sweep ``name`` of ``results_dir`` for this process while the block runs: one driver at a
    time. A second (the same command re-run while the first still runs, e.g. in the tmux session of
    ``ray submit --tmux``) would restore the same experiment and train its trials twice, deleting the
    checkpoints the first resumes from; it is refused with one message naming the first. The lock
    (``<results_dir>/.<name>.lock``, beside the folder that ``--restart`` moves) is the kernel's, so a
    killed driver leaves none behind; on NFS, as /mnt/shared, the server holds it."""
    os.makedirs(results_dir, exist_ok=True)
    with open(os.path.join(results_dir, f".{name}.lock"), "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "a driver that has not written its name yet"
            raise SweepRunning(f"name: the sweep {name} in {results_dir} is running now ({holder}); a second "
                               f"driver would train its trials twice. Wait for it to end, stop it (Ctrl+C where "
                               f"it runs; a sweep submitted with --tmux: `ray attach --tmux CLUSTER.yaml`), or "
                               f"run this one under another name (--name NEW_NAME)") from None
        lock.truncate(0)
        lock.write(f"driver pid {os.getpid()} on {socket.gethostname()}, since "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}: {shlex.join(sys.argv)}\n")
        lock.flush()
        yield


def set_aside(results_dir: str, name: str, suffix: str = "") -> str:
    """Move ``<results_dir>/<name><suffix>``, if it exists, to ``<results_dir>/archived/<name>-<time><suffix>``;
    return that destination."""
    destination = os.path.join(results_dir, "archived", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}{suffix}")
    if os.path.exists(os.path.join(results_dir, name + suffix)):
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        shutil.move(os.path.join(results_dir, name + suffix), destination)
        log.info("--restart: archived the previous %s in %s", name + suffix, destination)
    return destination


def archive_sweep(uri: str, results_dir: str, name: str, state: dict[str, Any] | None) -> None:
    """Set the sweep's folder (if any) aside and mark its MLflow parent run (``state``'s, at its
    tracking URI, else ``uri``)."""
    destination = set_aside(results_dir, name)
    for round_ in (state or {}).get("rounds", []):  # a grown grid's: they belong to its parent run
        set_aside(results_dir, round_["name"])
    if state and state.get("parent_run_id"):
        where = state.get("tracking_uri", uri)
        try:
            tracking.archive_run(where, state["parent_run_id"], destination)
        except Exception as err:  # noqa: BLE001 - e.g. the old tracking server is gone; the folder moved
            log.warning("could not mark the old parent run %s archived at %s: %s", state["parent_run_id"], where, err)


def _parent_run(spec: SweepSpec, uri: str, experiment: str) -> str:
    """The sweep's parent run: reopened when the folder's sweep.json records one (the same sweep:
    claim_folder checked its settings), whether Ray resumes trials or, stopped while its stages trained,
    none had started, or when the spec is a new round of a grown grid (``spec.parent_run_id``); else a
    new one with the sweep's tags. The folder's sweep.json records it."""
    state = read_state(spec.path)
    run_id = state["parent_run_id"] if state is not None else spec.parent_run_id
    if run_id is not None:
        tracking.set_status(uri, run_id, "RUNNING")
        tracking.set_tags(uri, run_id, spec.tags)  # a sweep begun before they were set here; a grown grid's
    else:
        dataset = spec.base.get("dataset", "digits")
        run_id = tracking.start_parent_run(uri, experiment, spec.name, {
            "sweep": spec.name, "dataset": dataset, "preset": spec.preset, "git_commit": _git_commit(),
            "command_line": shlex.join([os.path.basename(sys.executable)] + sys.argv), **spec.tags,
        })
    if state is None:
        write_state(spec.path, {"parent_run_id": run_id, "experiment_id": experiment, "tracking_uri": uri,
                                "settings": sweep_settings(spec)})
    return run_id


def run_sweep(spec: SweepSpec) -> SweepResult:
    """Run (or resume) the sweep, round by round (``grid_rounds``), and return its trial table. Needs
    ``ray.init()`` done by the caller."""
    try:
        claim_folder(spec)
        rounds = grid_rounds(spec)
    except KeyboardInterrupt:
        raise SweepInterrupted(f"interrupted before the trials of {spec.name} started; the same command starts "
                               f"them") from None
    results = [run_round(round_) for round_ in rounds]
    if len(results) == 1:
        return results[0]
    first, errors = results[0], sum(r.num_errors for r in results)
    if errors:  # a later round's end set the parent FINISHED over an earlier round's FAILED
        tracking.set_status(first.tracking_uri, first.parent_run_id, "FAILED")
    return SweepResult(pd.concat([r.trials for r in results], ignore_index=True), first.experiment_id,
                       first.parent_run_id, first.tracking_uri, errors)


def sweep_label(spec: SweepSpec) -> str:
    """The sweep as its driver's lines name it: a round of a grown grid by its sweep's name (the one the
    user gave) and its own (``<name>-more<N>``, its folder)."""
    return spec.name if spec.parent_run_id is None else f"{spec.experiment} (its round {spec.name})"


def run_round(spec: SweepSpec) -> SweepResult:
    """Run (or resume) one Ray Tune experiment of the sweep: all of it, or a round of a grown grid."""
    total = len(grid_configs(spec)) * spec.num_samples  # members
    uri = spec.uri
    parent, fitting = None, False
    received: list[int] = []  # bound before the handlers: a signal may come while they are being set
    try:
        with stop_signals_as_ctrl_c() as received:
            resources = trial_resources(spec)
            os.makedirs(spec.results_dir, exist_ok=True)
            experiment = tracking.experiment_id(uri, spec.experiment or spec.name,
                                                os.path.join(spec.results_dir, "mlartifacts"))
            resuming = tune.Tuner.can_restore(spec.path)
            parent = _parent_run(spec, uri, experiment)
            tuner, ray_trials = _tuner(spec, uri, experiment, parent, resources, total, resuming)
            fitting = True
            results = tuner.fit()
    except KeyboardInterrupt as stop:  # Ctrl+C, or a signal taken as it, before Tune's own handler is set
        if parent is not None:
            tracking.set_status(uri, parent, "KILLED")
        if fitting or isinstance(stop, SweepInterrupted):
            raise
        raise SweepInterrupted(f"interrupted before the trials of {sweep_label(spec)} started; the same command "
                               f"starts them", *received[:1]) from None
    except BaseException:
        if parent is not None:
            tracking.set_status(uri, parent, "KILLED" if fitting else "FAILED")
        raise
    saved = saved_trials(spec.path)
    ended = {t.trial_id for t in saved if t.status in DONE}
    close_orphans(results, uri, experiment, parent, ended)
    if len(ended) < ray_trials:
        tracking.set_status(uri, parent, "KILLED")
        done = sum(len(member_cells(t.config or {}, t.last_result or {})) for t in saved if t.trial_id in ended)
        raise SweepInterrupted(f"interrupted: {done} of {total} trials of {sweep_label(spec)} ended before the "
                               f"stop; the others resume from their last checkpoints when the same command runs again",
                               *received[:1])
    tracking.set_status(uri, parent, "FINISHED" if results.num_errors == 0 else "FAILED")
    return SweepResult(trial_table(results), experiment, parent, uri, results.num_errors)


def _tuner(spec: SweepSpec, uri: str, experiment: str, parent: str, resources: dict[str, float], total: int,
           resuming: bool) -> tuple[tune.Tuner, int]:
    """The sweep's stages trained, and its Tuner (restored when ``resuming``) with its number of Ray trials."""
    platform = {"tracking_uri": uri, "experiment_id": experiment, "parent_run_id": parent,
                "fault": spec.fault}
    if spec.study:
        members = spec.fuse if spec.fuse != "auto" else -(-spec.num_samples // concurrent_trials(spec, resources))
        slots = list(range(-(-spec.num_samples // members)))
        search = {**spec.study, "members": members, "total": spec.num_samples}
        grid, num_samples, ray_trials = {"slot": tune.grid_search(slots)}, 1, len(slots)
        function = tune.with_parameters(search_trial, base=spec.base, platform=platform, search=search)
    else:
        cells = packs(spec, concurrent_trials(spec, resources)) if spec.grid else [{}]
        grid = {"members": tune.grid_search(cells)} if spec.grid else {}
        num_samples, ray_trials = spec.num_samples, spec.num_samples * len(cells)
        function = tune.with_parameters(trial, base=spec.base, platform=platform)
    resources["cpu"] = auto_cpus(spec, resources, ray_trials)
    log.info("%d trial(s) in %d Ray trial(s) of %g CPU(s)%s each", total, ray_trials, resources["cpu"],
             f" and {resources['gpu']:g} GPU(s)" if resources["gpu"] else "")
    run_stages(spec, uri, experiment, parent, resources)
    trainable = tune.with_resources(function, resources)
    # Tune's console output (a configuration box, a TensorBoard hint, a line per state snapshot) gives
    # way to SweepProgress.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Results go to MLflow; of Tune's own files only result.json stays (the result grid reads it): its
    # CSV and TensorBoard files cannot hold a pack's per-member metrics.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    logging.getLogger("ray.tune.tune").setLevel(logging.WARNING)
    logging.getLogger("ray.tune.tune").addFilter(not_the_restore_hint)
    # Its warning of trials that have no results yet (stopped by Ctrl+C before their first report) is
    # the interrupted sweep's own line's to tell.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    tracking.quiet()
    # A CPU trial's process goes on to the next trial of its resources (reuse_actors) instead of a new
    # process importing torch again: seconds a trial, the same numbers as a fresh process (test_sweep.py).
    # GPU trials keep a process each until that is checked on a GPU: torch.compile's caches and CUDA
    # graphs' memory pools would carry over from trial to trial.
    if resuming:
        log.info("resuming the sweep in %s", spec.path)
        tuner = tune.Tuner.restore(spec.path, trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=grid,
            tune_config=tune.TuneConfig(search_alg=spec.search_alg, scheduler=spec.scheduler,
                                        num_samples=num_samples,
                                        max_concurrent_trials=spec.max_concurrent or None,
                                        reuse_actors=not resources["gpu"]),
            run_config=tune.RunConfig(name=spec.name, storage_path=spec.results_dir, verbose=0,
                                      callbacks=[SweepProgress(total), JsonLoggerCallback()],
                                      failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
        )
    return tuner, ray_trials


def not_the_restore_hint(record: logging.LogRecord) -> bool:
    """Drops Ray's hint on Ctrl+C to call ``Tuner.restore`` with a trainable, an API the command's user
    does not hold: the sweep's own line says to run the same command again."""
    return "Tuner.restore" not in record.getMessage()


def saved_trials(path: str) -> list:
    """The sweep's Ray trials as Ray last saved them. On Ctrl+C Ray saves the experiment before it stops
    the running trials (and marks them TERMINATED, as if they had ended), so there they are still
    PENDING, as a re-run resumes them; trials the sweep had not created yet are missing."""
    return tune.ExperimentAnalysis(path).trials


def _ensure_stage(uri: str, experiment: str, parent: str, name: str, config: dict[str, Any]) -> str:
    return stage_cache.ensure(uri, experiment, parent, name, config).info.run_id


def run_stages(spec: SweepSpec, uri: str, experiment: str, parent: str, resources: dict[str, float]) -> None:
    """Train, before any trial starts, each stage (``core.stages``) that the grid's trials need and the
    MLflow store does not hold yet: once per stage key, as Ray tasks with a trial's resources. Trials
    then find them by key, and a re-run of the sweep finds them all and trains nothing."""
    todo: dict[str, tuple[str, dict[str, Any]]] = {}
    for config in grid_configs(spec):
        cfg = TrainConfig.from_dict(config)
        for name in stages.needed_stages(cfg):
            todo.setdefault(stages.key_digest(stages.stage_key(name, cfg)), (name, config))
    missing = {digest: job for digest, job in todo.items() if tracking.find_stage_run(uri, digest) is None}
    if not missing:
        return
    log.info("training %d stage(s) before the trials: %s", len(missing),
             ", ".join(name for name, _ in missing.values()))
    task = ray.remote(_ensure_stage).options(num_cpus=resources["cpu"], num_gpus=resources["gpu"])
    received: list[int] = []  # as in run_round
    refs: list[ray.ObjectRef] = []
    try:
        with stop_signals_as_ctrl_c() as received:
            refs = [task.remote(uri, experiment, parent, name, config) for name, config in missing.values()]
            ray.get(refs)
    except KeyboardInterrupt:  # Ctrl+C, or a signal taken as it: no trial has started
        for ref in refs:  # stopped now, not when the driver has gone; each keeps its last saved state
            ray.cancel(ref, force=True)
        tracking.set_status(uri, parent, "KILLED")
        left = sum(tracking.find_stage_run(uri, digest) is None for digest in missing)
        raise SweepInterrupted(f"interrupted while training the stages, before any trial of {spec.name}: {left} of "
                               f"{len(missing)} stage(s) unfinished; the same command goes on with them from their "
                               f"last saved epoch", *received[:1]) from None
    except BaseException:
        tracking.set_status(uri, parent, "FAILED")
        raise


def trial_table(results: tune.ResultGrid) -> pd.DataFrame:
    """One row per member of every trial: its swept values, its last reported metrics, and how it ended."""
    rows = []
    for result in results:
        config, metrics = result.config or {}, result.metrics or {}
        cells = member_cells(config, metrics)
        member_metrics = metrics.get("member_metrics") or [{} for _ in cells]
        failures = metrics.get("member_failures") or {}
        for m, cell in enumerate(cells):
            # The swept config wins over a metric of the same name (the lr reported is the epoch's lr).
            row = {k: v for k, v in member_metrics[m].items() if isinstance(v, (int, float))}
            row.update(cell)
            row["trial"] = trial_label(cell)
            # Ray's clock of the whole trial (the pack's, for every member of a fused one): the trainable's
            # set-up included, which a member's wall_s (its share of training) leaves out.
            if "time_total_s" in metrics:
                row["time_total_s"] = metrics["time_total_s"]
            failure = failures.get(str(m))
            stopped = stop_reason(member_metrics[m].get("epoch"), metrics.get("epochs"))
            row["status"] = "ERROR" if result.error else "DIVERGED" if failure else "STOPPED" if stopped else "FINISHED"
            row["error"] = error_reason(result.error) if result.error else failure or stopped
            rows.append(row)
    return pd.DataFrame(rows)


def close_orphans(results: tune.ResultGrid, uri: str, experiment: str, parent: str, ended: set[str],
                  wait_s: float = 10.0) -> None:
    """End the child runs still RUNNING after the sweep. A trial Ray stopped after a report ended without
    error, and its process logs that report's step and leaves its runs to the driver: a scheduler stops a
    trial as Ctrl+C does, and only the driver knows which it was. A trial that ``ended`` was stopped by a
    scheduler: its runs end FINISHED (tagged stopped early before their last epoch; FAILED for a member
    that had diverged). The others belong to trials killed with their process, or stopped by Ctrl+C before
    they ended, and end KILLED (the same command resumes them). Ray's fit can return while a stopped
    trial's process still logs that last step, so each run gets ``wait_s`` to hold it first: else both
    would log it."""
    stopped = {r.metrics["trial_id"]: r.metrics for r in results
               if r.error is None and r.metrics and r.metrics["trial_id"] in ended}
    deadline = time.monotonic() + wait_s
    while True:
        running = [r for r in tracking.child_runs(uri, experiment, parent) if r.info.status == "RUNNING"]
        if time.monotonic() >= deadline or all(holds_last_report(r, stopped) for r in running):
            break
        time.sleep(0.5)
    for found in running:
        metrics = stopped.get(found.data.tags.get(tracking.TRIAL_TAG))
        if metrics is None or "member_metrics" not in metrics:
            tracking.set_status(uri, found.info.run_id, "KILLED")
            continue
        member = int(found.data.tags.get(tracking.MEMBER_TAG, 0))
        run = tracking.TrialRun(uri, experiment, parent, found.data.tags[tracking.TRIAL_TAG], found.info.run_name,
                                {}, member)
        failure = (metrics.get("member_failures") or {}).get(str(member))
        if failure:
            run.finish("FAILED", f"DivergenceError: {failure}")
            continue
        end_stopped_run(run, metrics, member, found.data.params)


def holds_last_report(run, stopped: dict[str, dict[str, Any]]) -> bool:
    """Whether a RUNNING child run holds the step of its trial's last report, if a scheduler stopped
    that trial (``stopped``: trial id to Ray's last result); true for any other run."""
    metrics = stopped.get(run.data.tags.get(tracking.TRIAL_TAG))
    if metrics is None or "member_metrics" not in metrics:
        return True
    report = metrics["member_metrics"][int(run.data.tags.get(tracking.MEMBER_TAG, 0))]
    return run.data.metrics.get("epoch", -1) >= report.get("epoch", 0)
