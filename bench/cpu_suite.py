"""The CPU measurements of docs/PERFORMANCE.md in one command: ``bench/throughput.py`` for the
device and loader pipelines (MAMix-DRW) and the device pipeline for Remix-DRW, Mixup-DRW and ERM, on
CIFAR-10-LT-100, each ``--reps`` times. Repetitions are interleaved (the order rotates each round),
each run waits until the CPUs are idle, and a run during which other processes kept more than
``--max-other`` CPU cores busy (``other_cores_busy`` in its JSON line) is rerun, up to ``--retries``
times; then the median table over the undisturbed runs (``bench/summarise.py``).

    python /work/shared/data/cifar10/to_npz.py /tmp/c10/cifar10.npz
    python bench/cpu_suite.py --data-root /tmp/c10 --json /tmp/bench_cpu.jsonl
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(HERE))

from bench.summarise import read, summarise  # noqa: E402

CONFIGS = [("device", "mamix_drw"), ("loader", "mamix_drw"), ("device", "remix_drw"), ("device", "mixup_drw"),
           ("device", "erm")]


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over ``seconds`` (from /proc/stat)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def wait_idle(threshold: float, max_wait: float) -> tuple[float, float]:
    """Wait until two successive 1-s samples show under ``threshold`` of the CPUs busy, at most
    ``max_wait`` seconds; returns (seconds waited, last busy fraction)."""
    start = time.time()
    quiet = 0
    busy = cpu_busy()
    while time.time() - start < max_wait:
        quiet = quiet + 1 if busy < threshold else 0
        if quiet >= 2:
            break
        busy = cpu_busy()
    return time.time() - start, busy


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", default="/tmp/bench_cpu.jsonl")
    p.add_argument("--idle-threshold", type=float, default=0.15, help="busy fraction of the CPUs counted as idle")
    p.add_argument("--max-wait", type=float, default=180.0, help="longest wait for idle CPUs before a run (s)")
    p.add_argument("--max-other", type=float, default=0.1,
                   help="a run during which other processes kept more CPU cores busy than this is disturbed")
    p.add_argument("--retries", type=int, default=3, help="reruns of a disturbed run")
    args = p.parse_args(argv)

    for rep in range(args.reps):
        order = CONFIGS[rep % len(CONFIGS):] + CONFIGS[:rep % len(CONFIGS)]
        for pipeline, method in order:
            cmd = [sys.executable, os.path.join(HERE, "throughput.py"), "--method", method, "--dataset", args.dataset,
                   "--data-root", args.data_root, "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--device", "cpu", "--pipeline", pipeline, "--workers", str(args.workers), "--json", args.json]
            for attempt in range(1 + args.retries):
                waited, busy = wait_idle(args.idle_threshold, args.max_wait)
                print(f"# round {rep + 1}, waited {waited:.0f} s for idle CPUs (busy {100 * busy:.0f} %)", flush=True)
                print("$ " + shlex.join(cmd), flush=True)
                subprocess.run(cmd, check=True)
                other = read([args.json])[-1].get("other_cores_busy")
                if other is None or other <= args.max_other:
                    break
                print(f"# disturbed: other processes kept {other:.2f} cores busy; again", flush=True)
    rows = [r for r in read([args.json]) if r["dataset"] == args.dataset and r["device"] == "cpu"]
    text = summarise(rows, args.max_other)
    print()
    print(text)
    return text


if __name__ == "__main__":
    main()
