"""Which Ray cluster a process on this node should join: the one RAY_ADDRESS names, else the one
`ray start` started on this node, provided it still answers.

`ray start` records the cluster's GCS address in ``<ray temp dir>/ray_current_cluster`` (the temp
dir is RAY_TMPDIR or TMPDIR, else /tmp, plus "ray"); `ray stop` removes it, but a crashed cluster
leaves it behind, so the address counts only if something listens there.
"""

from __future__ import annotations

import os
import socket


def recorded_address() -> tuple[str | None, str]:
    """The address `ray start` recorded on this node (or None) and the file it is read from."""
    from ray._common.utils import get_ray_address_file
    from ray._private.utils import read_ray_address

    return read_ray_address(), get_ray_address_file(None)


def cluster_address() -> tuple[str | None, str]:
    """The address of the Ray cluster to join and where it came from, or (None, why there is none)."""
    env = os.environ.get("RAY_ADDRESS", "")
    if env and env != "auto":
        return env, "RAY_ADDRESS"
    recorded, path = recorded_address()
    if recorded and answers(recorded):
        return recorded, f"running on this node, recorded by `ray start` in {path}"
    why = f"{path} names {recorded}, which does not answer" if recorded else "no cluster started by `ray start`"
    if env == "auto":
        raise ValueError(f"RAY_ADDRESS: 'auto', but no Ray cluster runs on this node ({why})")
    return None, f"no RAY_ADDRESS; on this node, {why}"


def answers(address: str, timeout: float = 2.0) -> bool:
    """Whether something listens at ``host:port`` (the GCS of a live cluster)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False
