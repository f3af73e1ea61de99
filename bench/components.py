"""Where a training step's time goes: the batch maker (augmentation + mixing) alone, per method,
against the whole step (batch maker + forward + loss + backward + SGD), on the project's pipeline.

Timing the batch maker alone is far less noisy than differencing two whole-step throughputs, so
this gives the mixing overhead over ERM per step as
``(batch_maker[method] - batch_maker[erm]) / step[erm]``. Methods are interleaved, round after
round, so drift of the machine's speed spreads over all of them; medians are reported.

    python bench/components.py --dataset cifar10 --data-root /tmp/c10 --rounds 5 --json /tmp/parts.jsonl
    python bench/components.py --dataset cifar10 --data-root /tmp/c10 --profile mamix_drw   # + torch.profiler table
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from bench.summarise import emit  # noqa: E402
from bench.throughput import (RATIO_HELP, Setup, build, cpu_accounting, device_batches, make_config,  # noqa: E402
                              synchronize)
from core.train import draw_epoch, make_batch, member_images, train_step  # noqa: E402

METHODS = ("erm", "drw", "mixup_drw", "remix_drw", "mamix_drw")


def time_parts(s: Setup, batch: int, reps: int) -> tuple[float, float]:
    """Median seconds of one batch-maker call (``make_batch``: the epoch's draws are made before) and
    of one whole step (batch maker included)."""
    draws = draw_epoch(s.pack)
    maker = []
    for _ in range(reps):
        synchronize(s.device)
        t = time.perf_counter()
        make_batch(s.pack, draws, 0, 0, batch)
        synchronize(s.device)
        maker.append(time.perf_counter() - t)
    batches = device_batches(s.pack, batch)
    step = []
    for _ in range(reps):
        synchronize(s.device)
        t = time.perf_counter()
        train_step(s.pack, next(batches), s.weights)
        synchronize(s.device)
        step.append(time.perf_counter() - t)
    return statistics.median(maker), statistics.median(step)


def count_ops(s: Setup, batch: int) -> tuple[int, int]:
    """ATen operators dispatched by one batch-maker call and by one whole step (batch maker included):
    on a GPU each is about one kernel launch, the cost that dominates a small model's step there."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += 1
            return func(*args, **(kwargs or {}))

    batches = device_batches(s.pack, batch)
    next(batches)
    with Counter() as maker:
        b = next(batches)
    with Counter() as step:
        train_step(s.pack, b, s.weights)
    return maker.n, maker.n + step.n


def same_weights_ab(s: Setup, batch: int, blocks: int, reps: int) -> list[tuple[float, float]]:
    """The whole step on one plain (unmixed) and one mixed batch of the same images, alternating, each
    time from the same model and optimiser state: whether the step costs more on mixed inputs, and how
    much two identical measurements differ on this machine. Returns (plain ms, mixed ms) medians per block."""
    import copy

    from core.mixing import MixedBatch

    draws = draw_epoch(s.pack)
    x, y = member_images(s.pack, draws.order[:, :batch], draws.offsets[:, :batch], draws.flips[:, :batch])
    plain = MixedBatch(x, y, y, torch.ones(y.shape, device=x.device), torch.ones(1, device=x.device))
    mixed = make_batch(s.pack, draws, 0, 0, batch)
    net, optimizer = s.pack.net, s.pack.optimizer
    model_state, opt_state = copy.deepcopy(net.state_dict()), copy.deepcopy(optimizer.state_dict())

    def one(b: MixedBatch) -> float:
        net.load_state_dict(model_state)
        optimizer.load_state_dict(opt_state)
        synchronize(s.device)
        t = time.perf_counter()
        train_step(s.pack, b, s.weights)
        synchronize(s.device)
        return time.perf_counter() - t

    one(plain), one(mixed)
    out = []
    for _ in range(blocks):
        a, b = [], []
        for _ in range(reps):
            a.append(one(plain))
            b.append(one(mixed))
        out.append((1e3 * statistics.median(a), 1e3 * statistics.median(b)))
    return out


def profile(s: Setup, batch: int, steps: int, rows: int) -> str:
    """torch.profiler's table (self CPU time) over ``steps`` whole steps."""
    from torch.profiler import ProfilerActivity, profile as torch_profile, record_function

    batches = device_batches(s.pack, batch)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if s.device.type == "cuda" else [])
    train_step(s.pack, next(batches), s.weights)
    with torch_profile(activities=activities) as prof:
        for _ in range(steps):
            with record_function("batch_maker"):
                b = next(batches)
            with record_function("sgd_step"):
                train_step(s.pack, b, s.weights)
        synchronize(s.device)
    key = "self_cuda_time_total" if s.device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def run(dataset: str, data_root: str | None, device: str, batch: int, methods: list[str], rounds: int,
        reps: int, ratio: float | None = None) -> list[dict[str, Any]]:
    setups = {m: build(make_config(dataset, m, data_root, device, batch, ratio=ratio)) for m in methods}
    for s in setups.values():  # warm-up
        time_parts(s, batch, 2)
    samples: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
    before, start = cpu_accounting(), time.perf_counter()
    for _ in range(rounds):
        for m in methods:
            samples[m].append(time_parts(setups[m], batch, reps))
    after, seconds = cpu_accounting(), time.perf_counter() - start
    other = None
    if before and after:
        other = round(max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / seconds), 3)
    rows = []
    for m in methods:
        maker = statistics.median(x[0] for x in samples[m])
        step = statistics.median(x[1] for x in samples[m])
        rows.append({"method": m, "batch_maker_ms": round(1e3 * maker, 3), "step_ms": round(1e3 * step, 2),
                     "batch": batch, "device": setups[m].device.type, "rounds": rounds, "reps": reps,
                     "torch": torch.__version__, "threads": torch.get_num_threads(), "other_cores_busy": other})
    if "erm" in samples:
        erm = next(r for r in rows if r["method"] == "erm")
        for r in rows:
            r["mixing_overhead_pct"] = round(100 * (r["batch_maker_ms"] - erm["batch_maker_ms"]) / erm["step_ms"], 2)
            r["step_vs_erm_pct"] = round(100 * (r["step_ms"] / erm["step_ms"] - 1), 2)
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--data-root")
    p.add_argument("--ratio", type=float, help=RATIO_HELP)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds over the methods")
    p.add_argument("--reps", type=int, default=3, help="timed calls per method and round")
    p.add_argument("--profile", metavar="METHOD", help="also print torch.profiler's table for METHOD")
    p.add_argument("--profile-steps", type=int, default=5)
    p.add_argument("--ab", metavar="METHOD", help="also time the step on a plain and a mixed batch of METHOD "
                                                   "from identical weights, alternating")
    p.add_argument("--ab-blocks", type=int, default=4)
    p.add_argument("--ab-reps", type=int, default=10)
    p.add_argument("--count-ops", action="store_true", help="also count the ATen operators per batch maker and step")
    p.add_argument("--json", help="append one JSON line per method to this file")
    args = p.parse_args(argv)
    rows = run(args.dataset, args.data_root, args.device, args.batch, args.methods, args.rounds, args.reps,
               args.ratio)
    print(f"{'method':<12} {'batch maker ms':>15} {'step ms':>9} {'mixing overhead %':>18} {'step vs erm %':>14}")
    for r in rows:
        print(f"{r['method']:<12} {r['batch_maker_ms']:>15.3f} {r['step_ms']:>9.2f} "
              f"{r.get('mixing_overhead_pct', float('nan')):>18.2f} {r.get('step_vs_erm_pct', float('nan')):>14.2f}")
    print(f"other processes kept {rows[0]['other_cores_busy']} CPU cores busy on average meanwhile")
    for r in rows:
        emit(r, args.json)
    if args.count_ops:
        print(f"\n{'method':<12} {'ops in batch maker':>19} {'ops per step':>13} {'extra ops vs erm':>17}")
        counts = {m: count_ops(build(make_config(args.dataset, m, args.data_root, args.device, args.batch, ratio=args.ratio)),
                               args.batch) for m in args.methods}
        base = counts.get("erm", (0, 0))
        for m, (maker, step) in counts.items():
            print(f"{m:<12} {maker:>19} {step:>13} {step - base[1]:>+17}")
    if args.ab:
        s = build(make_config(args.dataset, args.ab, args.data_root, args.device, args.batch, ratio=args.ratio))
        print(f"\nsame weights, plain vs mixed batch ({args.ab}), alternating, {args.ab_reps} pairs per block:")
        for i, (plain, mixed) in enumerate(same_weights_ab(s, args.batch, args.ab_blocks, args.ab_reps)):
            print(f"  block {i + 1}: plain {plain:.1f} ms, mixed {mixed:.1f} ms, mixed/plain {mixed / plain:.3f}")
    if args.profile:
        s = build(make_config(args.dataset, args.profile, args.data_root, args.device, args.batch,
                                  ratio=args.ratio))
        print(profile(s, args.batch, args.profile_steps, 25))
    return rows


if __name__ == "__main__":
    main()
