"""What a trial's process spends on imports: a two-cell demo omega sweep (2 epochs) on a local Ray whose
worker processes run with PYTHONPROFILEIMPORTTIME=1; for each worker that ran a trial, the imports that
took over 20 ms, from the top of its process or from a function (cumulative microseconds from Python's
-X importtime log), and their sum.

    ../../../../.venv/bin/python worker_imports.py > worker-imports.txt
"""
import contextlib
import glob
import os
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
sys.path.insert(0, ROOT)
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray  # noqa: E402

ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
         runtime_env={"env_vars": {"PYTHONPROFILEIMPORTTIME": "1"}})
from sweeps import omega_sensitivity  # noqa: E402

with contextlib.redirect_stdout(open(os.devnull, "w")):  # its tables
    omega_sensitivity.main(["--preset", "demo", "--omegas", "0.25", "4", "--seeds", "1", "--epochs", "2",
                            "--results-dir", tempfile.mkdtemp()])
logs = ray._private.worker._global_node.get_logs_dir_path()
ray.shutdown()
for path in sorted(glob.glob(os.path.join(logs, "worker-*.err"))):
    rows = []
    for line in open(path):
        if line.startswith("import time:") and not line.startswith("import time: self"):
            own, cumulative, name = line.split(":", 1)[1].split("|")
            if len(name) - len(name.lstrip()) <= 1 and int(cumulative) > 20_000:  # imported at top level
                rows.append((int(cumulative), name.strip()))
    if rows:
        print(f"== a trial's worker ({os.path.basename(path)}): imports over 20 ms, "
              f"{sum(r[0] for r in rows) / 1e6:.2f} s in all")
        for cumulative, name in sorted(rows, reverse=True):
            print(f"   {cumulative / 1e6:6.2f} s  {name}")
