"""Check Ray cluster-launcher YAML files offline, before `ray up` spends minutes (and money) on them.

`ray up` runs, in order: ``prepare_config`` (merge the provider's defaults.yaml, set worker counts),
a provider call that fills node resources (cloud API), ``validate_config`` (ray-schema.json and a few
cross-field rules), then ``bootstrap_config`` (cloud API: key pairs, IAM, subnets, security groups).
This module runs the offline steps only: ray-schema.json on the file as written (so errors name the
user's key, not a merged default), then ``prepare_config`` and ``validate_config``. Neither of those
makes a network call for the aws or local providers (they read the defaults.yaml shipped with Ray);
the two cloud steps are skipped, so a wrong AMI, subnet or security group id is not detected here.

Usage: ``python -m cluster.validate cluster/gpu.yaml cluster/onprem.yaml``
"""

from __future__ import annotations

import copy
import json
import os
import re
from typing import Any, Mapping

import yaml


def _schema() -> dict:
    import ray.autoscaler

    with open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")) as f:
        return json.load(f)


def _key_of(error) -> str:
    """A dotted path to the offending key, naming unexpected keys themselves."""
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        if extra:
            return ".".join(filter(None, [path, extra[0]]))
    return path or "<top level>"


def _check_schema(config: Mapping[str, Any]) -> None:
    import jsonschema

    schema = _schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise ValueError(f"{_key_of(error)}: {error.message}")


def _check_local(config: Mapping[str, Any]) -> None:
    """Ray's own checks for `type: local` abort through its CLI logger; say the same plainly."""
    provider = config["provider"]
    if "available_node_types" in config or "head_node_type" in config:
        key = "available_node_types" if "available_node_types" in config else "head_node_type"
        raise ValueError(f"{key}: not allowed with provider.type local (Ray makes the node type itself)")
    if "coordinator_address" not in provider:
        for key in ("head_ip", "worker_ips"):
            if key not in provider:
                raise ValueError(f"provider.{key}: required with provider.type local")


def load_cluster_config(path_or_dict: str | os.PathLike | Mapping[str, Any]) -> dict:
    """The config as a plain dict: a mapping is deep-copied, a path is read as YAML."""
    if isinstance(path_or_dict, Mapping):
        return copy.deepcopy(dict(path_or_dict))
    with open(path_or_dict) as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ValueError(f"<top level>: {os.fspath(path_or_dict)} does not hold a YAML mapping")
    return config


def validate_cluster_config(path_or_dict: str | os.PathLike | Mapping[str, Any]) -> dict:
    """Validate a cluster config offline and return it prepared (defaults merged) as `ray up` would.

    Raises one ``ValueError`` whose message starts with the offending key (e.g.
    ``available_node_types.worker.resources.GPU: 0.5 is not of type 'integer'``).
    """
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load_cluster_config(path_or_dict)
    _check_schema(config)
    if config["provider"].get("type") == "local":
        _check_local(config)
    try:
        prepared = prepare_config(copy.deepcopy(config))
        validate_config(prepared)
    except Exception as exc:  # ValueError, jsonschema.ValidationError, AssertionError, click.ClickException
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        path = ".".join(str(p) for p in getattr(exc, "absolute_path", []))
        named = re.search(r"`(\w+)`", message)  # Ray names fields in backticks
        key = path or (named.group(1) if named else "<config>")
        raise ValueError(f"{key}: {message}") from exc
    return prepared


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", help="cluster YAML files")
    args = parser.parse_args()
    failed = False
    for name in args.files:
        try:
            validate_cluster_config(name)
            print(f"{name}: ok")
        except (OSError, yaml.YAMLError, ValueError) as exc:
            failed = True
            print(f"{name}: {exc}", file=sys.stderr)
    sys.exit(1 if failed else 0)
