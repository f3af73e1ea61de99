"""The MLflow store: a new local store is the one MLflow makes, made from a copy of an empty one."""

import os
import sqlite3
import stat
import threading

import pytest
from mlflow.tracking import MlflowClient

from core import tracking


def store_contents(path) -> tuple[list, list, list]:
    """A SQLite store's schema, Alembic revision and experiments (less their times). A table's lines
    are sorted: MLflow's own stores list a table's constraints in an order that varies from store to store."""
    with sqlite3.connect(path) as db:
        schema = sorted((kind, name, sorted((sql or "").splitlines()))
                        for kind, name, sql in db.execute("SELECT type, name, sql FROM sqlite_master"))
        revision = db.execute("SELECT * FROM alembic_version").fetchall()
        db.row_factory = sqlite3.Row
        experiments = [{k: row[k] for k in row.keys() if not k.endswith("_time")}
                       for row in db.execute("SELECT * FROM experiments")]
    return schema, revision, experiments


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache folder of this module's own, its template made by the first test that needs it."""
    return str(tmp_path_factory.mktemp("cache"))


def test_a_new_local_store_is_the_one_mlflow_makes(tmp_path, monkeypatch, cache):
    monkeypatch.setenv("XDG_CACHE_HOME", cache)
    monkeypatch.chdir(tmp_path)  # the Default experiment's artifacts go to ./mlruns, as MLflow sets it
    MlflowClient(f"sqlite:///{tmp_path}/theirs.db").search_experiments()
    for name in ("ours.db", "second.db"):  # the first makes the template, the second copies it
        assert [e.name for e in tracking.client(f"sqlite:///{tmp_path}/{name}").search_experiments()] == ["Default"]
        assert store_contents(tmp_path / name) == store_contents(tmp_path / "theirs.db")
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == stat.S_IMODE(os.stat(tmp_path / "theirs.db").st_mode)
    assert len(os.listdir(os.path.join(cache, "smote2mixup"))) == 1
    # A store that exists is left as it is.
    made = tracking.experiment_id(f"sqlite:///{tmp_path}/ours.db", "sweep", str(tmp_path / "mlartifacts"))
    assert tracking.client(f"sqlite:///{tmp_path}/ours.db").get_experiment_by_name("sweep").experiment_id == made


def test_a_new_store_appears_only_once_copied_and_set(tmp_path, monkeypatch, cache):
    """The store's path must not exist while its copy is written or its Default experiment set: a
    process that found it then would open a part-made store."""
    monkeypatch.setenv("XDG_CACHE_HOME", cache)
    store = tmp_path / "store.db"
    seen = []

    def watched(fn):
        def call(*args, **kwargs):
            result = fn(*args, **kwargs)
            seen.append((fn.__name__, store.exists()))
            return result
        return call

    monkeypatch.setattr(tracking.shutil, "copyfileobj", watched(tracking.shutil.copyfileobj))
    monkeypatch.setattr(tracking.sqlite3, "connect", watched(tracking.sqlite3.connect))
    tracking.new_local_store(f"sqlite:///{store}")
    assert seen == [("copyfileobj", False), ("connect", False)]
    assert store_contents(store)[2][0]["name"] == "Default"


def test_makers_of_one_store_at_once_each_find_it_whole_on_return(tmp_path, monkeypatch, cache):
    monkeypatch.setenv("XDG_CACHE_HOME", cache)
    tracking.empty_store_template()
    uri = f"sqlite:///{tmp_path}/store.db"
    start, found = threading.Barrier(8), []

    def make():
        start.wait()
        tracking.new_local_store(uri)
        found.append(store_contents(tmp_path / "store.db"))

    makers = [threading.Thread(target=make) for _ in range(8)]
    for maker in makers:
        maker.start()
    for maker in makers:
        maker.join()
    assert len(found) == 8 and all(contents == found[0] for contents in found)
    assert [e["name"] for e in found[0][2]] == ["Default"]
    assert os.listdir(tmp_path) == ["store.db"]  # no copy left behind


def test_a_uri_with_options_or_another_backend_is_left_to_mlflow(tmp_path, monkeypatch, cache):
    monkeypatch.setenv("XDG_CACHE_HOME", cache)
    for uri in (f"sqlite:///{tmp_path}/store.db?timeout=20", "http://127.0.0.1:5000", f"file://{tmp_path}/mlruns"):
        tracking.new_local_store(uri)
    assert os.listdir(tmp_path) == []


def test_a_cache_folder_that_cannot_be_written_leaves_the_store_to_mlflow(tmp_path, monkeypatch):
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))
    tracking.experiment_id(f"sqlite:///{tmp_path}/store.db", "sweep", str(tmp_path / "mlartifacts"))
    assert tracking.client(f"sqlite:///{tmp_path}/store.db").get_experiment_by_name("sweep") is not None
