"""The MLflow UI, rendered by headless Chromium, on the store of a real tiny sweep.

One tiny omega sweep writes its parent and child runs; ``mlflow server`` serves that store; headless
Chromium loads the UI's pages (the single-page app fetches everything from the server's REST API)
and the test reads the rendered DOM and takes a screenshot. Skipped where no Chromium is installed
(CI installs Debian's ``chromium`` package, see .ci/run).

What the MLflow 3.17 UI renders, found by dumping its DOM:

* ``#/experiments/<id>`` opens a GenAI "Overview" page that shows no runs; the runs table is at
  ``#/experiments/<id>/runs``.
* In the table child runs are nested, collapsed, under their parent while the table is sorted by
  creation time without a filter; sorted by any other key (``?orderByKey=...`` in the URL) it is flat
  and lists the parent and every child.
* Metric columns are hidden by default ("Show more columns") and the column choice lives in the
  browser's local storage, not in the URL. The UI's "shared view" reads it from an experiment tag
  ``mlflow.sharedViewState.<key>`` (JSON) when the URL carries ``?viewStateShareKey=<key>``; the test
  sets that tag (through the server's REST API, on its own temporary store) to sort by run name and
  show ``margin_gap`` and ``test_acc`` next to the run names.
* A run's page (``#/experiments/<id>/runs/<run id>``) lists its metrics with their last values, its
  params and its parent run.

Two pages, rendered by two Chromium processes at once (on two cores, two take as long as one, four
take three times as long): the runs table (also the screenshot) and a trial's run page. The artifact
tab is checked through the endpoints it reads, not rendered, to keep the test near a minute.
"""

import html.parser
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import pytest

from sweeps import omega_sensitivity

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (CI installs Debian's chromium package in .ci/run)")

EXPERIMENT = "omega_sensitivity-demo"
TINY = ["--preset", "demo", "--omegas", "0.25", "4", "--seeds", "1", "--epochs", "2", "--num-cpus", "2"]
MLFLOW = os.path.join(os.path.dirname(sys.executable), "mlflow")
SHARE_KEY = "ui-test"
SERVER_START_TIMEOUT_S = 120
CHROMIUM_TIMEOUT_S = 90
WINDOW = (1400, 900)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(base, path, body=None, timeout=10):
    """GET (or POST ``body`` as JSON) against the server and decode the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else {}


def wait_until_healthy(base, server, log_path):
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    with open(log_path) as f:
        log = f.read()[-3000:]
    pytest.fail(f"mlflow server did not answer /health within {SERVER_START_TIMEOUT_S}s "
                f"(exit code {server.poll()}); its log ends with:\n{log}")


def stop(server):
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=15)


class _Text(html.parser.HTMLParser):
    """The visible text of a DOM dump: text nodes outside <script>, <style>, <noscript>, joined by spaces."""

    SKIP = {"script", "style", "noscript"}

    def __init__(self):
        super().__init__()
        self.parts, self.depth = [], 0

    def handle_starttag(self, tag, attrs):
        self.depth += tag in self.SKIP

    def handle_endtag(self, tag):
        self.depth -= tag in self.SKIP and self.depth > 0

    def handle_data(self, data):
        if not self.depth and data.strip():
            self.parts.append(data.strip())


def dom_text(dom):
    parser = _Text()
    parser.feed(dom)
    return " ".join(parser.parts)


def start_chromium(url, profile_root, screenshot=None):
    """Headless Chromium that loads ``url``, lets the app settle for 15 s of virtual time (which waits for
    pending network requests), prints the resulting DOM and, if asked, writes a screenshot."""
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={tempfile.mkdtemp(dir=profile_root)}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=15000", "--dump-dom"]
    if screenshot:
        args.append(f"--screenshot={screenshot}")
    return subprocess.Popen(args + [url], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)


def render_all(pages, profile_root):
    """Render ``{name: (url, screenshot or None)}`` with one Chromium each, all at once; return
    ``{name: visible text}``."""
    procs = {name: start_chromium(url, profile_root, shot) for name, (url, shot) in pages.items()}
    texts = {}
    try:
        for name, proc in procs.items():
            dom, _ = proc.communicate(timeout=CHROMIUM_TIMEOUT_S)
            assert proc.returncode == 0, f"chromium failed ({proc.returncode}) rendering {pages[name][0]}"
            texts[name] = dom_text(dom)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return texts


@pytest.fixture(scope="module")
def ui(ray_session, tmp_path_factory):
    """A tiny sweep's store served by ``mlflow server`` and its pages rendered by Chromium."""
    results = tmp_path_factory.mktemp("mlflow_ui")
    uri = f"sqlite:///{results}/mlflow.db"
    # Create the store's schema here, so that the server can start (about 15 s) while the sweep runs
    # and neither migrates the database under the other.
    from mlflow.tracking import MlflowClient
    MlflowClient(uri).search_experiments()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = results / "mlflow_server.log"
    # The runs' artifacts live at absolute local paths (the experiment's artifact location), which the
    # server reads directly: no --default-artifact-root or --artifacts-destination is needed to serve them
    # (test_trial_run_artifacts_are_listed_and_served).
    with open(log_path, "w") as log:
        # Without MLflow's job runner, as README.md opens the UI (eight processes the UI does not need).
        server = subprocess.Popen([MLFLOW, "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
                                   "--port", str(port), "--workers", "1"],
                                  env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        omega_sensitivity.main(TINY + ["--results-dir", str(results)])
        wait_until_healthy(base, server, log_path)

        exp = http(base, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=" + EXPERIMENT)["experiment"]
        exp_id = exp["experiment_id"]
        runs = http(base, "/api/2.0/mlflow/runs/search",
                    {"experiment_ids": [exp_id], "max_results": 100})["runs"]

        def tags(run):
            return {t["key"]: t["value"] for t in run["data"].get("tags", [])}

        parents = [r for r in runs if "mlflow.parentRunId" not in tags(r)]
        children = [r for r in runs if "mlflow.parentRunId" in tags(r)]
        assert len(parents) == 1 and len(children) == 2, "the tiny sweep logs one parent and two child runs"

        view = {"orderByKey": "tags.`mlflow.runName`", "orderByAsc": True,
                "selectedColumns": ["metrics.`margin_gap`", "metrics.`test_acc`", "params.`omega`"]}
        http(base, "/api/2.0/mlflow/experiments/set-experiment-tag",
             {"experiment_id": exp_id, "key": f"mlflow.sharedViewState.{SHARE_KEY}", "value": json.dumps(view)})

        child = children[0]
        screenshot = results / "mlflow_ui.png"
        texts = render_all({
            "runs": (f"{base}/#/experiments/{exp_id}/runs?viewStateShareKey={SHARE_KEY}", str(screenshot)),
            "run": (f"{base}/#/experiments/{exp_id}/runs/{child['info']['run_id']}", None),
        }, tmp_path_factory.mktemp("chromium"))
        yield dict(base=base, exp_id=exp_id, parent=parents[0], children=children, child=child, texts=texts,
                   screenshot=screenshot)
    finally:
        stop(server)


def name(run):
    return run["info"]["run_name"]


def metric(run, key):
    return {m["key"]: m["value"] for m in run["data"]["metrics"]}[key]


def test_runs_table_lists_the_sweep_run_and_every_trial_run_with_its_margin_gap(ui):
    text = ui["texts"]["runs"]
    assert EXPERIMENT in text and "3 matching runs" in text
    assert name(ui["parent"]) == EXPERIMENT and name(ui["parent"]) in text
    assert "margin_gap" in text and "test_acc" in text, "the metric columns are not shown"
    for child in ui["children"]:
        assert name(child).startswith("mamix_drw omega=") and name(child) in text, f"{name(child)} not in the runs table"
        # The cell holds the value the server returns, printed as JavaScript prints a number (the
        # shortest round-trip form, as Python's repr for values of this size).
        assert repr(metric(child, "margin_gap")) in text, f"margin_gap of {name(child)} not in the table"


def test_trial_run_page_shows_its_metrics_params_and_parent(ui):
    text, child = ui["texts"]["run"], ui["child"]
    assert name(child) in text
    assert "Parent run" in text and name(ui["parent"]) in text
    assert "margin_gap" in text and repr(metric(child, "margin_gap")) in text
    assert "test_acc" in text and "omega" in text


def test_trial_run_artifacts_are_listed_and_served(ui):
    """Through the endpoints the UI's artifact tab reads (the tab itself is not rendered)."""
    run_id = ui["child"]["info"]["run_id"]
    listed = http(ui["base"], "/ajax-api/2.0/mlflow/artifacts/list?run_id=" + run_id)
    assert {"per_class.json", "per_class.csv", "per_class_margin.png"} <= {f["path"] for f in listed["files"]}
    query = urllib.parse.urlencode({"path": "per_class_margin.png", "run_uuid": run_id})
    with urllib.request.urlopen(f"{ui['base']}/get-artifact?{query}", timeout=10) as resp:
        assert resp.read(8) == b"\x89PNG\r\n\x1a\n"


def test_screenshot_of_the_runs_table_is_a_real_picture(ui):
    from PIL import Image

    path = ui["screenshot"]
    assert path.exists() and path.stat().st_size > 20_000, "screenshot missing or nearly empty"
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == WINDOW
        colours = img.convert("RGB").getcolors(maxcolors=1_000_000)
    # A blank or still-loading page has a handful of colours; the rendered table and sidebar have hundreds.
    assert colours is not None and len(colours) > 100
