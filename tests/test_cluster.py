"""Cluster YAMLs: they pass Ray's own offline validation, broken copies fail naming the key, and
the security properties the comments promise hold; the head's MLflow server stops with its Ray.
Nothing here contacts a cloud or starts Ray (tests/test_launcher.py does)."""

from __future__ import annotations

import copy
import inspect
import re
import runpy
import shlex
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from cluster import tracking_server
from cluster.validate import load_cluster_config, validate_cluster_config

CLUSTER_DIR = Path(__file__).resolve().parents[1] / "cluster"
FILES = {"gpu": CLUSTER_DIR / "gpu.yaml", "onprem": CLUSTER_DIR / "onprem.yaml"}
COMMAND_FIELDS = ["initialization_commands", "setup_commands", "head_setup_commands",
                  "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands"]


@pytest.fixture(params=sorted(FILES))
def name(request):
    return request.param


@pytest.fixture
def config(name):
    return load_cluster_config(FILES[name])


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to resolve or connect fails the test: validation must be offline."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access during validation")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


# ------------------------------------------------------------------ validity
def test_config_validates_offline(name, no_network):
    prepared = validate_cluster_config(FILES[name])
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_dict_input_is_not_mutated(config):
    before = copy.deepcopy(config)
    validate_cluster_config(config)
    assert config == before


def test_gpu_workers_have_several_gpus():
    types = load_cluster_config(FILES["gpu"])["available_node_types"]
    assert max(t["resources"].get("GPU", 0) for t in types.values()) >= 2
    assert all(t["resources"].get("GPU", 0) >= 1 for t in types.values())


def test_onprem_is_local_without_node_types():
    config = load_cluster_config(FILES["onprem"])
    assert config["provider"]["type"] == "local"
    assert "available_node_types" not in config
    assert config["provider"]["head_ip"] and config["provider"]["worker_ips"]


# ------------------------------------------------------------------ broken copies
def test_fractional_gpu_resource_fails():
    config = load_cluster_config(FILES["gpu"])
    worker = next(k for k in config["available_node_types"] if k != config["head_node_type"])
    config["available_node_types"][worker]["resources"]["GPU"] = 0.5
    with pytest.raises(ValueError, match=rf"^available_node_types\.{worker}\.resources\.GPU: "):
        validate_cluster_config(config)


def test_unknown_top_level_key_fails(config):
    config["gpus_per_trial"] = 1
    with pytest.raises(ValueError, match=r"^gpus_per_trial: "):
        validate_cluster_config(config)


@pytest.mark.parametrize("field", COMMAND_FIELDS)
def test_command_field_as_string_fails(config, field):
    config[field] = "pip install -e ~/smote2mixup"
    with pytest.raises(ValueError, match=rf"^{field}: .*not of type 'array'"):
        validate_cluster_config(config)


def test_local_provider_refuses_node_types():
    config = load_cluster_config(FILES["onprem"])
    config["available_node_types"] = load_cluster_config(FILES["gpu"])["available_node_types"]
    with pytest.raises(ValueError, match=r"^available_node_types: "):
        validate_cluster_config(config)


def test_ray_cross_field_rules_are_applied():
    config = load_cluster_config(FILES["gpu"])
    config["head_node_type"] = "no_such_type"
    with pytest.raises(ValueError, match=r"^head_node_type: "):
        validate_cluster_config(config)


def test_cli_reports_each_file(tmp_path, monkeypatch, capsys):
    broken = load_cluster_config(FILES["gpu"])
    broken["setup_commands"] = "pip install ."
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    monkeypatch.setattr(sys, "argv", ["validate", str(FILES["gpu"]), str(tmp_path / "broken.yaml")])
    monkeypatch.delitem(sys.modules, "cluster.validate", raising=False)  # run it fresh as __main__
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("cluster.validate", run_name="__main__")
    assert exit_info.value.code == 1
    out, err = capsys.readouterr()
    assert "gpu.yaml: ok" in out
    assert "broken.yaml: setup_commands:" in err


# ------------------------------------------------------------------ security and setup properties
def _mlflow_command(config):
    (command,) = [c for c in config["head_start_ray_commands"] if "cluster.tracking_server" in c]
    return command


def _option(command, flag):
    words = shlex.split(command[command.index("cluster.tracking_server"):])
    return words[words.index(flag) + 1] if flag in words else None


def test_dashboard_only_on_loopback(config):
    starts = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert starts and all("--dashboard-host=127.0.0.1" in c for c in starts)
    text = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert re.findall(r"--dashboard-host[= ](\S+)", text) == ["127.0.0.1"]


def test_mlflow_binds_the_nodes_ray_address_with_local_sqlite(config):
    command = _mlflow_command(config)
    assert _option(command, "--host") is None  # the address Ray advertises, resolved on the head
    assert "host=get_node_ip_address()" in inspect.getsource(tracking_server.main).replace(" ", "")
    assert _option(command, "--port") == "5000"
    store = _option(command, "--backend-store-uri")
    assert store.startswith("sqlite:///") and "/mnt/shared" not in store  # never SQLite on NFS


def test_project_installed_through_file_mounts_and_setup(config):
    import ray

    assert "~/smote2mixup" in config["file_mounts"]
    assert any("pip install" in c and "-e ~/smote2mixup" in c for c in config["setup_commands"])
    if "docker" in config:
        image = config["docker"]["image"]
        assert image == f"rayproject/ray:{ray.__version__}-py311-gpu"  # same Ray as the driver
        assert "ray-ml" not in image


def test_every_node_and_driver_runs_ray_with_one_auth_mode(config):
    """`ray start`, `ray submit`'s python and every trial read ~/.bashrc: the mode is set there, so a
    ~/.ray token left by an earlier local run cannot switch one of them to another mode."""
    (line,) = [c for c in config["setup_commands"] if "RAY_AUTH_MODE" in c]
    assert "export RAY_AUTH_MODE=disabled" in line and ">> ~/.bashrc" in line
    text = yaml.safe_dump(config)
    assert "RAY_ADDRESS" not in text  # the driver finds the node's cluster itself


def test_onprem_runs_without_docker_in_a_venv_that_ssh_commands_use():
    config = load_cluster_config(FILES["onprem"])
    assert "docker" not in config
    setup = config["setup_commands"]
    assert any("python3.11 -m venv ~/smote2mixup-venv" in c for c in setup)
    assert any(c.startswith("~/smote2mixup-venv/bin/pip install") and "-e ~/smote2mixup" in c for c in setup)
    assert any("source ~/smote2mixup-venv/bin/activate" in c and ">> ~/.bashrc" in c for c in setup)
    comments = FILES["onprem"].read_text()
    for value in ("provider.head_ip", "provider.worker_ips", "auth.ssh_user", "auth.ssh_private_key",
                  "--tracking-uri http://<head_ip>:5000", "rsync"):
        assert value in comments, value


def test_tracking_server_stops_when_the_ray_cluster_stops(tmp_path):
    """The MLflow server runs while the node's GCS answers; then it is stopped with its workers."""
    gcs = socket.socket()
    gcs.bind(("127.0.0.1", 0))
    gcs.listen()
    address = "127.0.0.1:%d" % gcs.getsockname()[1]
    pids = tmp_path / "pids"
    server = [sys.executable, "-c", "import os, subprocess, sys, time; "
              f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}'); time.sleep(60)"]
    threading.Timer(1.5, gcs.close).start()  # `ray stop`
    started = time.monotonic()
    status = tracking_server.serve_while_ray_runs(server, address, poll=0.3)
    assert status == -signal.SIGTERM and time.monotonic() - started < 10
    for pid in map(int, pids.read_text().split()):
        assert gone(pid)


def gone(pid, wait=5.0):
    """Whether the process has exited (a zombie not yet reaped by its parent counts as exited)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rpartition(")")[2].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def test_aws_nodes_use_a_configured_security_group():
    """Without SecurityGroupIds Ray creates a group with SSH open to 0.0.0.0/0."""
    config = load_cluster_config(FILES["gpu"])
    for node_type in config["available_node_types"].values():
        assert node_type["node_config"].get("SecurityGroupIds")


def test_no_credentials_in_files():
    forbidden = ["aws_access_key_id", "aws_secret_access_key", "secret", "password", "token",
                 "private key-----"]
    for path in sorted(CLUSTER_DIR.iterdir()):
        if path.suffix in {".yaml", ".py"}:
            text = path.read_text().lower()
            assert not [word for word in forbidden if word in text], path
    for path in FILES.values():
        key = load_cluster_config(path)["auth"].get("ssh_private_key")
        assert key is None or key.startswith(("~/", "/"))  # a path, never key material
