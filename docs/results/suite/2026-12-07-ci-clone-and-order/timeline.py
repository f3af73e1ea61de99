"""A pytest plugin: each test's start and end (wall clock) on each xdist worker, one line a test, in
$TIMELINE_DIR/timeline-<worker>.tsv. Used as
    PYTHONPATH=<this folder> TIMELINE_DIR=<dir> PYTEST_ADDOPTS="-p timeline --durations=40" make test
The controller process writes timeline-main.tsv too (as reports reach it); timeline_summary.py reads the workers'."""
import os
import time

_start = {}


def pytest_runtest_logstart(nodeid, location):
    _start[nodeid] = time.time()


def pytest_runtest_logfinish(nodeid, location):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(os.path.join(os.environ.get("TIMELINE_DIR", "/tmp"), f"timeline-{worker}.tsv"), "a") as f:
        f.write(f"{_start.pop(nodeid, 0):.2f}\t{time.time():.2f}\t{nodeid}\n")
