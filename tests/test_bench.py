"""The benchmarks: both input pipelines augment alike, and throughput.py runs end to end."""

import json
import os
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import throughput  # noqa: E402
from core.augment import draw_crops  # noqa: E402
from core.data import DATASETS, DeviceData  # noqa: E402

DRAWS = 3000


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


def test_table12_gpu_script_plans_trains_and_writes_its_outputs(tmp_path):
    """The prepared GPU run, dry-run on digits: it probes, plans the seeds that fit its budget, trains them
    fused, and writes every member's evaluations, the final metrics and the table beside the paper's."""
    from bench import table12_fused

    run = table12_fused.main(["--out", str(tmp_path), "--device", "cpu", "--epochs", "2", "--seeds", "2",
                              "--omegas", "0.25", "4", "--probe-steps", "1", "--budget-s", "600", "--set",
                              "dataset=digits", "model=small_cnn", "ratio=10", "batch_size=64"])
    assert run["plan"]["seeds"] == 2 and run["members"] == 4 and run["failures"] == {}
    lines = [json.loads(line) for line in (tmp_path / "members.jsonl").read_text().splitlines()]
    evaluations = 2 // run["plan"]["eval_every"]
    assert len(lines) == 4 * evaluations and {(r["omega"], r["seed"]) for r in lines} == {
        (w, s) for w in (0.25, 4.0) for s in (0, 1)}
    assert all("margin_gap" in r and "test_acc" in r for r in lines)
    final = json.loads((tmp_path / "final.json").read_text())
    assert len(final) == 4 and all(r["epoch"] == 2 for r in final)
    table = (tmp_path / "table12.md").read_text()
    assert "74.85 ± 0.28" in table and "Paper (%)" in table  # omega 0.25's paper number beside ours


def test_table12_plan_keeps_the_most_seeds_that_fit():
    from types import SimpleNamespace

    from bench.table12_fused import plan

    args = SimpleNamespace(seeds=5, omegas=[1.0] * 7, epochs=10)
    probes = [{"members": 7, "step_s": 0.1, "eval_s": 1.0, "steps_per_epoch": 10},
              {"members": 35, "step_s": 0.3, "eval_s": 3.0, "steps_per_epoch": 10}]
    # 35 members: 10 epochs x 10 steps x 0.3 s = 30 s, + 10 evaluations x 3 s = 60 s
    assert plan(args, probes, 60) == {"seeds": 5, "members": 35, "eval_every": 1, "estimated_s": 60.0}
    # 30 s of steps fit, the evaluations only every 5 epochs (2 x 3 s)
    assert plan(args, probes, 40)["eval_every"] == 5 and plan(args, probes, 40)["seeds"] == 5
    # steps and evaluations linear in the pack between the probes: 3 seeds (21 members) take 100 steps x
    # 0.2 s + 2 evaluations x 2 s = 24 s when evaluating every 5 epochs; 4 seeds no longer fit 25 s
    assert plan(args, probes, 25) == {"seeds": 3, "members": 21, "eval_every": 5, "estimated_s": 24.0}
