"""The README's on-prem block, command for command: `ray up`, `ray submit`, `ray exec`, `ray down`
with a filled-in copy of cluster/onprem.yaml, against an SSH server on 127.0.0.1.

Everything runs inside new PID, mount and network namespaces (`unshare`, as root), so that the
cluster's `ray stop` sees only the processes of this test, its fixed ports (SSH 22, Ray 6379,
MLflow 5000) are its own, and nothing outside changes: /tmp, /run and /mnt are private tmpfs, the
node's home (/tmp/home, through a private copy of /etc/passwd) is fresh, and the project's venv is
overlaid so that `ray up`'s `pip install -e` writes into a private layer. The node is provisioned as
after an earlier `ray up`: ~/smote2mixup-venv already holds the requirements (the namespace has no
network, so pip must find them met), and ~/.ray/auth_token is a token an earlier local Ray run left,
which must not change the cluster's authentication mode.

Beside the block's `ray submit` line, the same line with `--tmux` (the README's way for long sweeps)
runs a second sweep in a tmux session on the head.

Skipped, with the reason, where this cannot be set up: not root, no `unshare`, sshd, rsync or tmux
(.ci/run installs Debian's openssh-server, rsync and tmux), or namespaces or overlay mounts refused.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = "<!-- tests/test_launcher.py runs this block as it stands, on 127.0.0.1 -->"
HOME = "/tmp/home"  # the node's (and the operator's) home inside the namespaces
FILLED = {"head_ip": "127.0.0.1", "worker_ips": [], "ssh_user": "root", "ssh_private_key": "~/.ssh/id_ed25519"}
TOOLS = ["unshare", "mount", "ssh", "ssh-keygen", "rsync", "/usr/sbin/sshd", "tmux"]
TMUX_SWEEP = "omega-tmux"
TMUX_TABLE = f"/mnt/shared/results/{TMUX_SWEEP}/table12.md"


def readme_block() -> list[str]:
    """The commands of the README's tested block, continuation lines joined."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    block = re.search(re.escape(MARKER) + r"\n```bash\n(.*?)```", text, re.S)
    assert block, "the README lost its tested cluster block"
    return block.group(1).replace("\\\n", " ").strip().splitlines()


# ----------------------------------------------------------------------------- inside the namespaces

def sh(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def loopback_up() -> None:
    """`ip link set lo up` without iproute2: SIOCSIFFLAGS with IFF_UP | IFF_RUNNING."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", 0x1 | 0x40))


def private_machine(venv: str) -> None:
    """Private /tmp, /run, /mnt; the node's home; the venv overlaid; sshd on 127.0.0.1:22."""
    for path in ("/tmp", "/run", "/mnt"):
        sh("mount", "-t", "tmpfs", "tmpfs", path)
    loopback_up()
    os.makedirs(f"{HOME}/.ssh")
    os.makedirs(f"{HOME}/.ray")
    os.makedirs("/mnt/shared")
    os.makedirs("/run/sshd")
    with open("/etc/passwd") as f:
        passwd = re.sub(r"^(root:[^:]*:0:0:[^:]*:)[^:]*:", rf"\g<1>{HOME}:", f.read(), flags=re.M)
    with open("/tmp/passwd", "w") as f:
        f.write(passwd)
    sh("mount", "--bind", "/tmp/passwd", "/etc/passwd")
    os.makedirs("/tmp/venv/upper")
    os.makedirs("/tmp/venv/work")
    sh("mount", "-t", "overlay", "overlay", "-o", f"lowerdir={venv},upperdir=/tmp/venv/upper,workdir=/tmp/venv/work",
       venv)
    os.symlink(venv, f"{HOME}/smote2mixup-venv")  # the venv an earlier `ray up` made
    open(f"{HOME}/.bashrc", "w").close()
    with open(f"{HOME}/.ray/auth_token", "w") as f:
        f.write("left-by-an-earlier-local-ray-run\n")
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{HOME}/.ssh/id_ed25519")
    shutil.copy(f"{HOME}/.ssh/id_ed25519.pub", f"{HOME}/.ssh/authorized_keys")
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "/tmp/ssh_host_key")
    with open("/tmp/sshd_config", "w") as f:
        f.write("ListenAddress 127.0.0.1\nPort 22\nHostKey /tmp/ssh_host_key\nPidFile /tmp/sshd.pid\n"
                f"AuthorizedKeysFile {HOME}/.ssh/authorized_keys\nPermitRootLogin prohibit-password\n"
                "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n")
    sh("/usr/sbin/sshd", "-f", "/tmp/sshd_config")


def checkout(files: list[str], venv: str) -> str:
    """A copy of the project's files, as a fresh clone would hold them, with its venv made by `make install`."""
    work = "/tmp/work/smote2mixup"
    for name in files:
        os.makedirs(os.path.dirname(os.path.join(work, name)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, name), os.path.join(work, name))
    os.symlink(venv, os.path.join(work, ".venv"))
    return work


def fill_in(path: str) -> None:
    """What the user does in an editor: the values the file's header names."""
    with open(path) as f:
        text = f.read()
    for key, value in FILLED.items():
        text, n = re.subn(rf"^(\s*{key}:) [^#\n]*", rf"\g<1> {json.dumps(value)}", text, count=1, flags=re.M)
        assert n == 1, key
    with open(path, "w") as f:
        f.write(text)


CHECK = r"""
import json, os
from mlflow.tracking import MlflowClient
client = MlflowClient("http://127.0.0.1:5000")
runs = {name: client.search_runs([client.get_experiment_by_name(name).experiment_id])
        for name in ("omega_sensitivity-demo", "omega-tmux")}
raylets, job_runners = [], []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        argv = open(f"/proc/{pid}/cmdline").read().split("\0")
    except OSError:
        continue
    if os.path.basename(argv[0]) == "raylet":
        raylets += [a.split("=", 1)[1] for a in argv if a.startswith("--node_id=")]
    if any(a.startswith(("mlflow.server.jobs", "huey")) for a in argv):
        job_runners.append(" ".join(argv)[:200])
json.dump({"children": {name: [[r.info.run_name, r.info.status, r.data.tags.get("ray.node_id")] for r in found
                                if "mlflow.parentRunId" in r.data.tags] for name, found in runs.items()},
           "raylets": raylets, "job_runners": job_runners}, open("/tmp/facts.json", "w"))
"""


def reap_orphans(keep: int, done: threading.Event) -> None:
    """Be the init of this PID namespace: reap every exited process but ``keep`` (which Popen waits
    for). Unreaped, the Ray processes `ray stop` kills would linger as zombies, and it would wait
    its whole grace period for them."""
    while not done.is_set():
        try:
            exited = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            exited = None
        if exited is None or exited.si_pid == keep:
            time.sleep(0.2)
            continue
        os.waitpid(exited.si_pid, 0)


def leftovers() -> list[str]:
    """Command lines of Ray or MLflow processes still alive in this PID namespace."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline") as f:
                line = f.read().replace("\0", " ")
        except OSError:
            continue
        if pid != str(os.getpid()) and any(w in line for w in ("mlflow", "raylet", "gcs_server", "tracking_server")):
            found.append(line[:200])
    return found


def inside(files: list[str]) -> dict:
    """PID 1 of the namespaces: set the machine up, run the README's block, report what happened."""
    venv = sys.prefix
    try:
        private_machine(venv)
    except (subprocess.CalledProcessError, OSError) as err:
        return {"skip": f"cannot set up the private machine: {err} {getattr(err, 'stderr', '')}".strip()}
    work = checkout(files, venv)
    with open("/tmp/check.py", "w") as f:
        f.write(CHECK)
    script = ["PS4='+ $(date +%T) '", "set -ex"]  # each command with its start time, for a failure's output
    for line in readme_block():
        if line.startswith("ray down"):
            script.append("python /tmp/check.py")  # MLflow, before `ray down` stops its server
        line = line.replace("<head_ip>", FILLED["head_ip"])
        if line.startswith("ray submit"):
            # The README's way for long sweeps, `ray submit --tmux`: it returns at once and the sweep
            # runs on in a tmux session on the head, which must find the venv and join the cluster. It
            # runs beside the block's own sweep, which then waits for it.
            script.append(line.replace("ray submit", "ray submit --tmux", 1) + f" --name {TMUX_SWEEP}")
            script.append(line)
            script.append(f"for i in $(seq 150); do test -f {TMUX_TABLE} && break; sleep 1; done; test -f {TMUX_TABLE}")
            continue
        script.append(line)
        if line.startswith("cp cluster/onprem.yaml"):
            script.append(f"{sys.executable} {os.path.abspath(__file__)} fill-in my-cluster.yaml")
    env = {"HOME": HOME, "USER": "root", "LANG": "C.UTF-8", "SHELL": "/bin/bash",
           "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    started = time.monotonic()
    with open("/tmp/output.txt", "w") as log:
        bash = subprocess.Popen(["bash", "-c", "\n".join(script)], cwd=work, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        done = threading.Event()
        threading.Thread(target=reap_orphans, args=(bash.pid, done), daemon=True).start()
        returncode = bash.wait(timeout=540)
        done.set()
    with open("/tmp/output.txt") as log:
        facts = {"returncode": returncode, "output": log.read(), "seconds": time.monotonic() - started}
    if os.path.exists("/tmp/facts.json"):
        with open("/tmp/facts.json") as f:
            facts.update(json.load(f))
    deadline = time.monotonic() + 30  # the MLflow server stops within two polls of the GCS going away
    while leftovers() and time.monotonic() < deadline:
        time.sleep(1)
    facts["left_after_down"] = leftovers()
    return facts


# ----------------------------------------------------------------------------- the test

def cannot_run() -> str | None:
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return "needs root on Linux for PID, mount and network namespaces"
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        return f"missing {', '.join(missing)} (Debian: apt-get install openssh-server rsync tmux; .ci/run does)"
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "--mount", "--net", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unshare refused: {probe.stderr.strip()}"
    return None


@pytest.mark.slow
def test_readme_cluster_block_runs_the_sweep_on_the_cluster_and_ray_down_leaves_nothing():
    reason = cannot_run()
    if reason:
        pytest.skip(reason)
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("needs a git checkout, to copy the project's files as a clone holds them")
    files = listed.stdout.split()
    files = [f for f in files if os.path.isfile(os.path.join(ROOT, f))]
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "--mount", "--net",
                           sys.executable, os.path.abspath(__file__), "inside"],
                          input=json.dumps(files), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    if "skip" in facts:
        pytest.skip(facts["skip"])
    output = facts["output"]
    assert facts["returncode"] == 0, output[-5000:]
    # The driver joined the cluster on the head; it did not start an instance of its own.
    assert "Ray: joined the cluster at 127.0.0.1:6379 (running on this node" in output, output[-5000:]
    assert "Started a local Ray instance" not in output
    assert "Table 12: sensitivity of omega" in output  # `ray exec ... cat table12.md`
    assert len(facts["raylets"]) == 1
    assert facts["job_runners"] == [], "the head's MLflow server started its job runner"
    for sweep, children in facts["children"].items():  # the README's submit line, and with --tmux
        assert sorted(name for name, _, _ in children) == ["mamix_drw omega=0.25 seed=0", "mamix_drw omega=4 seed=0"]
        assert {status for _, status, _ in children} == {"FINISHED"}, sweep
        assert {node for _, _, node in children} == set(facts["raylets"]), sweep
    assert facts["left_after_down"] == [], "ray down left processes behind"


if __name__ == "__main__":
    if sys.argv[1] == "inside":
        print(json.dumps(inside(json.loads(sys.stdin.read()))))
    elif sys.argv[1] == "fill-in":
        fill_in(sys.argv[2])
