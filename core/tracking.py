"""Every MLflow call of the platform, in one place, so an MLflow API change touches one file.

Layout in MLflow: one experiment per sweep name; one parent run per sweep invocation (resumed
invocations continue the same parent); one nested child run per trial, found again by its Ray trial
id, so a retried or resumed trial continues its run instead of opening a new one. Metrics are logged
with the epoch as step, and a step already in the run's history is never logged twice.

Stage runs (``core.stages``: M2m's g, DeepSMOTE's autoencoder) are children of the sweep invocation
that trained them, tagged ``stage`` (the stage's name) and ``stage_key`` (the digest of its key), with
the checkpoint as an artifact. They are logged in one go once trained, so the store holds only finished
ones, and are found again by key in any experiment of the store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from core import cache

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "ray.trial_id"
MEMBER_TAG = "member"  # the member's index in its trial's pack
STOPPED_TAG = "stopped_early"  # why a scheduler ended the member's trial before its last epoch
STAGE_TAG = "stage"
STAGE_KEY_TAG = "stage_key"
ARCHIVED_TAG = "archived"  # on a parent run set aside by `--restart`: the folder its sweep moved to


def quiet() -> None:
    """No "View run ... at: <url>" lines on stdout when a run ends on a tracking server: a sweep prints
    a line per trial of its own (core.progress). Called by the sweep's driver and by each trial."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def default_tracking_uri(results_dir: str) -> str:
    """An absolute SQLite store under the results folder (trials do not run in the driver's directory)."""
    return "sqlite:///" + os.path.join(os.path.abspath(results_dir), "mlflow.db")


def client(tracking_uri: str) -> MlflowClient:
    new_local_store(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


def new_local_store(tracking_uri: str) -> None:
    """Make a SQLite store that does not exist yet as a copy of an empty one. MLflow builds a new store's
    schema by replaying each of its Alembic migrations, 3 to 5 s on a laptop's core for every sweep folder
    (and every test); the first store an MLflow version makes is kept as a template in the user's cache
    folder and copied after. The copy's Default experiment gets the artifact location and time MLflow would
    have given it here. It appears whole or not at all, so two processes making one store both find it
    made; any error leaves the store to MLflow, as before."""
    path = tracking_uri.removeprefix("sqlite:///")
    folder = os.path.dirname(os.path.abspath(path))
    # "?": SQLAlchemy's options (?timeout=...), the file name before it.
    if path == tracking_uri or "?" in path or os.path.exists(path) or not os.path.isdir(folder):
        return
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.utils.uri import append_to_uri_path, resolve_uri_if_local

    copy = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        template = empty_store_template()
        # Opened with MLflow's own mode so the umask applies as to a store MLflow makes (a temporary file
        # from tempfile would be the owner's alone).
        with os.fdopen(os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as out, \
                open(template, "rb") as source:
            shutil.copyfileobj(source, out)
        now = int(time.time() * 1000)
        location = append_to_uri_path(resolve_uri_if_local(DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH), "0")
        with contextlib.closing(sqlite3.connect(copy)) as db, db:
            db.execute("UPDATE experiments SET artifact_location = ?, creation_time = ?, last_update_time = ? "
                       "WHERE experiment_id = 0", (location, now, now))
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile: theirs stays
            os.link(copy, path)
    except (OSError, sqlite3.Error) as err:
        log.debug("no copy of an empty MLflow store for %s (%s): MLflow makes it", path, err)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(copy)


def empty_store_template() -> str:
    """The path of an empty SQLite store of this MLflow version in the user's cache folder, made once."""
    return cache.made_once(f"mlflow-{mlflow.__version__}-empty.db",
                           lambda made: MlflowClient(tracking_uri="sqlite:///" + made).search_experiments())


def _retrying(fn, *args, attempts: int = 8, delay: float = 0.5, **kwargs):
    """Call ``fn`` and retry on errors with exponential back-off: a tracking server that is briefly
    unreachable, or a busy SQLite file, must not fail a trial."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - MLflow raises many kinds for transient failures
            if attempt == attempts - 1:
                raise
            log.warning("MLflow call %s failed (%s); retrying", getattr(fn, "__name__", fn), err)
            time.sleep(delay * 2 ** attempt)


def experiment_id(tracking_uri: str, name: str, artifact_dir: str | None = None) -> str:
    """The experiment's id, created if needed. With a local store, artifacts go to ``artifact_dir``
    (absolute): MLflow's default, ./mlruns, depends on the working directory of whoever creates it."""
    c = client(tracking_uri)
    exp = _retrying(c.get_experiment_by_name, name)
    if exp is not None:
        return exp.experiment_id
    location = Path(artifact_dir).resolve().as_uri() if artifact_dir and tracking_uri.startswith("sqlite:") else None
    return _retrying(c.create_experiment, name, artifact_location=location)


def start_parent_run(tracking_uri: str, experiment: str, run_name: str, tags: dict[str, str]) -> str:
    c = client(tracking_uri)
    run = _retrying(c.create_run, experiment, run_name=run_name, tags=tags)
    return run.info.run_id


def set_status(tracking_uri: str, run_id: str, status: str) -> None:
    """End (FINISHED, FAILED, KILLED) or reopen (RUNNING) a run."""
    c = client(tracking_uri)
    if status == "RUNNING":
        _retrying(c.update_run, run_id, status="RUNNING")
    else:
        _retrying(c.set_terminated, run_id, status=status)


def set_tags(tracking_uri: str, run_id: str, tags: dict[str, str]) -> None:
    c = client(tracking_uri)
    for key, value in tags.items():
        _retrying(c.set_tag, run_id, key, value)


def drop_tags(tracking_uri: str, run, keys: tuple[str, ...]) -> None:
    """Delete those of ``keys`` that the run (as last read) carries."""
    c = client(tracking_uri)
    for key in keys:
        if key in run.data.tags:
            _retrying(c.delete_tag, run.info.run_id, key)


def archive_run(tracking_uri: str, run_id: str, folder: str) -> None:
    """Set a sweep's parent run aside: tagged with the folder its sweep was moved to, renamed, and
    ended if it was left running. Its child runs stay nested under it."""
    c = client(tracking_uri)
    run = _retrying(c.get_run, run_id, attempts=3)
    _retrying(c.set_tag, run_id, ARCHIVED_TAG, folder, attempts=3)
    _retrying(c.update_run, run_id, name=f"{run.info.run_name} (archived {os.path.basename(folder)})", attempts=3)
    if run.info.status == "RUNNING":
        _retrying(c.set_terminated, run_id, status="KILLED", attempts=3)


def child_runs(tracking_uri: str, experiment: str, parent_run_id: str) -> list:
    """The trial runs of a sweep invocation (its stage runs are not trials)."""
    c = client(tracking_uri)
    return _retrying(c.search_runs, [experiment], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}' and "
                                                                f"tags.`{STAGE_TAG}` IS NULL", max_results=10000)


def parent_runs(tracking_uri: str, experiment_name: str, most: int = 10000) -> list:
    """The parent (sweep) runs of an experiment that were not archived by ``--restart``, newest first."""
    c = client(tracking_uri)
    exp = _retrying(c.get_experiment_by_name, experiment_name)
    if exp is None:
        raise ValueError(f"experiment: no MLflow experiment named {experiment_name!r} at {tracking_uri}")
    sweeps = f"tags.`{PARENT_TAG}` IS NULL and tags.`{ARCHIVED_TAG}` IS NULL"
    return _retrying(c.search_runs, [exp.experiment_id], filter_string=sweeps,
                     order_by=["attributes.start_time DESC"], max_results=most)


def latest_parent_run(tracking_uri: str, experiment_name: str):
    """The most recent parent (sweep) run of an experiment that was not archived by ``--restart``."""
    runs = parent_runs(tracking_uri, experiment_name, most=1)
    if not runs:
        raise ValueError(f"experiment: {experiment_name!r} holds no sweep run")
    return runs[0]


def get_run(tracking_uri: str, run_id: str):
    return _retrying(client(tracking_uri).get_run, run_id)


def log_artifacts(tracking_uri: str, run_id: str, files: dict[str, bytes]) -> None:
    """Write ``files`` (name -> content) to a temporary folder and upload them as the run's artifacts."""
    c = client(tracking_uri)
    with tempfile.TemporaryDirectory() as d:
        for name, content in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(content)
        _retrying(c.log_artifacts, run_id, d)


def _params(params: dict[str, Any]) -> list[Param]:
    """MLflow params, sorted by name: lists and tuples as JSON (``[160, 180]``), the rest as ``str``."""
    return [Param(k, json.dumps(v) if isinstance(v, (list, tuple)) else str(v)) for k, v in sorted(params.items())]


def _experiment_ids(c: MlflowClient) -> list[str]:
    return [e.experiment_id for e in _retrying(c.search_experiments)]


def _log_batch(c: MlflowClient, run_id: str, metrics: dict[str, float], step: int, attempts: int = 8) -> None:
    now = int(time.time() * 1000)
    # MLflow stores NaN, but not inf; a missing class's margin is NaN on purpose.
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not math.isinf(v)]
    for start in range(0, len(batch), 1000):  # MLflow's batch limit
        _retrying(c.log_batch, run_id, metrics=batch[start:start + 1000], attempts=attempts)


class TrialRun:
    """The MLflow child run of one member of a Ray trial (a pack trains several): created on the
    trial's first attempt, found again by its trial id and member index on a retry or a resumed sweep,
    continued from the last step it already holds."""

    def __init__(self, tracking_uri: str, experiment: str, parent_run_id: str, trial_id: str, name: str,
                 params: dict[str, Any], member: int = 0):
        self.uri, self.client, self.finished = tracking_uri, client(tracking_uri), False
        self.pending: list[tuple[int, dict[str, float]]] = []
        found = _retrying(self.client.search_runs, [experiment],
                          filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.`{TRIAL_TAG}` = '{trial_id}' "
                                        f"and tags.`{MEMBER_TAG}` = '{member}'")
        if found:
            self.run_id = found[0].info.run_id
            _retrying(self.client.update_run, self.run_id, status="RUNNING")
            # A run that goes on was neither stopped early nor failed for good: Ctrl+C stops a trial the
            # way a scheduler does, and an attempt that crashed said why.
            drop_tags(tracking_uri, found[0], (STOPPED_TAG, "error"))
            history = _retrying(self.client.get_metric_history, self.run_id, "epoch")
            self.last_step = max((m.step for m in history), default=-1)
            log.info("continuing MLflow run %s of trial %s after step %d", self.run_id, trial_id, self.last_step)
        else:
            run = _retrying(self.client.create_run, experiment, run_name=name,
                            tags={PARENT_TAG: parent_run_id, TRIAL_TAG: trial_id, MEMBER_TAG: str(member)})
            self.run_id, self.last_step = run.info.run_id, -1
            _retrying(self.client.log_batch, self.run_id, params=_params(params))

    def log_epoch(self, metrics: dict[str, float]) -> None:
        """Log one evaluation as a step. When the store stays unreachable past the retries, the step is
        kept and sent with the next one (or at ``finish``), so a logging outage never fails a trial."""
        self.queue(metrics)
        self.flush(attempts=3)

    def queue(self, metrics: dict[str, float]) -> None:
        """Keep one evaluation for the next ``flush``, as a step, unless the run holds that step already."""
        step = int(metrics["epoch"])
        if step <= self.last_step:
            return  # logged before a crash; the history stays continuous
        self.pending.append((step, metrics))
        self.last_step = step

    def flush(self, attempts: int = 8) -> None:
        while self.pending:
            step, metrics = self.pending[0]
            try:
                _log_batch(self.client, self.run_id, metrics, step, attempts=attempts)
            except Exception as err:  # noqa: BLE001 - kept for the next flush
                log.warning("MLflow unreachable (%s); %d step(s) buffered", err, len(self.pending))
                return
            self.pending.pop(0)

    def set_tag(self, key: str, value: str) -> None:
        _retrying(self.client.set_tag, self.run_id, key, value)

    def finish(self, status: str, error: str | None = None) -> None:
        """End the run (once), with ``error`` as its reason when it failed."""
        if self.finished:
            return
        if error:
            self.set_tag("error", error[:5000])
        self.flush()
        if self.pending:
            raise RuntimeError(f"MLflow run {self.run_id}: {len(self.pending)} step(s) could not be logged")
        _retrying(self.client.set_terminated, self.run_id, status=status)
        self.finished = True


# ----------------------------------------------------------------------------- stage runs

def find_stage_run(tracking_uri: str, digest: str):
    """The latest finished stage run of key digest ``digest`` in any experiment of the store, or None."""
    c = client(tracking_uri)
    experiments = _experiment_ids(c)
    if not experiments:
        return None
    runs = _retrying(c.search_runs, experiments, max_results=1, order_by=["attributes.start_time DESC"],
                     filter_string=f"tags.`{STAGE_KEY_TAG}` = '{digest}' and attributes.status = 'FINISHED'")
    return runs[0] if runs else None


def stage_runs(tracking_uri: str) -> list:
    """Every stage run of the store."""
    c = client(tracking_uri)
    experiments = _experiment_ids(c)
    return _retrying(c.search_runs, experiments, filter_string=f"tags.`{STAGE_TAG}` IS NOT NULL",
                     max_results=10000) if experiments else []


def log_stage_run(tracking_uri: str, experiment: str, parent_run_id: str | None, name: str, digest: str,
                  run_name: str, params: dict[str, Any], metrics: dict[str, float], files: dict[str, bytes]):
    """Log a trained stage as one finished run (params, metrics, checkpoint files) and return it."""
    c = client(tracking_uri)
    tags = {STAGE_TAG: name, STAGE_KEY_TAG: digest, **({PARENT_TAG: parent_run_id} if parent_run_id else {})}
    run_id = _retrying(c.create_run, experiment, run_name=run_name, tags=tags).info.run_id
    _retrying(c.log_batch, run_id, params=_params(params))
    _log_batch(c, run_id, metrics, step=0)
    log_artifacts(tracking_uri, run_id, files)
    _retrying(c.set_terminated, run_id, status="FINISHED")
    return get_run(tracking_uri, run_id)


def download_artifact(tracking_uri: str, run_id: str, path: str, dst_dir: str) -> str:
    """Copy a run's artifact into ``dst_dir``; returns its local path."""
    return _retrying(client(tracking_uri).download_artifacts, run_id, path, dst_dir)
