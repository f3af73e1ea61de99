"""The MLflow tracking server of a cluster's head node, for as long as the node's Ray cluster runs.

The head's start commands in cluster/*.yaml run it after `ray start`. It serves on the address Ray
uses for this node (a private address: the other nodes reach it, the internet does not), writes
``http://<address>:<port>`` to ~/mlflow/tracking_uri for ``ray exec``, and stops the server when the
node's Ray cluster stops (``ray stop``, which ``ray down`` runs), so ``ray down`` leaves no server
behind. MLflow's backend store must be on the head's local disk: SQLite never on NFS.

    python -m cluster.tracking_server --port 5000 --backend-store-uri sqlite:///$HOME/mlflow/mlflow.db \
        --artifacts-destination /mnt/shared/mlflow-artifacts
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time

from cluster.address import answers, recorded_address

log = logging.getLogger(__name__)


def serve_while_ray_runs(command: list[str], gcs: str, poll: float = 5.0) -> int:
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


def main(argv: list[str] | None = None) -> int:
    from ray.util import get_node_ip_address

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--backend-store-uri", required=True)
    p.add_argument("--artifacts-destination", required=True)
    p.add_argument("--uri-file", default=os.path.expanduser("~/mlflow/tracking_uri"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    gcs, path = recorded_address()
    if not gcs or not answers(gcs):
        raise SystemExit(f"error: no Ray cluster runs on this node ({path}); start it with `ray start` first")
    host = get_node_ip_address()
    os.makedirs(os.path.dirname(args.uri_file), exist_ok=True)
    with open(args.uri_file, "w") as f:
        f.write(f"http://{host}:{args.port}\n")
    command = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(args.port),
               "--backend-store-uri", args.backend_store_uri, "--artifacts-destination", args.artifacts_destination]
    log.info("MLflow server at http://%s:%d while the Ray cluster at %s runs", host, args.port, gcs)
    return serve_while_ray_runs(command, gcs)


if __name__ == "__main__":
    sys.exit(main())
