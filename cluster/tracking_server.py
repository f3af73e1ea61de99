"""The MLflow tracking server of a cluster's head node, for as long as the node's Ray cluster runs.

The head's start commands in cluster/*.yaml run it after `ray start`. It serves on the address Ray
uses for this node (a private address: the other nodes reach it, the internet does not), returns once
the server answers (so `ray up` fails when MLflow cannot start, and the first sweep finds it ready),
writes ``http://<address>:<port>`` to ~/mlflow/tracking_uri for ``ray exec``, and stops the server
when the node's Ray cluster stops (``ray stop``, which ``ray down`` runs), so ``ray down`` leaves no
server behind. MLflow's backend store must be on the head's local disk: SQLite never on NFS.

    python -m cluster.tracking_server --port 5000 --backend-store-uri sqlite:///$HOME/mlflow/mlflow.db \
        --artifacts-destination /mnt/shared/mlflow-artifacts --log ~/mlflow/server.log
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request

from cluster.address import answers, recorded_address

log = logging.getLogger(__name__)


def serve_while_ray_runs(command: list[str], gcs: str, poll: float = 2.0) -> int:
    """Run ``command`` until it exits or the GCS at ``gcs`` stops answering twice in a row; then stop it
    and its workers (its own process group). Returns the server's exit status."""
    server = subprocess.Popen(command, start_new_session=True)
    misses = 0
    while server.poll() is None and misses < 2:
        time.sleep(poll)
        misses = 0 if answers(gcs) else misses + 1
    if server.poll() is None:
        log.info("the Ray cluster at %s stopped; stopping the MLflow server", gcs)
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    return server.wait()


def wait_until_serving(url: str, watcher: subprocess.Popen, timeout: float = 180.0) -> None:
    """Return once ``url``/health answers; fail if the watcher (and so the server) ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if watcher.poll() is not None:
            raise SystemExit(f"error: the MLflow server stopped at start (exit {watcher.returncode}); see its log")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"error: the MLflow server did not answer at {url} within {timeout:.0f} s; see its log")


def main(argv: list[str] | None = None) -> int:
    from ray.util import get_node_ip_address

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--backend-store-uri", required=True)
    p.add_argument("--artifacts-destination", required=True)
    p.add_argument("--uri-file", default=os.path.expanduser("~/mlflow/tracking_uri"))
    p.add_argument("--log", default=os.path.expanduser("~/mlflow/server.log"), help="the server's output")
    p.add_argument("--foreground", action="store_true", help="serve in this process (what the background copy runs)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    gcs, path = recorded_address()
    if not gcs or not answers(gcs):
        raise SystemExit(f"error: no Ray cluster runs on this node ({path}); start it with `ray start` first")
    host = get_node_ip_address()
    url = f"http://{host}:{args.port}"
    if not args.foreground:  # detach a copy that outlives this SSH command, and wait for it to serve
        os.makedirs(os.path.dirname(os.path.abspath(args.log)), exist_ok=True)
        with open(args.log, "a") as log_file:
            watcher = subprocess.Popen([sys.executable, "-m", "cluster.tracking_server", "--foreground",
                                        *(argv if argv is not None else sys.argv[1:])], stdin=subprocess.DEVNULL,
                                       stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until_serving(url, watcher)
        os.makedirs(os.path.dirname(os.path.abspath(args.uri_file)), exist_ok=True)
        with open(args.uri_file, "w") as f:
            f.write(url + "\n")
        log.info("MLflow server at %s, until the Ray cluster at %s stops", url, gcs)
        return 0
    from core import tracking

    tracking.new_local_store(args.backend_store_uri)  # a new SQLite store without MLflow's migrations (seconds)
    # MLflow's job runner (GenAI scorers and trace jobs; the platform runs none) would start 8 processes
    # beside the server, 1.8 GiB of the head's memory (docs/results/mlflow-job-runner/); an operator who
    # wants it sets the variable to true.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    command = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(args.port),
               "--backend-store-uri", args.backend_store_uri, "--artifacts-destination", args.artifacts_destination]
    log.info("MLflow server at %s while the Ray cluster at %s runs", url, gcs)
    return serve_while_ray_runs(command, gcs)


if __name__ == "__main__":
    sys.exit(main())
