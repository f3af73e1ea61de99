"""Aggregate training throughput (images/s) of K members: fused into one pack, one after another, or
(on CUDA) as K processes sharing the GPU.

* ``fused``: one pack of K members (``core.train.set_up``), each SGD step one forward/backward for all.
* ``sequential``: K one-member packs stepped in turn, round-robin, in this process: the same work as
  training the K configurations one after another.
* ``processes``: K processes, each training a one-member pack at once on the same device (what
  fractional GPUs in Ray do); the aggregate is K x steps x batch over the span from the first timed
  step's start to the last one's end. Each process sets up and warms up, then waits until all are ready,
  so that the timed steps overlap rather than follow each other's start-up.

Members are Table 12's cells: omega cycling through its grid, seeds 0, 1, ... Timing covers ``--steps``
steps after ``--warmup`` untimed ones, the epochs' draws included, with the device synchronised at both
ends. One JSON line per measurement is printed and appended to ``--json``.

    python bench/fused_throughput.py --device cpu --dataset cifar10 --data-root /tmp/c10 --model resnet32 \\
        --method mamix_drw --members 1 2 4 --steps 5 --warmup 2 --json /tmp/fused.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any, Callable, Iterator

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from bench.summarise import emit  # noqa: E402
from bench.throughput import device_batches, device_name, make_config, synchronize  # noqa: E402
from core.config import COMPILE_MODES, FUSE_EXECUTORS, TrainConfig  # noqa: E402
from core.data import DATASETS  # noqa: E402
from core.train import (Pack, epoch_weights, set_learning_rate,  # noqa: E402
                        set_up, train_step)
from search_spaces import OMEGA_GRID  # noqa: E402

MODES = ("fused", "sequential", "processes")
READY = "READY"  # a --worker's line once its pack is set up and warm


def member_configs(args: argparse.Namespace, members: int) -> list[TrainConfig]:
    overrides = dict(model=args.model, amp=args.amp, channels_last=args.channels_last, fuse_executor=args.executor,
                     compile=args.compile is not None, compile_mode=args.compile, ratio=args.ratio)
    return [make_config(args.dataset, args.method, args.data_root, args.device, args.batch, seed=m // len(OMEGA_GRID),
                        omega=OMEGA_GRID[m % len(OMEGA_GRID)], **overrides) for m in range(members)]


def ready(cfgs: list[TrainConfig]) -> Pack:
    """A pack at its DRW epoch's learning rate (the *_drw methods then use their class weights)."""
    pack = set_up(cfgs)
    set_learning_rate(pack, pack.cfg.drw_epoch)
    return pack


def steps(pack: Pack) -> Iterator[None]:
    """One full-batch SGD step per ``next``, epochs drawn as they come (as ``train_epoch`` steps)."""
    weights = epoch_weights(pack, pack.cfg.drw_epoch)
    for batch in device_batches(pack, pack.cfg.batch_size):
        train_step(pack, batch, weights)
        yield


def timed(runs: list[Iterator[None]], device: torch.device, count: int, warmup: int,
          clock: Callable[[], float] = time.perf_counter) -> tuple[float, float, float]:
    """Start, end (``clock``; time.time where several processes' spans are compared) and seconds of
    ``count`` round-robin steps of every run, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        for run in runs:
            next(run)
    synchronize(device)
    start = clock()
    for _ in range(count):
        for run in runs:
            next(run)
    synchronize(device)
    end = clock()
    return start, end, end - start


def measure_in_process(args: argparse.Namespace, mode: str, members: int) -> dict[str, Any]:
    cfgs = member_configs(args, members)
    packs = [ready(cfgs)] if mode == "fused" else [ready([c]) for c in cfgs]
    _, _, seconds = timed([steps(p) for p in packs], packs[0].device, args.steps, args.warmup)
    return row(args, mode, members, seconds, packs[0])


def measure_processes(args: argparse.Namespace, argv: list[str], members: int) -> dict[str, Any]:
    """K copies of this script in --worker mode; each sets up and warms up its one-member pack, says
    READY, and times its steps once every copy has said it (a line on its stdin)."""
    command = [sys.executable, os.path.abspath(__file__), *argv]
    procs = [subprocess.Popen([*command, "--worker", str(m)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) for m in range(members)]
    for proc in procs:
        if not any(line.strip() == READY for line in proc.stdout):  # EOF before READY: it failed
            for other in procs:  # the others would wait for a go that never comes
                other.kill()
            raise RuntimeError(f"worker exited with {proc.wait()} before it was ready")
    go = time.time()
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.close()
    spans = []
    for proc in procs:
        out = proc.stdout.read()  # through the same buffer that read READY
        if proc.wait():
            raise RuntimeError(f"worker exited with {proc.returncode}")
        spans.append(json.loads(out.strip().splitlines()[-1]))
    seconds = max(s["end"] for s in spans) - min(s["start"] for s in spans)
    result = row(args, "processes", members, seconds, None)
    result["per_process_img_per_s"] = [s["img_per_s"] for s in spans]
    result["start_after_go_s"] = [round(s["start"] - go, 4) for s in spans]
    return result


def worker(args: argparse.Namespace, member: int) -> None:
    pack = ready([member_configs(args, member + 1)[member]])
    run = steps(pack)
    timed([run], pack.device, 0, args.warmup)
    print(READY, flush=True)
    sys.stdin.readline()
    start, end, seconds = timed([run], pack.device, args.steps, 0, clock=time.time)
    print(json.dumps({"start": start, "end": end, "img_per_s": args.steps * args.batch / seconds}), flush=True)


def row(args: argparse.Namespace, mode: str, members: int, seconds: float, pack: Pack | None) -> dict[str, Any]:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    return {"mode": mode, "members": members, "img_per_s": round(members * args.steps * args.batch / seconds, 2),
            "model": args.model, "device": device.type, "device_name": device_name(device), "method": args.method,
            "dataset": args.dataset, "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
            "seconds": round(seconds, 4), "executor": pack.net.executor if pack and mode == "fused" else None,
            "amp": pack.amp if pack else args.amp, "compile": args.compile or False, "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dataset", default="cifar10", choices=sorted(DATASETS))
    p.add_argument("--data-root", help="directory holding <dataset>.npz (not needed for digits)")
    p.add_argument("--model", default="resnet32")
    p.add_argument("--method", default="mamix_drw")
    p.add_argument("--members", type=int, nargs="+", default=[1, 2, 4, 8, 16, 35])
    p.add_argument("--modes", nargs="+", choices=MODES, default=["fused", "sequential"])
    p.add_argument("--sequential-up-to", type=int, metavar="K",
                   help="measure the sequential and processes modes only up to K members")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--ratio", type=float, help="imbalance ratio (default: the dataset's)")
    p.add_argument("--executor", choices=FUSE_EXECUTORS, default="auto")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="default: on for cuda")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None, help="default: on for cuda")
    p.add_argument("--compile", nargs="?", const="default", choices=COMPILE_MODES, metavar="MODE")
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    p.add_argument("--json", help="append one line per measurement to this JSONL file")
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker is not None:
        worker(args, args.worker)
        return []
    rows = []
    for members in args.members:
        for mode in args.modes:
            if mode == "processes" and not args.device.startswith("cuda"):
                continue  # processes share a GPU's launch queue; on a CPU they would only share its cores
            if mode != "fused" and args.sequential_up_to is not None and members > args.sequential_up_to:
                continue  # K members one after another run at one member's rate: larger K adds only time
            result = (measure_processes(args, argv, members) if mode == "processes"
                      else measure_in_process(args, mode, members))
            rows.append(result)
            emit(result, args.json)
    return rows


if __name__ == "__main__":
    main()
