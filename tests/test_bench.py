"""The benchmarks: both input pipelines augment alike, and throughput.py runs end to end."""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import throughput  # noqa: E402
from core.augment import draw_crops  # noqa: E402
from core.config import TrainConfig, field_assignments  # noqa: E402
from core.data import DATASETS, DeviceData  # noqa: E402

DRAWS = 3000


def row_cells(line: str) -> list[str]:
    """A Markdown table row's cells, stripped."""
    return [cell.strip() for cell in line.split("|")[1:-1]]


def doc(path: str) -> str:
    """A page of the docs (README.md, docs/RESULTS.md, ...)."""
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def _image() -> np.ndarray:
    """One 32x32 RGB uint8 image, bright on the right and different per channel, so flips, crop
    offsets and the padding value all move the per-pixel statistics."""
    rng = np.random.RandomState(0)
    cols = np.linspace(0, 200, 32)[None, :, None]
    rows = np.linspace(0, 40, 32)[:, None, None]
    img = cols + rows + np.array([0, 10, 30]) + rng.randint(0, 15, size=(32, 32, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _exact(img: np.ndarray, pad: int, mean, std, flip: bool = True, pad_after_norm: bool = False):
    """Exact per-pixel mean and std (C, H, W) of pad + uniform random crop + fair flip + Normalize."""
    mean, std = np.asarray(mean)[:, None, None], np.asarray(std)[:, None, None]
    x = img.transpose(2, 0, 1).astype(np.float64) / 255.0
    if pad_after_norm:  # the bug: zeros inserted on the standardised scale
        x = np.pad((x - mean) / std, ((0, 0), (pad, pad), (pad, pad)))
    else:
        x = (np.pad(x, ((0, 0), (pad, pad), (pad, pad))) - mean) / std
    h, w = img.shape[:2]
    crops = [x[:, oy:oy + h, ox:ox + w] for oy in range(2 * pad + 1) for ox in range(2 * pad + 1)]
    crops = crops + [c[:, :, ::-1] for c in crops] if flip else crops
    crops = np.stack(crops)
    return crops.mean(0), crops.std(0)


def _device_draws(img: np.ndarray, spec) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
    y = torch.zeros(1, dtype=torch.int64)
    data = DeviceData(x, y, x, y, [1], spec, ["0"])
    offsets, flips = draw_crops(DRAWS, spec.pad, spec.flip, torch.Generator().manual_seed(1), "cpu")
    out = data.train_images(torch.zeros(DRAWS, dtype=torch.int64), offsets, flips)
    return out.numpy().astype(np.float64)


def _loader_draws(img: np.ndarray, spec) -> np.ndarray:
    dataset = throughput.ImageDataset(img[None], np.zeros(1, dtype=np.int64), throughput.loader_transform(spec, 32))
    torch.manual_seed(2)
    return torch.stack([dataset[0][0] for _ in range(DRAWS)]).numpy().astype(np.float64)


def test_device_and_loader_pipelines_augment_alike():
    spec = DATASETS["cifar10"]
    img = _image()
    exact_mean, exact_std = _exact(img, spec.pad, spec.mean, spec.std)
    # A per-pixel z-test at 6 standard errors: passes for a correct pipeline, fails for a wrong one.
    tol_mean = 6 * exact_std / np.sqrt(DRAWS) + 1e-4
    tol_std = 6 * exact_std / np.sqrt(DRAWS) + 1e-4
    for name, draws in (("device", _device_draws(img, spec)), ("loader", _loader_draws(img, spec))):
        assert draws.shape == (DRAWS, 3, 32, 32), name
        assert np.all(np.abs(draws.mean(0) - exact_mean) <= tol_mean), name
        assert np.all(np.abs(draws.std(0) - exact_std) <= tol_std), name

    # The test can fail: the pipelines' statistics are far from those of the usual mistakes.
    for wrong in (dict(flip=False), dict(pad_after_norm=True)):
        wrong_mean, _ = _exact(img, spec.pad, spec.mean, spec.std, **wrong)
        assert np.any(np.abs(wrong_mean - exact_mean) > 5 * tol_mean), wrong


def test_digits_loader_transform_has_no_flip_and_one_channel():
    spec = DATASETS["digits"]
    names = [type(t).__name__ for t in throughput.loader_transform(spec, 8).transforms]
    assert names == ["RandomCrop", "ToTensor", "Normalize"]
    img = np.arange(64, dtype=np.uint8).reshape(8, 8, 1) * 4
    x, label, index = throughput.ImageDataset(img[None], np.array([3]), throughput.loader_transform(spec, 8))[0]
    assert x.shape == (1, 8, 8) and label == 3 and index == 0


@pytest.mark.parametrize("pipeline", ["device", "loader"])
def test_throughput_smoke_run_on_digits(pipeline, tmp_path):
    out = tmp_path / "bench.jsonl"
    argv = ["--dataset", "digits", "--method", "mamix_drw", "--steps", "2", "--warmup", "1", "--device", "cpu",
            "--pipeline", pipeline, "--workers", "0", "--json", str(out)]
    row = throughput.main(argv)
    assert row["img_per_s"] > 0 and row["impl"] == pipeline and row["steps"] == 2 and row["batch"] == 128
    assert {"method", "device", "torch", "threads"} <= set(row)
    throughput.main(argv)  # a second run appends a line
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0]) == row


def test_export_runs_writes_each_trial_epoch_once_and_counts_steps_logged_twice(tmp_path):
    """A real-data run's MLflow store as committed files: one history row per trial run and epoch, the
    parent run listed in runs.json only, and a metric step logged twice (a resume that went wrong) counted."""
    from bench.export_runs import export
    from core import tracking

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = tracking.experiment_id(uri, "sweep", str(tmp_path / "mlartifacts"))
    parent = tracking.start_parent_run(uri, experiment, "sweep", {"sweep": "sweep"})
    client = tracking.client(uri)
    child = client.create_run(experiment, run_name="cell", tags={"mlflow.parentRunId": parent}).info.run_id
    for step, acc in [(1, 0.5), (2, 0.6), (2, 0.6)]:
        client.log_metric(child, "test_acc", acc, step=step)
    assert export(uri, "sweep", str(tmp_path)) == ("2 runs; history: 2 rows x 3 columns; "
                                                   "metric steps logged more than once: 1")
    history = pd.read_csv(tmp_path / "history.csv")
    assert history[["run_name", "step", "test_acc"]].values.tolist() == [["cell", 1, 0.5], ["cell", 2, 0.6]]
    runs = {r["run_name"]: r for r in json.load(open(tmp_path / "runs.json"))}
    assert runs["cell"]["tags"]["mlflow.parentRunId"] == parent and runs["sweep"]["metrics"] == {}


def test_sweep_throughput_processes_runner_on_digits(tmp_path):
    """Packing without Ray: every trial finishes, the epoch and start-up times are measured, the grid
    extrapolation follows its formula, and packing does not change what a trial computes."""
    from bench import sweep_throughput

    out = tmp_path / "sweep.jsonl"
    rows = sweep_throughput.main(["--dataset", "digits", "--epochs", "2", "--omegas", "0.5", "2", "--packing", "1", "2",
                                  "--runner", "processes", "--num-cpus", "1", "--results-dir", str(tmp_path / "runs"),
                                  "--json", str(out)])
    assert [r["packing"] for r in rows] == [1, 2]
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows
    for r in rows:
        assert r["runner"] == "processes" and r["finished"] == r["trials"] == 2
        assert r["epoch_s"] > 0 and r["startup_s"] > 0 and r["trials_per_hour"] > 0
        expected = -(-35 // r["packing"]) * (r["startup_s"] + 200 * r["epoch_s"]) / 3600
        assert r["grid_h_extrapolated"] == pytest.approx(expected, abs=2e-3)
    # one CPU thread per trial at both packings, so the same seeds give the same models
    assert rows[0]["threads_per_trial"] == rows[1]["threads_per_trial"] == 1
    assert rows[0]["test_acc"] == rows[1]["test_acc"]


def test_fused_throughput_measures_each_mode_and_member_count(tmp_path):
    from bench import fused_throughput

    out = tmp_path / "fused.jsonl"
    rows = fused_throughput.main(["--device", "cpu", "--dataset", "digits", "--model", "small_cnn", "--members", "1", "3",
                                  "--steps", "2", "--warmup", "1", "--batch", "32", "--json", str(out)])
    assert [(r["mode"], r["members"]) for r in rows] == [("fused", 1), ("sequential", 1), ("fused", 3), ("sequential", 3)]
    assert all(r["img_per_s"] > 0 and r["model"] == "small_cnn" and r["device"] == "cpu" for r in rows)
    assert rows[2]["executor"] in ("grouped", "per_member") and rows[3]["executor"] is None
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows


def test_packed_processes_time_their_steps_only_once_all_are_ready():
    """The processes mode (run on CUDA; here called on the CPU, on digits): each worker sets up and warms
    up, and starts its timed steps only after the parent's go, which follows every worker's READY, so the
    timed spans overlap instead of following each other's start-up."""
    from bench import fused_throughput

    argv = ["--device", "cpu", "--dataset", "digits", "--model", "small_cnn", "--batch", "32", "--steps", "2",
            "--warmup", "1", "--threads", "1"]
    result = fused_throughput.measure_processes(fused_throughput.parser().parse_args(argv), argv, 2)
    assert result["mode"] == "processes" and result["members"] == 2 and result["img_per_s"] > 0
    assert len(result["per_process_img_per_s"]) == 2 and all(r > 0 for r in result["per_process_img_per_s"])
    assert len(result["start_after_go_s"]) == 2 and all(s >= 0 for s in result["start_after_go_s"])
    no_data = ["--device", "cpu", "--dataset", "cifar10", "--steps", "1"]  # each worker exits: no --data-root
    with pytest.raises(RuntimeError, match="before it was ready"):
        fused_throughput.measure_processes(fused_throughput.parser().parse_args(no_data), no_data, 2)


DIGITS = ["--device", "cpu", "--epochs", "2", "--omegas", "0.25", "4", "--probe-steps", "1", "--budget-s", "600",
          "--set", "dataset=digits", "model=small_cnn", "ratio=10", "batch_size=64"]


@pytest.mark.parametrize("device,compile_,expected", [
    ("cuda", None, ["auto"]), ("cuda", "reduce-overhead", ["auto"]), ("cpu", None, ["auto"]), ("cpu", "off", ["auto"]),
    ("cuda", "off", ["grouped", "grouped+benchmark", "grouped+nchw", "per_member"])])
def test_a_window_probes_the_eager_layouts_only_when_told_not_to_compile_on_cuda(device, compile_, expected):
    """Compiled by default on CUDA, a window probes ``auto`` alone (each layout would compile its own
    graphs); ``--compile off`` brings back the four eager layouts."""
    import argparse

    from bench import table12_fused
    args = argparse.Namespace(epochs=None, set={}, device=device, data_root=None, compile=compile_)
    assert table12_fused.default_candidates(args) == expected


def test_table12_windows_train_the_missing_cells_and_table_them_all(tmp_path, capsys):
    """The prepared GPU run, dry-run on digits window after window: the first trains seed 0 (after
    timing two ways of running the pack and keeping the faster), the second, given the first as done,
    only seed 1's cells, the third nothing, one without time for a cell nothing either; each writes
    every member's evaluations, final metrics and the table over every window beside the paper's
    numbers; a window of another setting is left out of the table."""
    from bench import table12_fused

    done = tmp_path / "done"
    first = table12_fused.main(["--out", str(done / "w1"), "--done", str(done), "--seeds", "1",
                                "--candidates", "grouped", "per_member", *DIGITS])
    assert first["members"] == 2 and first["plan"]["members"] == 2 and first["failures"] == {}
    assert [t["candidate"] for t in first["candidates"]] == ["grouped", "per_member"]
    assert all(t["step_s"] > 0 for t in first["candidates"])
    assert first["candidate"] == min(first["candidates"], key=lambda t: t["step_s"])["candidate"]
    lines = [json.loads(line) for line in (done / "w1" / "members.jsonl").read_text().splitlines()]
    assert len(lines) == 2 * (2 // first["plan"]["eval_every"]) and all("margin_gap" in r for r in lines)
    assert {(r["omega"], r["seed"]) for r in lines} == {(0.25, 0), (4.0, 0)}

    second = table12_fused.main(["--out", str(done / "w2"), "--done", str(done), "--seeds", "2", *DIGITS])
    assert second["done_before"] == 2 and second["members"] == 2
    final = json.loads((done / "w2" / "final.json").read_text())
    assert {(r["omega"], r["seed"]) for r in final} == {(0.25, 1), (4.0, 1)} and all(r["epoch"] == 2 for r in final)
    page = (done / "w2" / "table12.md").read_text()
    cpu = table12_fused.device_name(torch.device("cpu"))
    assert f"4 member(s) of the grid's 4 from 2 window(s) (w1 on {cpu}, w2 on {cpu})" in page
    assert "74.85 ± 0.28" in page  # omega 0.25's paper number beside ours
    # beside the final epoch, the best evaluated one (what the authors' code reports), saying how often
    # each window evaluated
    assert "Best epoch (%, test-selected)" in page and all(r["test_acc_best"] >= r["test_acc"] for r in final)
    everies = sorted({first["plan"]["eval_every"], second["plan"]["eval_every"]})
    assert f"(every {' or '.join(map(str, everies))} epoch(s), the last always)" in page
    rows = [line.split("|") for line in page.splitlines() if line.startswith("|") and "0.25" in line]
    assert rows[0][2].strip() == "2"  # two seeds of omega 0.25, one from each window

    third = table12_fused.main(["--out", str(tmp_path / "w3"), "--done", str(done), "--seeds", "2", *DIGITS])
    assert third["members"] == 0 and json.loads((tmp_path / "w3" / "final.json").read_text()) == []

    # a window too short for one cell trains nothing and says so, rather than start what cannot finish
    short = table12_fused.main(["--out", str(tmp_path / "w4"), "--done", str(tmp_path / "none"), "--seeds", "1",
                                *DIGITS, "--budget-s", "0"])
    assert short["plan"] is None and short["members"] == 0
    assert "not even one cell fits" in capsys.readouterr().out

    other = [*DIGITS[:DIGITS.index("--epochs")], "--epochs", "1", *DIGITS[DIGITS.index("--epochs") + 2:]]
    table12_fused.main(["--out", str(done / "w0-short"), "--done", str(tmp_path / "none"), "--seeds", "1", *other])
    capsys.readouterr()
    page = table12_fused.main(["--table", str(done), "--seeds", "2", *DIGITS])
    [written] = done.glob("table12*.md")  # named after the setting's changes from Table 12's
    assert "dataset=digits" in written.name and "model=small_cnn" in written.name
    assert page == written.read_text() and f"from 2 window(s) (w1 on {cpu}, w2 on {cpu})" in page
    assert "in Table 12's setting but batch_size=64, dataset=digits" in page
    assert f"left out {done / 'w0-short'}: another setting (drw_epoch, epochs" in capsys.readouterr().out


def test_table12_window_replays_every_member_as_a_pack_member_and_alone(tmp_path):
    """``--replays``: after training, each member's final weights replayed this platform's way and the
    authors'; its "as trained" row is its own final evaluation (members not swapped), its replays those of
    the same cell trained and replayed alone, and the table gives the best of the authors' replays. A
    deadline already past leaves the final evaluation alone."""
    from bench import table12_fused
    from bench.replays import replays
    from core.train import train_pack

    run = table12_fused.main(["--out", str(tmp_path / "w"), "--done", str(tmp_path / "none"), "--seeds", "1",
                              "--replays", "2", *DIGITS])
    assert run["members"] == 2 and run["replay_repeats"] == 2 and run["replays_s"] > 0
    final = json.loads((tmp_path / "w" / "final.json").read_text())
    cells = json.loads((tmp_path / "w" / "replays.json").read_text())
    assert [(c["omega"], c["seed"], c["epoch"]) for c in cells] == [(r["omega"], r["seed"], 2) for r in final]
    assert [list(c["statistics"]) for c in cells] == [["as trained", "mixed", "clean, then mixed"]] * 2
    trained = [c["statistics"]["as trained"][0] for c in cells]
    assert [(t["test_acc"], t["margin_gap"]) for t in trained] == [(r["test_acc"], r["margin_gap"]) for r in final]
    assert trained[0]["margin_gap"] != trained[1]["margin_gap"]  # so a swap of members would show

    setting = table12_fused.paper_setting(2, **field_assignments(DIGITS[DIGITS.index("--set") + 1:]), device="cpu")
    cfg = TrainConfig.from_dict({**setting, "omega": 4.0, "seed": 0, "eval_every": run["plan"]["eval_every"]})
    alone: dict = {}
    train_pack([cfg], save_state=alone.update)
    solo = replays([cfg], alone, 2, table12_fused.REPLAYED)[0]
    for way in table12_fused.REPLAYED:
        assert [m["test_acc"] for m in solo[way]] == [m["test_acc"] for m in cells[1]["statistics"][way]]
        assert [m["margin_gap"] for m in solo[way]] == pytest.approx(
            [m["margin_gap"] for m in cells[1]["statistics"][way]], rel=1e-3, abs=1e-4)

    page = (tmp_path / "w" / "table12.md").read_text()
    best = max(100 * m["test_acc"] for m in cells[1]["statistics"]["clean, then mixed"])
    rows = [row_cells(line) for line in page.split("Replayed cells")[1].splitlines() if line.startswith("| ")]
    assert rows[2][:4] == ["4", "0", "w", "2"] and rows[2][-2] == f"{best:.2f}"  # rows[0] is the header

    late = replays([cfg], alone, 3, table12_fused.REPLAYED, deadline=time.time() - 1)[0]
    assert late == {"as trained": solo["as trained"], "mixed": [], "clean, then mixed": []}


def test_committed_table12_is_what_its_command_prints(tmp_path, capsys):
    """docs/results/table12/table12.md, the table docs/RESULTS.md and README.md cite, is the page that
    ``bench/table12_fused.py --table`` writes over the committed windows in the default setting (their
    replays included), and the windows of another setting (the former linear head's) are named and left out."""
    from bench import table12_fused

    committed = os.path.join(ROOT, "docs", "results", "table12")
    for window in sorted(os.listdir(committed)):
        if os.path.isfile(os.path.join(committed, window, "run.json")):
            os.makedirs(tmp_path / window)
            for name in ("run.json", "final.json", "replays.json"):
                if os.path.exists(os.path.join(committed, window, name)):
                    shutil.copy(os.path.join(committed, window, name), tmp_path / window / name)
    page = table12_fused.main(["--table", str(tmp_path)])
    with open(os.path.join(committed, "table12.md")) as f:
        assert page == f.read()
    assert "another setting (head_bias, head_init differ)" in capsys.readouterr().out
    # and the former head's page, its one cell (docs/RESULTS.md, "The former head's cell")
    page = table12_fused.main(["--table", str(tmp_path), "--set", "head_bias=true", "head_init=kaiming_normal"])
    with open(os.path.join(committed, "table12-head_bias=true-head_init=kaiming_normal.md")) as f:
        assert page == f.read()
    assert "1 member(s) of the grid's 35" in page


def test_another_settings_table_gets_its_own_page_beside_table12s(tmp_path, capsys):
    """The windows of Table 12's setting and of another (the authors' clean forward pass) share the folder;
    ``--table`` in the other setting leaves every committed window out and names its page after the change,
    so table12.md, the page the docs cite, is not overwritten."""
    from bench import table12_fused

    committed = os.path.join(ROOT, "docs", "results", "table12")
    for window in ("2026-12-04-nvidia-h200", "2026-12-05-cpu-amd-epyc-omega-4.0-seed-4"):
        shutil.copytree(os.path.join(committed, window), tmp_path / window)
    page = table12_fused.main(["--table", str(tmp_path), "--set", "clean_forward=true"])
    assert sorted(p.name for p in tmp_path.glob("*.md")) == ["table12-clean_forward=true.md"]
    assert page == (tmp_path / "table12-clean_forward=true.md").read_text()
    assert "in Table 12's setting but clean_forward=true: 0 member(s) of the grid's 35" in page
    assert "(no finished member yet)" in page
    assert "another setting (clean_forward differ)" in capsys.readouterr().out
    table12_fused.main(["--table", str(tmp_path)])
    assert "22 member(s) of the grid's 35" in (tmp_path / "table12.md").read_text()


def test_cell_table_marks_each_cell_with_its_device_and_keeps_a_cell_trained_twice():
    """The per-cell grid: an omega a row, a seed a column, each cell marked with the device of its window
    (a seed's run on one device is not its run on another); a cell not trained is empty, one trained in
    two windows shows both."""
    from bench.table12_fused import cell_table

    def row(omega, seed, acc, window, device):
        return {"omega": omega, "seed": seed, "test_acc": acc, "window": window, "device": device}

    page = cell_table([row(0.5, 0, 0.7012, "w2", "NVIDIA H200"), row(0.5, 1, 0.69, "w1", "AMD EPYC"),
                       row(8.0, 1, 0.655, "w1", "AMD EPYC"), row(0.5, 0, 0.7, "w1", "AMD EPYC")])
    assert "(a: AMD EPYC, b: NVIDIA H200)" in page
    rows = [row_cells(line) for line in page.splitlines() if line.startswith("| ")]
    assert rows == [["omega", "seed 0", "seed 1"], ["0.5", "70.00 a; 70.12 b", "69.00 a"], ["8", "", "65.50 a"]]


def test_results_page_shows_the_committed_cell_and_trend_tables():
    """docs/RESULTS.md's per-cell table and its trend over omega are the ones the committed table12.md
    prints, not typed by hand."""
    with open(os.path.join(ROOT, "docs", "results", "table12", "table12.md")) as f:
        page = f.read()
    results = doc("docs/RESULTS.md")
    for first_row in ("| omega   | seed 0", "| metric "):
        start = page.index(first_row)
        assert page[start:page.index("\n\n", start)] in results


def typed_by_hand(page: str, printed: list[str] = ()) -> tuple[list[str], list[str]]:
    """The Markdown tables of ``page``, and those of them found neither, line for line, in a committed
    page or log under docs/results/ nor among the tables a command ``printed``."""
    tables = re.findall(r"(?:^\|.*\n)+", page, flags=re.MULTILINE)
    written = list(printed)
    for ext in ("md", "txt"):
        for path in glob.glob(os.path.join(ROOT, "docs", "results", "**", f"*.{ext}"), recursive=True):
            with open(path) as f:
                written.append(f.read())
    return tables, [t for t in tables if not any(t.strip() in text for text in written)]


def test_every_results_table_is_in_a_file_a_command_wrote():
    """Every table of docs/RESULTS.md is, line for line, in a committed file under docs/results/ that a
    command wrote (a sweep's table, table12.md, a cell's replays.md), not typed or edited by hand; but
    three: the two claims tables (verdicts in words) and the best-of-20 table, checked against its folders
    below."""
    tables, by_hand = typed_by_hand(doc("docs/RESULTS.md"))
    assert len(tables) >= 30
    assert [row_cells(t.splitlines()[0])[0] for t in by_hand] == [
        "claim of the paper, Table 12", "omega", "claim of the paper"]
    assert "best of 20 below the paper" in by_hand[1]


# A path of the project as the docs cite it: under one of its top-level folders, up to a space, quote or
# bracket. Templates (docs/results/gpu-<date>/, best-of-20-omega-*) name no one path.
CITED_PATH = re.compile(r"(?<![\w/.$-])(?:bench|core|cluster|docs|search_spaces|sweeps|tests)/[^\s`'\")\]]*")


LINK = re.compile(r"\]\((?![a-z]+:)([^)#\s]+)")  # a Markdown link's relative target


def cited_paths(page: str) -> set[str]:
    """The project paths that ``page`` names in its text and links to, relative to the project."""
    with open(page) as f:
        text = f.read()
    paths = {m.group(0).split("::")[0].rstrip(".,:;") for m in CITED_PATH.finditer(text)}  # "::": a test's id
    paths |= {os.path.relpath(os.path.join(os.path.dirname(page), m.group(1)), ROOT) for m in LINK.finditer(text)}
    return {p.rstrip("/") for p in paths if not any(c in p for c in "<*{$")}


def committed_paths() -> set[str] | None:
    """Every file in git's index and every folder above one; None where git cannot list them (no checkout,
    or a checkout git refuses, e.g. another user's)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        return None
    files = [f for f in listed.stdout.split("\0") if f]
    return {f.rsplit("/", i)[0] for f in files for i in range(f.count("/") + 1)}


def test_every_file_the_docs_cite_is_committed():
    """Every path of the project that README.md and docs/*.md name or link to (a result's folder, a file, a
    script) is committed, in git's index (so git add a new result before the tests): an output left
    under an ignored folder (results/ swallowed the first H100 files) fails here. But bench/results/,
    which PERFORMANCE.md names as the H100 files that never landed."""
    cited = set()
    for page in [os.path.join(ROOT, "README.md")] + glob.glob(os.path.join(ROOT, "docs", "*.md")):
        cited |= cited_paths(page)
    assert len(cited) > 100
    committed = committed_paths()
    if committed is None:  # what the folder holds stands in
        committed = {p for p in cited if os.path.exists(os.path.join(ROOT, p))}
    assert sorted(p for p in cited if not p.startswith("bench/results") and p not in committed) == []


def test_readmes_sweep_output_lines_are_in_the_demo_logs():
    """The lines README.md quotes from a sweep's output are in the committed demo logs, word for word."""
    quoted = [line for line in doc("README.md").splitlines(keepends=True)
              if line.startswith(("trial omega=", "status: "))]
    logs = ""
    for path in glob.glob(os.path.join(ROOT, "docs", "results", "demo", "*", "log.txt")):
        with open(path) as f:
            logs += f.read()
    assert len(quoted) == 3 and all(line in logs for line in quoted)


def test_results_best_of_20_table_is_its_folders_replays():
    """The table of "The authors' best epoch": each row's numbers are those its folder's replays.md printed
    (as trained, mixed and clean-then-mixed rows: mean ± std and best of 20), beside the paper's mean and the
    two differences from it."""
    from sweeps.paper_tables import TABLE12

    results = doc("docs/RESULTS.md")
    start = results.index("| omega | seed | final epoch | mixed | mixed, best of 20 |")
    rows = [row_cells(line) for line in results[start:results.index("\n\n", start)].splitlines()[2:]]
    assert len(rows) == 4
    for omega, seed, final, mixed, mixed_best, authors, authors_best, paper, final_below, best_below in rows:
        folder = os.path.join(ROOT, "docs", "results", "bn-statistics",
                              f"2026-12-04-best-of-20-omega-{float(omega):.1f}-seed-{seed}")
        with open(os.path.join(folder, "replays.md")) as f:
            replayed = {row[0]: row[1:4] for row in map(row_cells, f) if row}
        assert replayed["as trained"] == ["1", final, final]
        assert replayed["mixed"] == ["20", mixed, mixed_best]
        assert replayed["clean, then mixed"] == ["20", authors, authors_best]
        mean, std = TABLE12[float(omega)]
        assert paper == f"{mean:.2f} ± {std:.2f}"
        assert final_below == f"{mean - float(final):.2f}" and best_below == f"{mean - float(authors_best):.2f}"


def test_fused_tables_row_per_k_and_executor_with_the_last_line_of_each():
    """bench/fused_tables.py: a table per setting, a row per K (and fused executor), fused against the
    other modes, a way that failed as "error", and of a K measured twice in a mode its last line."""
    from bench.fused_tables import tables

    common = {"model": "resnet32", "device_name": "GPU X", "dataset": "cifar10", "method": "mamix_drw",
              "batch": 128, "amp": True, "compile": False, "steps": 30, "warmup": 5}
    lines = [{"mode": "fused", "members": 4, "img_per_s": 900.0, "executor": "grouped", **common},
             {"mode": "fused", "members": 4, "img_per_s": 1000.0, "executor": "grouped", **common},  # again: counts
             {"mode": "fused", "members": 4, "img_per_s": 600.0, "executor": "per_member", **common},
             {"mode": "sequential", "members": 4, "img_per_s": 400.0, "executor": None, **common},
             {"mode": "processes", "members": 4, "img_per_s": 800.0, "executor": None, **common},
             {"mode": "fused", "members": 1, "img_per_s": 250.0, "executor": "grouped", **common},
             {"mode": "fused", "members": 1, "img_per_s": 99.0, "executor": "grouped", **common, "batch": 64},
             {"way": "vmap", "members": 7, "amp": True, "error": "RuntimeError: no", **common},
             {"way": "grouped", "members": 7, "amp": True, "img_per_s": 48367.14, **common}]
    text = tables(lines)
    parts = text.split("\n\n")
    assert parts[0] == ("Fused throughput, GPU X, resnet32 on cifar10 (mamix_drw), batch 128, bf16, "
                        "30 timed steps after 5:")
    rows = [row_cells(line) for line in parts[1].splitlines()]
    assert rows[0] == ["K", "fused img/s", "executor", "sequential img/s", "processes img/s", "fused / sequential",
                       "fused / processes"]
    assert rows[2:] == [["1", "250", "grouped", "", "", "", ""],
                        ["4", "1,000", "grouped", "400", "800", "2.50", "1.25"],
                        ["4", "600", "per_member", "400", "800", "1.50", "0.75"]]
    assert "batch 64, bf16" in parts[2]  # another setting: its own table
    assert row_cells(parts[3].splitlines()[2]) == ["1", "99", "grouped"]
    assert parts[4] == "Executors (one SGD step), GPU X, resnet32, batch 128, 30 timed steps after 5:"
    assert row_cells(parts[5].splitlines()[2]) == ["7", "bf16", "48,367", "error"]


def test_fused_tables_time_a_whole_pack_from_a_windows_run_json(tmp_path):
    """A table12_fused.py window's run.json: a row per pack size, a column per way timed (the candidates
    on the pack of the cells left, one failing, then the probes in the way kept), img/s = members x batch /
    step; a compiled probe is named with its mode, recorded or, in windows before it was, the --compile flag's
    ("mode not recorded" without the flag)."""
    from bench.fused_tables import load
    from bench.fused_tables import tables as fused_tables

    setting = {"model": "resnet32", "dataset": "cifar10", "method": "mamix_drw", "batch_size": 100}
    eager = {"device": "GPU X", "torch": "2.0", "setting": setting, "grid_cells": 35, "done_before": 15,
             "argv": [], "candidate": "grouped",
             "candidates": [{"candidate": "grouped", "members": 20, "compile_s": 0.0, "step_s": 0.05},
                            {"candidate": "per_member", "error": "CUDA out of memory"}],
             "probes": [{"members": 7, "compile_s": 0.0, "compile_mode": None, "step_s": 0.02},
                        {"members": 20, "compile_s": 0.0, "compile_mode": None, "step_s": 0.04}]}
    # two windows from before probes kept their compile mode: one given --compile, one compiled by default
    compiled = {**eager, "argv": ["--compile", "max-autotune"], "candidate": "auto", "candidates": [],
                "probes": [{"members": 7, "compile_s": 3.0, "step_s": 0.01}]}
    by_default = {**compiled, "argv": [], "probes": [{"members": 20, "compile_s": 3.0, "step_s": 0.02}]}
    paths = []
    for name, run in (("eager", eager), ("compiled", compiled), ("by_default", by_default)):
        paths.append(str(tmp_path / f"{name}.json"))
        with open(paths[-1], "w") as f:
            json.dump(run, f, indent=1)
    title, table = fused_tables(load(paths)).strip().split("\n\n")
    assert title.endswith("GPU X, torch 2.0, resnet32 on cifar10 (mamix_drw), 100 images a member a step:")
    lines = table.splitlines()
    assert row_cells(lines[0]) == ["members", "grouped", "per_member", "auto, compiled (max-autotune)",
                                   "auto, compiled (mode not recorded)"]
    # the probe of the whole pack, timed after the candidates, is the one its row shows
    assert [row_cells(line) for line in lines[2:]] == [
        ["7", "35,000 (0.0200 s)", "", "70,000 (0.0100 s)", ""],
        ["20", "50,000 (0.0400 s)", "error", "", "100,000 (0.0200 s)"]]
    # a window's run.json from before it kept its setting, and JSON lines given as .json
    (tmp_path / "old.json").write_text(json.dumps({"device": "GPU X", "probes": []}, indent=1))
    (tmp_path / "lines.json").write_text('{"mode": "fused"}\n{"mode": "sequential"}\n')
    for wrong in ("old.json", "lines.json"):
        with pytest.raises(SystemExit, match="not the run.json of a bench/table12_fused.py window, which has"):
            load([str(tmp_path / wrong)])


def test_reliability_page_shows_the_concurrency_table_its_measurements_print():
    """docs/RELIABILITY.md's SQLite concurrency table is what bench/mlflow_concurrency.py --table prints
    from the committed measurements, row for row in the order measured."""
    from bench.mlflow_concurrency import table
    from bench.summarise import read

    page = doc("docs/RELIABILITY.md")
    rows = read([os.path.join(ROOT, "docs", "results", "mlflow-concurrency", "sqlite.jsonl")])
    printed = table(rows)
    assert printed in page
    assert [row_cells(line)[:3] for line in printed.splitlines()[2:]] == [
        [str(r["trials"]), str(r["expected_steps"]), str(r["arrived_steps"])] for r in rows]


# The files under docs/results/ whose fused_tables.py tables docs/PERFORMANCE.md shows, each group one call.
PERFORMANCE_MEASUREMENTS = (
    ["cpu-fused/small_cnn_digits.jsonl"], ["cpu-fused/resnet32_cifar10_lt300.jsonl"],
    ["cpu-fused/executors_vmap.jsonl"], ["gpu-2026-12-04/window-eager/fused.jsonl"],
    ["gpu-2026-12-04/window-eager/graphs.jsonl"],
    ["graphs-cpu/small_cnn_digits.jsonl", "gpu-session-cpu-dryrun/graphs.jsonl",
     "graphs-cpu/variants-cifar10-small_cnn/graphs.jsonl"],
    ["gpu-2026-12-04/window-eager/table12/run.json", "table12/2026-12-04-nvidia-h200/run.json"])


def printed_performance_tables() -> list[str]:
    from bench.fused_tables import load, tables

    printed = []
    for measured in PERFORMANCE_MEASUREMENTS:
        text = tables(load([os.path.join(ROOT, "docs", "results", m) for m in measured]))
        printed += [part.strip() for part in text.split("\n\n")]
    return printed


def test_performance_page_shows_the_fused_tables_its_measurements_print():
    """docs/PERFORMANCE.md's fused throughput, executor, graphs-check and Table 12 pack tables are what
    bench/fused_tables.py prints from the committed measurements, not typed by hand."""
    page = doc("docs/PERFORMANCE.md")
    for table in printed_performance_tables():
        assert table in page, table[:80]


def test_every_performance_table_is_in_a_file_or_printed_from_files():
    """Every table of docs/PERFORMANCE.md is, line for line, in a committed file under docs/results/ (a
    page or a printed log) or what bench/fused_tables.py prints from committed files; but the list of
    tools (words) and the two H100 tables, whose files never landed (the page says they are unbacked)."""
    page = doc("docs/PERFORMANCE.md")
    tables, by_hand = typed_by_hand(page, printed_performance_tables())
    assert len(tables) >= 12
    assert [row_cells(t.splitlines()[0])[0] for t in by_hand] == ["file", "device", "variant"]
    h100 = page[page.index("## GPU: NVIDIA H100"):page.index("## CPU: machine")]
    assert "**The H100 figures on this page are unbacked.**" in page
    assert by_hand[1] in h100 and by_hand[2] in h100


BN_DIGITS = ["--device", "cpu", "--epochs", "2", "--eval-every", "1", "--set", "dataset=digits", "model=small_cnn",
             "ratio=10", "batch_size=64", "lr=0.05"]


def test_bn_statistics_table_gives_the_best_test_accuracy_of_the_repeats():
    """"best of n" is the largest test accuracy of a row's repeats (the authors' best_acc1 over that many
    epochs at rest), beside their mean; rows keep the order of the replays."""
    from bench import bn_statistics

    def run(acc):
        return {"test_acc": acc, "many_shot_acc": 0.5, "medium_shot_acc": 0.5, "few_shot_acc": 0.5,
                "class_acc_0": 0.5, "class_acc_1": 0.5, "margin_gap": 0.1}

    result = {"omega": 1.0, "seed": 0, "epoch": 200,
              "statistics": {"as trained": [run(0.70)], "mixed": [run(0.71), run(0.73), run(0.72)],
                             "clean, then mixed": [run(0.745), run(0.74)]}}
    rows = [line.split("|") for line in bn_statistics.replay_table(result, [5, 3]).splitlines()
            if line.startswith("| ") and "statistics" not in line]
    assert [(r[1].strip(), r[2].strip(), r[3].strip(), r[4].strip()) for r in rows] == [
        ("as trained", "1", "70.00", "70.00"), ("mixed", "3", "72.00 ± 1.00", "73.00"),
        ("clean, then mixed", "2", "74.25 ± 0.35", "74.50")]


def test_bn_statistics_trains_the_cell_once_and_replays_its_final_weights(tmp_path, monkeypatch):
    """The BatchNorm probe: a cell cut short resumes from its last evaluation to the numbers of an
    uninterrupted run; a finished one is not trained again; "as trained" is the training's own last
    evaluation, and the replays' statistics change the evaluation."""
    from bench import bn_statistics, replays

    whole = bn_statistics.main(["--out", str(tmp_path / "whole"), "--repeats", "2", *BN_DIGITS])
    final = json.loads((tmp_path / "whole" / "final.json").read_text())[0]
    statistics = whole["statistics"]
    assert [m["test_acc"] for m in statistics["as trained"]] == [final["test_acc"]] and final["epoch"] == 2
    assert list(statistics) == ["as trained", *replays.FORWARDING]
    gaps = {m["margin_gap"] for name in replays.FORWARDING for m in statistics[name]}
    assert len(gaps) == 2 * len(replays.FORWARDING), "each replay and repeat must move the statistics"
    page = (tmp_path / "whole" / "replays.md").read_text()
    assert "| clean, then mixed" in page and " ± " in page
    trained = (tmp_path / "whole" / "training.json").stat().st_mtime_ns
    assert bn_statistics.main(["--out", str(tmp_path / "whole"), "--repeats", "2", *BN_DIGITS]) == whole
    assert (tmp_path / "whole" / "training.json").stat().st_mtime_ns == trained, "a finished cell trained again"

    # --replays picks the ways; "mixed, trained" steps through the same batches as "mixed", so at learning
    # rate 0 it evaluates the same, and at the last epoch's learning rate it moves the weights
    picked = bn_statistics.main(["--out", str(tmp_path / "whole"), "--repeats", "3", "--replays", "mixed",
                                 "mixed, trained", *BN_DIGITS])["statistics"]
    assert list(picked) == ["as trained", "mixed", "mixed, trained"] and picked["mixed"][:2] == statistics["mixed"]
    assert "| clean" not in (tmp_path / "whole" / "replays.md").read_text()
    assert all(t["margin_gap"] != m["margin_gap"] for t, m in zip(picked["mixed, trained"], picked["mixed"]))
    state = torch.load(tmp_path / "whole" / "state.pt", weights_only=True)
    for group in state["optimizer"]["param_groups"]:
        group["lr"] = 0.0
    cfg = TrainConfig.from_dict(state["configs"][0])
    at_rest = replays.replays([cfg], state, 2, ["mixed", "mixed, trained"])[0]
    assert at_rest["mixed, trained"] == at_rest["mixed"] == picked["mixed"][:2]

    real_log = bn_statistics.progress_log

    def crash_after_the_first_evaluation(*args, **kwargs):
        def report(metrics, failures):
            real_log(*args, **kwargs)(metrics, failures)
            raise KeyboardInterrupt
        return report

    monkeypatch.setattr(bn_statistics, "progress_log", crash_after_the_first_evaluation)
    with pytest.raises(KeyboardInterrupt):
        bn_statistics.main(["--out", str(tmp_path / "cut"), *BN_DIGITS])
    monkeypatch.setattr(bn_statistics, "progress_log", real_log)
    resumed = bn_statistics.main(["--out", str(tmp_path / "cut"), "--repeats", "2", *BN_DIGITS])
    assert json.loads((tmp_path / "cut" / "training.json").read_text())["resumed_from_epoch"] == 1
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["resumed_from_epoch"] == 1, \
        "a resumed window's record must say its training_s is the last leg's"
    assert json.loads((tmp_path / "whole" / "run.json").read_text())["resumed_from_epoch"] is None
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "cut" / "members.jsonl").read_text().splitlines()]
    assert epochs == [1, 2], "the resumed run must go on from epoch 1 and keep its evaluation"
    assert resumed == whole

    # each folder is a window of Table 12's script: its table counts the cell, once per folder
    from bench import table12_fused
    setting = BN_DIGITS[BN_DIGITS.index("--set"):]
    page = table12_fused.main(["--table", str(tmp_path), "--device", "cpu", "--epochs", "2", "--seeds", "1",
                               "--omegas", "0.125", *setting])
    cpu = table12_fused.device_name(torch.device("cpu"))
    assert f"2 member(s) of the grid's 1 from 2 window(s) (cut on {cpu}, whole on {cpu})" in page
    assert f"| {100 * final['test_acc']:.2f} ± 0.00 " in page and "(every 1 epoch(s), the last always)" in page


def test_table12_plan_keeps_the_most_cells_that_fit():
    from bench.table12_fused import estimate, plan

    # set-up 2 s whatever the pack; a step 0.1 s + 0.01 s per member over 7; an evaluation 1 s + 0.1 s per member
    probes = [{"members": 7, "setup_s": 2.0, "compile_s": 0.0, "step_s": 0.1, "eval_s": 1.0, "steps_per_epoch": 10},
              {"members": 35, "setup_s": 2.0, "compile_s": 0.0, "step_s": 0.38, "eval_s": 3.8, "steps_per_epoch": 10}]
    # 35 members: 2 s + 10 epochs x 10 steps x 0.38 s + 10 evaluations x 3.8 s = 78 s
    assert plan(35, 10, probes, 78.01) == {"members": 35, "eval_every": 1, "estimated_s": 78.0}
    # 35 members still fit 50 s when evaluated every 5 epochs only (2 x 3.8 s)
    assert plan(35, 10, probes, 50) == {"members": 35, "eval_every": 5, "estimated_s": 47.6}
    # more members before more evaluations: 23 members, once (2 + 26 + 2.6 s), beat 22 twice (31.4 s > 30.8)
    assert plan(35, 10, probes, 30.8) == {"members": 23, "eval_every": 10, "estimated_s": 30.6}
    # below the smaller probe a pack costs what that probe measured: no extrapolation to cheaper packs
    assert estimate(probes, 3, 10, 1) == estimate(probes, 7, 10, 1) == 2 + 10 + 10
    assert plan(35, 10, probes, 13.01)["members"] == 7 and plan(35, 10, probes, 12.99) is None
    # one probe (one seed's cells or fewer remain): every pack costs what it measured
    assert plan(5, 10, probes[:1], 13.01) == {"members": 5, "eval_every": 10, "estimated_s": 13.0}
    # compiling, the last batch's graph costs what the full batch's did, once more
    assert estimate([{**probes[0], "compile_s": 5.0}], 7, 10, 10) == 13 + 5
    # time kept for replays costs evaluations, never cells: every 5 epochs leaves 78.01 - 47.6 >= 30 s
    assert plan(35, 10, probes, 78.01, reserve=30) == {"members": 35, "eval_every": 5, "estimated_s": 47.6}
    assert plan(35, 10, probes, 50, reserve=40) == {"members": 35, "eval_every": 20, "estimated_s": 43.8}


def test_table12_windows_of_older_code_still_count_unless_a_field_differs():
    """A window written before a TrainConfig field existed counts as that field's default."""
    from bench.table12_fused import setting_differences

    assert setting_differences({"epochs": 200}, {"epochs": 200, "m2m_beta": 0.999}) == []
    assert setting_differences({"epochs": 200}, {"epochs": 200, "m2m_beta": 0.9}) == ["m2m_beta"]
    # a key that is no TrainConfig field has no default to stand in for it
    assert setting_differences({"epochs": 100}, {"epochs": 200, "m2m_beta": 0.999, "unknown": 1}) == [
        "epochs", "unknown"]
    # a field added with a default that computes otherwise stands for its former value: the CPU cell
    # trained before the authors' bias-free head is of another setting than the windows after it
    assert setting_differences({"epochs": 200}, {"epochs": 200, "head_bias": False, "head_init": "pytorch"}) == [
        "head_bias", "head_init"]
    assert setting_differences({"epochs": 200}, {"epochs": 200, "head_bias": True, "head_init": "kaiming_normal"}) == []


def test_graphs_check_compares_every_step_of_whole_compiled_runs(tmp_path):
    """The compiled-step check on the CPU (Inductor without CUDA graphs): the lockstep run covers the
    last, partial batch of each epoch, each compiled update is as close to the float64 one as the
    eager update is, and the result reports both executors' speed."""
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("torch.compile's CPU backend needs a C compiler")
    from bench import graphs_check

    out = tmp_path / "graphs.jsonl"
    result, = graphs_check.main(["--device", "cpu", "--members", "2", "--epochs", "2", "--mode", "default",
                                 "--set", "dataset=digits", "model=small_cnn", "ratio=10", "--json", str(out)])
    assert result["passed"] and result["multiplier"] == 2.0 and result["slack"] == 1e-2 and not result["amp"]
    assert result["method"] == "mamix_drw" and result["variant"] == ""
    assert result["batch_sizes"] == [64, 38]  # the digits set's last batch of each epoch is partial
    assert set(result["first_call_s"]) == set(result["update_errors"]) == {"64", "38"}
    for by_group in result["update_errors"].values():
        for errors in by_group.values():  # the weights', then the BatchNorm statistics' updates
            # fp32 rounding is visible against float64, and compiled kernels round no worse than eager ones
            assert 0 < errors["eager_error"] < 0.05 and errors["compiled_error"] <= 2 * errors["eager_error"] + 1e-2
    assert result["max_eval_abs_error"]["test_acc"] <= 0.01
    assert result["eager_img_per_s"] > 0 and result["compiled_img_per_s"] > 0
    assert json.loads(out.read_text()) == result


def _logits_off(pack):
    net = pack.net
    pack.forward = lambda x: net(x) * 1.1


def _statistics_frozen(pack):
    from core.fused import GroupedBatchNorm2d

    for module in pack.net.modules():
        if isinstance(module, GroupedBatchNorm2d):
            module.momentum = 0.0  # trains on batch statistics as before, never updates the running ones
    pack.forward = pack.net  # eager: the plant needs no compiler


@pytest.mark.parametrize("plant,failing", [(_logits_off, "weights"), (_statistics_frozen, "statistics")])
def test_graphs_check_fails_a_compiled_step_that_computes_something_else(monkeypatch, plant, failing):
    """The check can fail: a 'compiled' network whose logits are off by 10 % moves the weights away from
    the float64 update, one that leaves BatchNorm's running statistics alone (which the evaluation
    reads) fails on the statistics while its weights pass."""
    from bench import graphs_check

    made = graphs_check.packs

    def planted(*args):
        eager, compiled, reference = made(*args)
        plant(compiled)
        return eager, compiled, reference

    monkeypatch.setattr(graphs_check, "packs", planted)
    result, = graphs_check.main(["--device", "cpu", "--members", "2", "--epochs", "1", "--mode", "default",
                                 "--set", "dataset=digits", "model=small_cnn", "ratio=10"])
    errors = result["update_errors"]["64"]
    assert not result["passed"] and errors[failing]["worst_ratio"] > 2
    if failing == "statistics":
        assert errors["weights"]["worst_ratio"] <= 2


def test_graphs_check_runs_each_variant_with_the_stages_its_method_needs(monkeypatch, tmp_path):
    """``--variants``: each setting is checked in turn with its own method's step, M2m's and DeepSMOTE's
    stages trained first; a setting that fails leaves a line with its error and the others still run.
    (TorchDynamo's eager backend stands in for Inductor: what is tested is the flow, which Inductor's
    CPU compile would make minutes long; the compiled step itself is tested above.)"""
    from bench import graphs_check

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda net, mode=None, dynamic=None: compile_(net, backend="eager",
                                                                                         dynamic=dynamic))
    out = tmp_path / "graphs.jsonl"
    results = graphs_check.main(["--device", "cpu", "--members", "2", "--epochs", "2", "--mode", "default",
                                 "--set", "dataset=digits", "model=small_cnn", "ratio=10", "m2m_steps=1",
                                 "--variants", "method=ldam_drw", "method=m2m", "method=deepsmote,deepsmote_epochs=1",
                                 "clean_forward=true", "method=no_such_method", "--json", str(out)])
    assert [json.loads(line) for line in out.read_text().splitlines()] == results
    checked, failed = results[:4], results[4]
    assert [(r["variant"], r["method"], r["clean_forward"]) for r in checked] == [
        ("method=ldam_drw", "ldam_drw", False), ("method=m2m", "m2m", False),
        ("method=deepsmote,deepsmote_epochs=1", "deepsmote", False), ("clean_forward=true", "mamix_drw", True)]
    assert all(r["passed"] and r["compiled_img_per_s"] > 0 for r in checked)
    # each setting's network was compiled afresh, a graph a batch size at least (with TorchDynamo's caches
    # shared, a later setting past its recompile limit would run eagerly, and pass unchecked)
    assert all(r["graphs_compiled"] >= len(r["batch_sizes"]) for r in checked)
    # DeepSMOTE's balanced set from the switch epoch (the last) has a last batch of its own
    assert [r["batch_sizes"] for r in checked] == [[64, 38], [64, 38], [64, 48, 38], [64, 38]]
    assert failed["variant"] == "method=no_such_method" and not failed["passed"] and "method" in failed["error"]
    # bench/fused_tables.py tables them under one heading (the failed line carries its device too), the
    # failed setting with its error
    from bench.fused_tables import tables

    page = tables(results)
    assert page.count("CUDA graphs against eager") == 1 and failed["device"] == checked[0]["device"]
    rows = [row_cells(line) for line in page.splitlines() if line.startswith("| ")]
    assert [r[0] for r in rows if r[0]][1:] == [
        "method=ldam_drw: small_cnn, digits, 2 member(s), 2 epoch(s), default, fp32",
        "method=m2m: small_cnn, digits, 2 member(s), 2 epoch(s), default, fp32",
        "method=deepsmote,deepsmote_epochs=1: small_cnn, digits, 2 member(s), 2 epoch(s), default, fp32",
        "clean_forward=true: small_cnn, digits, 2 member(s), 2 epoch(s), default, fp32", "method=no_such_method"]
    assert [r[-1] for r in rows if r[0]][1:-1] == ["yes"] * 4 and rows[-1][-1].startswith("no: ")


# Imported by every Python the session script starts (sitecustomize, from PYTHONPATH): the packages the
# GPU machine's image lacks (docs/PERFORMANCE.md) cannot be imported, as there.
GPU_IMAGE_LACKS = """
import sys


class Lacking:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {"ray", "mlflow", "optuna"}:
            raise ModuleNotFoundError(f"No module named {name!r} (not on the GPU machine's image)", name=name)


sys.meta_path.insert(0, Lacking())
"""


def test_gpu_session_script_runs_its_four_steps_and_leaves_what_the_device_tool_brings_back(tmp_path):
    """The one command of a GPU session, on the CPU with digits standing in for CIFAR-10: the Table 12
    window, the graphs check, fused throughput and the executors against vmap each write their files,
    8 in all, at most two folders down (what the device tool returns). As on the GPU machine's image, Ray, MLflow and Optuna
    cannot be imported."""
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("torch.compile's CPU backend needs a C compiler")
    data, out, image = tmp_path / "data", tmp_path / "out", tmp_path / "gpu_image"
    data.mkdir()
    image.mkdir()
    (image / "sitecustomize.py").write_text(GPU_IMAGE_LACKS)
    (data / "cifar10.npz").touch()  # only looked for: every step below trains on digits
    digits = "--set dataset=digits model=small_cnn ratio=10"
    env = {**os.environ, "DEVICE": "cpu", "PYTHON": sys.executable, "FUSED_MEMBERS": "1 2", "FUSED_STEPS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(image), os.environ.get("PYTHONPATH")])),
           "TABLE12_ARGS": f"--epochs 1 --seeds 1 --omegas 0.25 --probe-steps 1 --replays 2 --done {tmp_path / 'none'} "
                           f"{digits} batch_size=64",
           # the graphs check's test compiles the same 2-member network: Inductor's cache serves it here
           "GRAPHS_ARGS": f"--members 2 --epochs 1 --mode default {digits}",
           "FUSED_ARGS": "--dataset digits --model small_cnn --batch 32",
           "EXECUTORS_ARGS": "--model small_cnn --input 1 8 8 --members 2 --batch 16 --steps 1 --warmup 0"}
    done = subprocess.run(["bash", os.path.join(ROOT, "bench", "gpu_session.sh"), str(data), str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["fused.jsonl", "graphs.jsonl", "log.txt", "table12/final.json", "table12/members.jsonl",
                     "table12/replays.json", "table12/run.json", "table12/table12.md"]
    log = (out / "log.txt").read_text()
    assert "stopped" not in log and "== done in" in log and "torch" in log.split("== (1)")[0]  # the environment
    assert len(re.findall(r"^-- took \d+ s of \d+$", log, flags=re.MULTILINE)) == 4  # each step's seconds
    run = json.loads((out / "table12" / "run.json").read_text())
    assert run["members"] == 1 and run["replay_repeats"] == 2
    assert run["probes"][0]["compile_mode"] is None  # eager: TrainConfig's default on the CPU
    assert json.loads((out / "graphs.jsonl").read_text())["passed"]
    rows = [json.loads(line) for line in (out / "fused.jsonl").read_text().splitlines()]
    assert [(r["mode"], r["members"]) for r in rows if "mode" in r] == [("fused", 1), ("sequential", 1), ("fused", 2)]
    # the executors in fp32 and under bf16 autocast, as on CUDA (vmap's backward refuses CPU autocast: its error)
    ways = [r for r in rows if "way" in r]
    assert sorted((r["amp"], r["way"]) for r in ways) == [(a, w) for a in (False, True)
                                                          for w in ("grouped", "per_member", "vmap")]
    assert all(r["img_per_s"] > 0 for r in ways if not (r["amp"] and r["way"] == "vmap"))
    # and the log ends with them as tables, as docs/PERFORMANCE.md shows them
    tables = log.split("== (1)'s probes, (2), (3) and (4) as tables")[1]
    assert "CUDA graphs against eager (bench/graphs_check.py), " in tables
    assert "A whole Table 12 pack's step (bench/table12_fused.py's probes: img/s and seconds a step), " in tables
    assert "small_cnn on digits (mamix_drw), batch 32, fp32, 1 timed steps after 5:" in tables
    assert "Executors (one SGD step), " in tables and "|   2 | bf16        |" in tables and "| error " in tables


def test_gpu_session_skips_a_step_given_no_time_and_stops_one_out_of_time(tmp_path):
    """0 s skips a step (a later session gives Table 12 the whole command); a step past its time is
    stopped and the next one still runs."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "cifar10.npz").touch()
    env = {**os.environ, "DEVICE": "cpu", "PYTHON": sys.executable, "TABLE12_S": "0", "GRAPHS_S": "1", "FUSED_S": "0",
           "EXECUTORS_S": "0"}
    done = subprocess.run(["bash", os.path.join(ROOT, "bench", "gpu_session.sh"), str(data), str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    log = (tmp_path / "out" / "log.txt").read_text()
    assert log.count("skipped (0 s)") == 3 and "graphs_check.py stopped (exit 124)" in log and "== done in" in log
    took = re.findall(r"^-- took (\d+) s of 1$", log, flags=re.MULTILINE)  # bash counts whole seconds
    assert len(took) == 1 and 1 <= int(took[0]) <= 10 and log.count("-- took") == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["log.txt"]


def test_the_tree_leaves_room_for_the_compact_cifar_file_on_the_gpu_machine():
    """The device tool takes at most 64 MiB to the GPU machine: the working tree and the 54.2 MiB compact
    CIFAR-10-LT-300 file that gpu_session.sh trains on. A tree that grows past the rest would stop
    every GPU session before it starts."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: " + listed.stderr.strip())
    tracked = sum(os.path.getsize(os.path.join(ROOT, p)) for p in listed.stdout.split("\0")
                  if p and os.path.isfile(os.path.join(ROOT, p)))
    assert tracked + 54.2 * 2**20 <= 62 * 2**20, f"tracked files take {tracked / 2**20:.1f} MiB"


def test_executors_and_vmap_train_the_same_members_alike():
    """bench/executors.py: the two executors and torch.vmap take the same first two steps (same weights,
    same batches) before their timings, which are then of the same computation."""
    from bench import executors

    rows = executors.main(["--model", "small_cnn", "--input", "1", "8", "8", "--members", "3", "--batch", "16",
                           "--steps", "1", "--warmup", "0"])
    assert [r["way"] for r in rows] == ["grouped", "per_member", "vmap"]
    assert all(r["img_per_s"] > 0 and max(r["loss_max_abs_diff"]) < 1e-5 for r in rows)


def test_linear_head_bench_crosses_both_options(tmp_path):
    from bench.linear_head import main

    table = main(["--out", str(tmp_path), "--methods", "erm", "--seeds", "1",
                  "--set", "epochs=1", "milestones=[]", "drw_epoch=1"])
    assert sorted(zip(table["head_bias"], table["head_init"])) == [
        (False, "kaiming_normal"), (False, "pytorch"), (True, "kaiming_normal"), (True, "pytorch")]
    runs = [json.loads(line) for line in open(tmp_path / "runs.jsonl")]
    assert len(runs) == 4 and len({r["test_acc"] for r in runs}) > 1, "the options must reach the training"
    assert "head_init" in (tmp_path / "heads.md").read_text()


def test_eval_precision_bench_evaluates_one_run_in_fp32_and_in_bf16(tmp_path):
    """bench/eval_precision.py: the fp32 line is the platform's own evaluation of the run's final
    weights; the bf16 line rounds the logits (here at least the margins move)."""
    from bench.eval_precision import main

    out = tmp_path / "precision.jsonl"
    rows = main(["--json", str(out), "--set", "epochs=2", "milestones=[]", "drw_epoch=1"])
    assert [r["precision"] for r in rows] == ["fp32", "bf16"]
    assert json.dumps([json.loads(line) for line in open(out)]) == json.dumps(rows)  # NaN != NaN: as text
    fp32, bf16 = rows
    assert fp32["margin_gap"] != bf16["margin_gap"] and fp32["max_logit_change"] > 0
    assert 0 <= fp32["predictions_differ"] <= 1 and 0 <= fp32["bf16_top2_tied"] <= 1
