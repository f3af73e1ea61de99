"""Shared fixtures. Ray is started at most once per test session (see ``ray_session``)."""

import contextlib
import os
import signal
import subprocess
import sys

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared"))


def tiny_config(**overrides):
    """A 2-epoch digits run in which warm-up, the LR decay and the DRW switch all happen."""
    base = dict(dataset="digits", epochs=2, warmup_epochs=1, milestones=[1], drw_epoch=1, batch_size=64,
                device="cpu")
    base.update(overrides)
    return base


@pytest.fixture
def tiny():
    return tiny_config


@pytest.fixture(scope="session")
def ray_session():
    """The one local Ray instance of the test session, bound to the loopback address, with one CPU: the
    two xdist workers share the machine's two cores, and a sweep's trials run one after another in one
    reused process (a trial's process costs about 6 s of CPU to start, docs/results/suite/)."""
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def stage_checkpoints(tmp_path_factory):
    """Checkpoints of M2m's g and DeepSMOTE's autoencoder for ``tiny_config``'s training set (digits,
    long-tailed, ratio 10), trained once per test session through ``core.stages``."""
    from core import stages
    from core.config import TrainConfig

    folder = tmp_path_factory.mktemp("stages")
    cfg = TrainConfig.from_dict(tiny_config(deepsmote_epochs=1))
    paths = {}
    for name in stages.STAGES:
        paths[name] = str(folder / f"{name}.pt")
        stages.train_stage_file(name, cfg, paths[name])
    return paths


def with_stages(config, paths):
    """``config`` with the checkpoint of every stage its method needs."""
    from core.methods import METHODS

    return {**config, **{name: paths[name] for name in METHODS[config["method"]].stages}}


def pytest_configure(config):
    """The Ctrl+C tests press Ctrl+C as at a terminal, whose foreground job takes SIGINT. A suite started
    in the background by a script (`cmd &` in a non-interactive shell, as POSIX has it) inherits SIGINT
    ignored, and so would every sweep driver it starts: a driver training its stages then ignored the
    test's Ctrl+C and ran to the end. Python's handler, set here, is the default action again in a program it
    starts (exec resets handlers, not ignored signals)."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# The fixtures of the tests that run sweeps on a Ray: the test session's, or test_submit.py's two-node cluster.
RAY_FIXTURES = {"ray_session", "cluster"}


def pytest_collection_modifyitems(items):
    """The longest tests first: `make test` runs two pytest-xdist workers, one file at a time each, and a
    long file handed out last runs on alone while the other worker idles (test_submit.py's 150 s did: 84 s
    idle, docs/results/suite/2026-12-07-ci-clone-and-order/). So the SSH launcher test (marked slow), mostly
    waiting on its processes, goes first, beside the CPU-bound Ray sweeps; then every file that runs sweeps on
    a Ray; then the rest. The order within each group stays the files' own."""
    items.sort(key=lambda item: (item.get_closest_marker("slow") is None, not RAY_FIXTURES & set(item.fixturenames)))


@contextlib.contextmanager
def sweep_driver(ray_session, tmp_path, args, script="omega_sensitivity.py"):
    """A sweep script (the omega sweep's by default) as a user starts it, in a process group of its own
    (a terminal's foreground job); killed on the way out if it still runs."""
    env = dict(os.environ, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address)
    driver = subprocess.Popen([sys.executable, os.path.join(ROOT, "sweeps", script), *args],
                              env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=open(tmp_path / "driver.log", "w"), start_new_session=True)
    try:
        yield driver
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
