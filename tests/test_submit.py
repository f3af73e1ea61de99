"""The sweep script run the way a cluster runs it, on a real two-node Ray cluster on this machine.

`ray up` starts a cluster's nodes with `ray start --head` and `ray start --address`; `ray submit` then
runs `python <script>` on the head over SSH (on the connection's terminal: `ssh -tt`), with no
RAY_ADDRESS; `ray job submit` hands the command to the cluster's Jobs API. Both must run the trials
on the cluster's nodes, the worker included, not on a private instance of the driver. (The SSH
launcher itself: tests/test_launcher.py.)

Isolation from other Ray users of this machine: the cluster keeps its address record and session
folder in a private temp dir (TMPDIR), uses free ports, and is stopped by killing the process groups
of its own two `ray start` commands, never with `ray stop`, which stops every Ray process of the host.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

import pytest
from mlflow.tracking import MlflowClient

import test_stops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
SWEEP = ["sweeps/omega_sensitivity.py", "--preset", "demo", "--omegas", "0.25", "4", "--seeds", "1", "--epochs", "1"]


@dataclass
class Cluster:
    env: dict[str, str]  # a shell on the head: the project's venv first, the cluster's temp dir, no RAY_ADDRESS
    address: str  # the GCS address `ray start` recorded
    dashboard: str  # the Jobs API
    node_ids: dict[str, str]  # "head" / "worker" -> Ray node id
    groups: list[int]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_start(env: dict[str, str], *args: str) -> int:
    """Run `ray start` in a new session and return its id: the node's daemons stay in that process group."""
    start = subprocess.Popen([os.path.join(BIN, "ray"), "start", "--disable-usage-stats", *args], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out, _ = start.communicate(timeout=180)
    assert start.returncode == 0, out[-3000:]
    return start.pid


def group_members(pgid: int) -> list[tuple[int, list[str]]]:
    members = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if int(f.read().rpartition(")")[2].split()[2]) != pgid:
                    continue
            with open(f"/proc/{pid}/cmdline") as f:
                members.append((int(pid), f.read().split("\0")))
        except (OSError, ValueError, IndexError):
            continue
    return members


def raylet_node_id(pgid: int) -> str:
    for _, argv in group_members(pgid):
        if os.path.basename(argv[0]) == "raylet":
            return next(a.split("=", 1)[1] for a in argv if a.startswith("--node_id="))
    raise AssertionError(f"no raylet in process group {pgid}")


def stop_groups(groups: list[int], wait: float = 10.0) -> None:
    """SIGKILL every process of the groups (as `ray stop --force` would, but only these) and wait."""
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(group_members(g) for g in groups):
        time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster():
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths live below it
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
    env.update(TMPDIR=temp, PATH=BIN + os.pathsep + env.get("PATH", ""),  # as the venv activated in ~/.bashrc
               RAY_AUTH_MODE="disabled")  # as cluster/*.yaml set it on every node
    groups: list[int] = []
    try:
        # Free ports for the services whose defaults are fixed (dashboard 8265, dashboard agent 52365):
        # another Ray on this machine, e.g. the test session's, may hold them.
        dashboard_port = free_port()
        groups.append(ray_start(env, "--head", "--port=0", "--num-cpus=1", '--resources={"head_node": 1}',
                                "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
                                f"--dashboard-agent-listen-port={free_port()}"))
        with open(os.path.join(temp, "ray", "ray_current_cluster")) as f:
            address = f.read().strip()
        # The worker keeps its own temp dir, as on another machine (by default it takes the head's, and
        # its clean-up of a job's working dir would delete the folder the job's driver runs in).
        groups.append(ray_start(env, f"--address={address}", "--num-cpus=1", '--resources={"worker_node": 1}',
                                f"--temp-dir={os.path.join(temp, 'worker')}",
                                f"--dashboard-agent-listen-port={free_port()}"))
        yield Cluster(env, address, f"http://127.0.0.1:{dashboard_port}",
                      {"head": raylet_node_id(groups[0]), "worker": raylet_node_id(groups[1])}, groups)
    finally:
        stop_groups(groups)
        shutil.rmtree(temp, ignore_errors=True)


def trial_nodes(results_dir: str, name: str) -> set[str]:
    """The nodes the sweep's two trials ran on. Both are this cluster's; not always both of its nodes: a
    trial may run in the process of the one before it (reuse_actors), on that one's node."""
    client = MlflowClient(f"sqlite:///{results_dir}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    return {r.data.tags["ray.node_id"] for r in children}


def test_script_run_on_the_head_joins_the_cluster_as_ray_submit_runs_it(cluster, tmp_path):
    """`ray submit` runs `python script.py ...` on the head: no RAY_ADDRESS, the cluster found on the node."""
    run = subprocess.run([sys.executable, *SWEEP, "--results-dir", str(tmp_path), "--name", "submit"], cwd=ROOT,
                         env=cluster.env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"Ray: joined the cluster at {cluster.address} (running on this node" in run.stderr
    assert "2 node(s), 2 CPUs" in run.stderr and "Started a local Ray instance" not in run.stderr
    assert trial_nodes(str(tmp_path), "submit") <= set(cluster.node_ids.values())


def sweep_runs(results_dir, name: str) -> list:
    """The sweep's MLflow runs, the parent and its children (none before its folder records the sweep)."""
    if not os.path.exists(os.path.join(results_dir, name, "sweep.json")):
        return []
    client = MlflowClient(f"sqlite:///{results_dir}/mlflow.db")
    return client.search_runs([client.get_experiment_by_name(name).experiment_id])


def run_states(results_dir, name: str) -> list[tuple[str, bool]]:
    """(status, is a trial's run) of every run of the sweep, sorted."""
    return sorted((r.info.status, "mlflow.parentRunId" in r.data.tags) for r in sweep_runs(results_dir, name))


# A two-trial sweep stopped while its second trial trains; then resumed to the end.
STOPPED = [("FINISHED", True), ("KILLED", False), ("KILLED", True)]
RESUMED = [("FINISHED", False), ("FINISHED", True), ("FINISHED", True)]


def wait_until_second_trial_reports(results_dir, name: str, timeout: float = 240) -> None:
    """Of a two-trial sweep run one trial at a time: one trial finished, the other reported an epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = [r for r in sweep_runs(results_dir, name) if "mlflow.parentRunId" in r.data.tags]
        if any(c.info.status == "FINISHED" for c in children) and any(
                c.info.status == "RUNNING" and c.data.metrics.get("epoch") for c in children):
            return
        time.sleep(0.5)
    pytest.fail(f"no trial of {name} reported after another finished, in {timeout} s")


def one_at_a_time(results_dir, name: str) -> list[str]:
    """The demo sweep's two trials one after the other, long enough to stop the second mid-way: the
    Ctrl+C tests' sweep (test_stops.py), as a script and its flags."""
    return [SWEEP[0], *test_stops.one_at_a_time(results_dir, name, epochs=40)]


def on_a_terminal(command: list[str], env: dict[str, str], log_path) -> tuple[subprocess.Popen, callable]:
    """Run ``command`` as `ray submit` does over its SSH connection (`ssh -tt ... bash -i -c '... && (COMMAND)'`):
    as a job of an interactive shell that leads the session of a terminal of its own, copying what the
    terminal shows to ``log_path``. Returns the shell and a function that closes the terminal as a
    dropped connection does: the kernel hangs it up and sends the shell SIGHUP, which the shell sends
    on to its jobs' process groups."""
    master, slave = pty.openpty()
    shell = subprocess.Popen(["setsid", "--ctty", "bash", "--norc", "-i", "-c", f"true && ({shlex.join(command)})"],
                             cwd=ROOT, env=env, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    closing = threading.Event()

    def copy():
        with open(log_path, "wb") as log:
            while not closing.is_set():
                if select.select([master], [], [], 0.1)[0]:
                    try:
                        log.write(os.read(master, 65536))
                    except OSError:  # EIO: nothing holds the terminal any more
                        return
                    log.flush()

    copier = threading.Thread(target=copy, daemon=True)
    copier.start()

    def hang_up():
        closing.set()
        copier.join()  # a read in progress would hold the terminal open
        os.close(master)
    return shell, hang_up


def test_a_dropped_ssh_connection_stops_the_sweep_as_ctrl_c_does(cluster, tmp_path):
    """When the SSH connection of `ray submit` (or of `python sweeps/...` on one machine) drops, the
    terminal hangs up, and its shell passes SIGHUP on to the driver's process group. That killed the
    driver and left the parent run and the stopped trial's run RUNNING for good (tried). On one machine
    the driver's own local Ray is in that group too: with the driver taking SIGHUP as Ctrl+C, Ray's
    processes still died under it, and it waited on them for ever (seen over real SSH). It must stop as
    on Ctrl+C, its writes to the dead terminal (EIO) failing nothing: the driver ends, the stopped trial's
    run and the parent KILLED, the finished one FINISHED: the state Ctrl+C leaves, from which the same
    command resumes (the Ctrl+C and job-stop tests resume it). (`ray submit --tmux`, which the README
    gives for long sweeps, keeps it running.) Run on one machine, where the driver starts Ray, as that
    case holds the cluster's: on a cluster (`ray start`) Ray's processes are outside the terminal's
    session, and the hangup reaches the driver alone; the job-stop test stops a cluster's driver
    through the same handler."""
    env = {k: v for k, v in cluster.env.items() if k != "TMPDIR"}  # no cluster found: the driver starts Ray
    shell, hang_up = on_a_terminal([sys.executable, *one_at_a_time(tmp_path, "hangup")], env, tmp_path / "driver.log")
    driver = None
    try:
        wait_until_second_trial_reports(tmp_path, "hangup")
        driver = int((tmp_path / ".hangup.lock").read_text().split()[2])  # "driver pid N on ..."
        hang_up()
        deadline = time.monotonic() + 120
        while os.path.exists(f"/proc/{driver}") and time.monotonic() < deadline:
            time.sleep(0.2)
        ended = not os.path.exists(f"/proc/{driver}")
    finally:
        for pid in (shell.pid, driver):
            with contextlib.suppress(ProcessLookupError, TypeError):  # TypeError: no driver pid read yet
                os.killpg(pid, signal.SIGKILL)
        shell.wait()
    log = (tmp_path / "driver.log").read_text(errors="replace")
    assert "Ray: started a local instance" in log, log[-3000:]  # the terminal was the driver's
    assert ended, "the driver still ran 120 s after the hangup"
    assert run_states(tmp_path, "hangup") == STOPPED


def job_submit(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    """`ray job submit --address <the cluster's> ARGS`, retried while the head's job agent is not up yet."""
    command = [os.path.join(BIN, "ray"), "job", "submit", "--address", cluster.dashboard, *args]
    deadline = time.monotonic() + 60  # a fresh head's job agent registers some seconds after `ray start`
    while True:
        run = subprocess.run(command, cwd=ROOT, env=cluster.env, capture_output=True, text=True, timeout=300)
        if "No available agent to submit job" not in run.stderr or time.monotonic() > deadline:
            return run
        time.sleep(2)


def test_sweep_submitted_through_the_jobs_api_runs_on_the_cluster(cluster, tmp_path):
    """The README's `ray job submit --address http://127.0.0.1:8265 --working-dir . -- python ...`."""
    run = job_submit(cluster, "--working-dir", ".", "--", "python", *SWEEP, "--results-dir", str(tmp_path),
                     "--name", "job")
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert f"Ray: joined the cluster at {cluster.address} (RAY_ADDRESS)" in run.stdout + run.stderr
    assert trial_nodes(str(tmp_path), "job") <= set(cluster.node_ids.values())


def test_ray_job_stop_ends_the_sweep_as_ctrl_c_does(cluster, tmp_path):
    """`ray job stop` sends the driver SIGTERM, and SIGKILL RAY_JOB_STOP_WAIT_TIME_S later (the README's
    submit line gives it 60 s). On SIGTERM Ray's driver aborted, leaving the parent run and the stopped
    trial's run RUNNING; it must end as on Ctrl+C: one line, the runs KILLED, the finished trial kept,
    and a new job of the same command resumes it."""
    ray = os.path.join(BIN, "ray")
    sweep = one_at_a_time(tmp_path, "stop")
    run = job_submit(cluster, "--no-wait", "--submission-id", "stop-me", "--working-dir", ".",
                     "--runtime-env-json", '{"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": "60"}}', "--", "python", *sweep)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    wait_until_second_trial_reports(tmp_path, "stop")
    stop = subprocess.run([ray, "job", "stop", "--address", cluster.dashboard, "stop-me"], env=cluster.env,
                          capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0, (stop.stdout + stop.stderr)[-3000:]
    logs = subprocess.run([ray, "job", "logs", "--address", cluster.dashboard, "stop-me"], env=cluster.env,
                          capture_output=True, text=True, timeout=60).stdout
    assert ("interrupted: 1 of 2 trials of stop ended before the stop; the others resume from their last "
            "checkpoints when the same command runs again") in logs, logs[-3000:]
    assert run_states(tmp_path, "stop") == STOPPED
    # the same submit line under a new submission id resumes it: the same three runs, all FINISHED
    again = job_submit(cluster, "--working-dir", ".", "--", "python", *sweep)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert run_states(tmp_path, "stop") == RESUMED
