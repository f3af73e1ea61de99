"""Training throughput (images/s) of one method's SGD step, through one of two input pipelines.

``--pipeline device`` (default) is the project's own path, the one ``core.train.train`` runs (a pack
of one member): the imbalanced uint8 training set on the device (``prepare_data``), the epoch's
draws (``draw_epoch``), augmentation as batched tensor ops and mixing (``make_batch``), and the SGD
step with the autocast / channels-last rules (``core.train.train_step``).

``--pipeline loader`` feeds the same model / mixing / loss / SGD step from a classic torchvision
pipeline: a ``Dataset`` over the same imbalanced uint8 subset returning PIL images, with
RandomCrop(padding) + RandomHorizontalFlip + ToTensor + Normalize, and a ``DataLoader``
(shuffle, drop_last, persistent workers); each loaded batch is moved to the device and then mixed
with ``core.mixing.mix_batch`` (a partner permutation and lam_x drawn per batch).

Timing covers the ``--steps`` timed steps after ``--warmup`` untimed ones, batch production
included, with the device synchronised at both ends. One JSON line is printed and, with ``--json``,
appended to that file (so several runs collect into one JSONL file).

    python bench/throughput.py --method mamix_drw --dataset cifar10 --data-root /tmp/c10 --steps 20 \\
        --warmup 3 --device cpu --json /tmp/bench.jsonl [--pipeline loader --workers 2]
    python bench/throughput.py --dataset digits --steps 5 --warmup 1 --device cpu   # smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterator

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.summarise import emit  # noqa: E402
from core.config import COMPILE_MODES, TrainConfig  # noqa: E402
from core.data import DATASETS, DatasetSpec  # noqa: E402
from core.mixing import MixedBatch, mix_batch, sample_beta  # noqa: E402
from core.train import (Pack, batch_bounds, draw_epoch, epoch_weights, make_batch,  # noqa: E402
                        set_learning_rate, set_up, train_step)

PIPELINES = ("device", "loader")


# ----------------------------------------------------------------------------- set-up (as core.train.train)

@dataclass
class Setup:
    pack: Pack  # one member, as ``core.train.train`` trains it
    weights: torch.Tensor  # the class weights (1, C) of the timed epoch

    @property
    def device(self) -> torch.device:
        return self.pack.device


RATIO_HELP = ("imbalance ratio (default: the dataset's, 100 for CIFAR-10); the compact file of to_npz.py "
              "--long-tailed 300 needs 300")


def make_config(dataset: str, method: str, data_root: str | None, device: str, batch: int,
                **overrides: Any) -> TrainConfig:
    """The run's TrainConfig: the dataset's paper defaults (ResNet-32 and ratio 100 for CIFAR-10)."""
    if dataset != "digits" and data_root is None:
        raise SystemExit(f"{dataset} needs --data-root DIR holding {dataset}.npz (for CIFAR-10: "
                         f"python /work/shared/data/cifar10/to_npz.py DIR/cifar10.npz); "
                         f"--dataset digits runs a smoke test without data")
    root = os.path.abspath(data_root) if data_root else None
    return TrainConfig(dataset=dataset, method=method, data_root=root, device=device, batch_size=batch,
                       **{k: v for k, v in overrides.items() if v is not None})


def build(cfg: TrainConfig, epoch: int | None = None) -> Setup:
    """Data, model, optimiser, batch maker and loss exactly as ``core.train.train`` sets them up
    (``core.train.set_up``), at ``epoch`` of the schedule (default: the DRW epoch, so *_drw methods
    use their class weights)."""
    pack = set_up([cfg])
    epoch = cfg.drw_epoch if epoch is None else epoch
    set_learning_rate(pack, epoch)
    return Setup(pack, epoch_weights(pack, epoch))


# ----------------------------------------------------------------------------- the two pipelines

def device_batches(pack: Pack, batch: int) -> Iterator[MixedBatch]:
    """The project's pipeline: each epoch's draws, then its full batches augmented and mixed on the
    device by ``make_batch``, as ``train_epoch`` makes them."""
    n = pack.index.shape[1]
    if n < batch:
        raise ValueError(f"batch: {batch} is larger than the training set ({n} images)")
    while True:
        draws = draw_epoch(pack)
        for step, (start, end) in enumerate(batch_bounds(n, batch)):
            if end - start == batch:
                yield make_batch(pack, draws, step, start, end)


def loader_transform(spec: DatasetSpec, size: int):
    """torchvision's classic CIFAR augmentation for ``spec``: RandomCrop(size, padding) on the PIL
    image (zero fill), RandomHorizontalFlip, ToTensor, Normalize(mean, std)."""
    from torchvision import transforms

    steps = []
    if spec.pad > 0:
        steps.append(transforms.RandomCrop(size, padding=spec.pad))
    if spec.flip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)]
    return transforms.Compose(steps)


class ImageDataset(torch.utils.data.Dataset):
    """uint8 images (N, H, W, C) returned as transformed PIL images, with their label and index."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        img = self.images[i]
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        return self.transform(pil), int(self.labels[i]), i


def loader_dataset(s: Setup) -> ImageDataset:
    """The same imbalanced uint8 training set that the device pipeline holds, on the host, NHWC."""
    data, idx = s.pack.data, s.pack.index[0]
    images = data.x_train[idx].permute(0, 2, 3, 1).contiguous().cpu().numpy()
    return ImageDataset(images, data.y_train[idx].cpu().numpy(), loader_transform(data.spec, images.shape[1]))


def loader_batches(s: Setup, batch: int, workers: int) -> Iterator[MixedBatch]:
    """The classic pipeline: DataLoader(shuffle, drop_last, persistent workers) on the host, the batch
    moved to the device, then the method's mixing with a partner permutation and lam_x per batch."""
    pack = s.pack
    if pack.method.pairing not in ("none", "batch"):
        raise ValueError(f"pipeline: loader supports methods that mix within the batch; {pack.cfg.method} pairs "
                         f"with nearest neighbours, which live on the device")
    pin = s.device.type == "cuda"
    loader = torch.utils.data.DataLoader(loader_dataset(s), batch_size=batch, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=workers > 0, pin_memory=pin)
    if len(loader) == 0:
        raise ValueError(f"batch: {batch} is larger than the training set ({len(loader.dataset)} images)")
    gen = pack.generators[0]
    while True:
        for x, y, _ in loader:
            x = x.to(s.device, non_blocking=pin)[None]
            y = y.to(s.device, non_blocking=pin)[None]
            if not pack.method.mixes:
                ones = torch.ones_like(y, dtype=torch.float32)
                yield MixedBatch(x, y, y, ones, ones[:, 0])
                continue
            perm = torch.randperm(batch, generator=gen, device=s.device)
            lam_x = sample_beta(pack.cfg.alpha, 1, gen, s.device)
            yield mix_batch(x, y, x[:, perm], y[:, perm], lam_x, counts=pack.counts, rules=pack.rules,
                            omega=pack.omega, tau=pack.tau, kappa=pack.kappa)


# ----------------------------------------------------------------------------- timing

def _proc_cpu_ticks(stat_line: str) -> int:
    fields = stat_line.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid ... utime stime
    return int(fields[11]) + int(fields[12])


def cpu_accounting() -> tuple[float, float] | None:
    """(CPU seconds used by the whole machine, CPU seconds used by this process and its children that
    are alive, e.g. DataLoader workers), from /proc; None where /proc is not Linux's."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        machine = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)  # all but idle and iowait
        me = os.getpid()
        with open("/proc/self/stat") as f:
            ours = _proc_cpu_ticks(f.read())
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != me:
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        line = f.read()
                except OSError:
                    continue
                if int(line.rsplit(")", 1)[1].split()[1]) == me:
                    ours += _proc_cpu_ticks(line)
        return machine / tick, ours / tick
    except (OSError, ValueError, IndexError):
        return None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(s: Setup, batches: Iterator[MixedBatch], steps: int, warmup: int
            ) -> tuple[float, torch.Tensor, float | None]:
    """Seconds for ``steps`` steps after ``warmup`` untimed ones, the last loss, and the CPU cores
    that other processes kept busy on average meanwhile (None where it cannot be told)."""
    loss = torch.zeros(())
    for _ in range(warmup):
        loss = train_step(s.pack, next(batches), s.weights)
    synchronize(s.device)
    before = cpu_accounting()
    start = time.perf_counter()
    for _ in range(steps):
        loss = train_step(s.pack, next(batches), s.weights)
    synchronize(s.device)
    seconds = time.perf_counter() - start
    after = cpu_accounting()
    other = None
    if before and after:
        other = max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / seconds)
    return seconds, loss, other


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def run(method: str = "mamix_drw", dataset: str = "cifar10", data_root: str | None = None, steps: int = 20,
        warmup: int = 3, device: str = "cpu", pipeline: str = "device", batch: int = 128, workers: int = 2,
        epoch: int | None = None, seed: int = 0, amp: bool | None = None, channels_last: bool | None = None,
        compile: str | None = None, ratio: float | None = None) -> dict[str, Any]:
    """Build, time, and return the result row (see the module docstring)."""
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline: got {pipeline!r}; allowed: {list(PIPELINES)}")
    if steps < 1 or warmup < 0:
        raise ValueError("steps: need steps >= 1 and warmup >= 0")
    cfg = make_config(dataset, method, data_root, device, batch, seed=seed, amp=amp, channels_last=channels_last,
                      compile=compile is not None, compile_mode=compile, ratio=ratio)
    torch.manual_seed(seed)  # the DataLoader's shuffling and worker seeds
    load_before = os.getloadavg()[0]
    s = build(cfg, epoch)
    batches = device_batches(s.pack, batch) if pipeline == "device" else loader_batches(s, batch, workers)
    seconds, loss, other_cores = measure(s, batches, steps, warmup)
    batches.close()  # shuts the loader's workers down
    if not math.isfinite(loss.item()):
        raise RuntimeError(f"loss is {loss.item()} after {warmup + steps} steps")
    return {"impl": pipeline, "method": method, "img_per_s": round(steps * batch / seconds, 2), "steps": steps,
            "batch": batch, "device": s.device.type, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "dataset": dataset, "model": cfg.model, "n_train": s.pack.index.shape[1], "warmup": warmup,
            "seconds": round(seconds, 4), "workers": workers if pipeline == "loader" else None, "amp": s.pack.amp,
            "channels_last": s.pack.net.channels_last, "compile": cfg.compile_mode if cfg.compile else False,
            "device_name": device_name(s.device),
            "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "other_cores_busy": None if other_cores is None else round(other_cores, 3)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="mamix_drw")
    p.add_argument("--dataset", default="cifar10", choices=sorted(DATASETS))
    p.add_argument("--data-root", help="directory holding <dataset>.npz (not needed for digits)")
    p.add_argument("--ratio", type=float, help=RATIO_HELP)
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--pipeline", choices=PIPELINES, default="device")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (--pipeline loader)")
    p.add_argument("--epoch", type=int, help="schedule epoch for lr and class weights (default: the DRW epoch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="default: on for cuda")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="default: on for cuda")
    p.add_argument("--compile", nargs="?", const="default", choices=COMPILE_MODES, metavar="MODE",
                   help="torch.compile the model, in MODE (default: default; use a larger --warmup)")
    p.add_argument("--json", help="append the result line to this JSONL file")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    row = run(method=args.method, dataset=args.dataset, data_root=args.data_root, steps=args.steps,
              warmup=args.warmup, device=args.device, pipeline=args.pipeline, batch=args.batch,
              workers=args.workers, epoch=args.epoch, seed=args.seed, amp=args.amp,
              channels_last=args.channels_last, compile=args.compile, ratio=args.ratio)
    emit(row, args.json)
    return row


if __name__ == "__main__":
    main()
