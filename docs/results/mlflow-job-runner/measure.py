"""What MLflow's job runner costs beside an idle `mlflow ui` on an empty SQLite store: the processes of
the server's tree, their memory (RSS), the CPU they took to start and over 30 s idle after, with the runner on (MLflow's
default) and off (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false, as README.md and cluster/tracking_server.py
start it).

    python measure.py PATH/TO/mlflow > measured.txt
"""
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

TICK = os.sysconf("SC_CLK_TCK")


def tree(root: int) -> list[int]:
    children = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(pid))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def cpu_and_rss(pids: list[int]) -> tuple[float, float]:
    cpu = rss = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu += int(fields[11]) + int(fields[12])
        rss += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu / TICK, rss / 2**20


for runner in ("true", "false"):
    store = os.path.join(tempfile.mkdtemp(), "mlflow.db")
    server = subprocess.Popen([sys.argv[1], "ui", "--backend-store-uri", f"sqlite:///{store}", "--host", "127.0.0.1",
                               "--port", "5077"], env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": runner},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(120):
        try:
            urllib.request.urlopen("http://127.0.0.1:5077/health", timeout=2)
            break
        except OSError:
            time.sleep(1)
    time.sleep(20)  # the tree's start-up over
    pids = tree(server.pid)
    cpu0, _ = cpu_and_rss(pids)
    time.sleep(30)
    cpu1, rss = cpu_and_rss(pids)
    print(f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION={runner}: {len(pids)} processes, RSS {rss:.0f} MiB, "
          f"CPU to start (its first 20 s after answering included) {cpu0:.1f} s, over the next 30 s idle "
          f"{cpu1 - cpu0:.2f} s", flush=True)
    os.killpg(server.pid, signal.SIGTERM)
    for pid in pids:  # the runner's consumers start sessions of their own
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    server.wait()
    time.sleep(2)
