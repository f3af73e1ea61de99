"""Median table of ``bench/throughput.py`` JSON lines: images/s per (pipeline, method), time per
step, the step time of each method against ERM on the same pipeline, and the device / loader ratio.

    python bench/summarise.py /tmp/bench_cpu.jsonl [more.jsonl ...] [--dataset cifar10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections import defaultdict
from typing import Any


def emit(row: dict[str, Any], path: str | None) -> None:
    """Print one result as a JSON line and append it to ``path`` (a JSONL file) when given."""
    line = json.dumps(row)
    print(line, flush=True)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a") as f:
            f.write(line + "\n")


def read(paths: list[str]) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def disturbed(row: dict[str, Any], max_other: float | None) -> bool:
    other = row.get("other_cores_busy")
    return max_other is not None and other is not None and other > max_other


def summarise(rows: list[dict[str, Any]], max_other: float | None = None) -> str:
    """A Markdown table (one row per device, pipeline and method) and the derived ratios, over the
    runs during which other processes kept at most ``max_other`` CPU cores busy (all with None)."""
    kept = [r for r in rows if not disturbed(r, max_other)]
    dropped = len(rows) - len(kept)
    rows = kept
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["device"], r["impl"], r["method"])].append(r)
    median = {k: statistics.median(r["img_per_s"] for r in v) for k, v in groups.items()}
    out = ["| device | pipeline | method | runs | img/s per run | median img/s | ms/step (median) | step vs ERM |",
           "|---|---|---|---|---|---|---|---|"]
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2] != "erm", k[2])):
        device, impl, method = key
        batch = groups[key][0]["batch"]
        erm = median.get((device, impl, "erm"))
        vs = f"{100 * (erm / median[key] - 1):+.1f} %" if erm else "n/a"
        runs = ", ".join(f"{r['img_per_s']:.1f}" for r in groups[key])
        out.append(f"| {device} | {impl} | {method} | {len(groups[key])} | {runs} | {median[key]:.1f} | "
                   f"{1e3 * batch / median[key]:.0f} | {vs} |")
    out.append("")
    if max_other is not None:
        out.append(f"{dropped} run(s) left out: other processes kept more than {max_other:g} CPU cores busy "
                   f"during their timed steps")
    out.append("step vs ERM = (median ms/step of the method) / (median ms/step of ERM, same pipeline) - 1")
    for (device, impl, method), value in sorted(median.items()):
        if impl == "device" and (device, "loader", method) in median:
            ratio = value / median[(device, "loader", method)]
            out.append(f"{device} {method}: device pipeline / loader pipeline = {ratio:.2f}x images/s")
    meta = sorted({(r.get("device_name", "?"), r["torch"], r["threads"], r["dataset"], r.get("model", "?"),
                    r.get("n_train", "?"), r["steps"], r["warmup"]) for r in rows})
    for name, torch_version, threads, dataset, model, n_train, steps, warmup in meta:
        out.append(f"runs on: {name}, torch {torch_version}, {threads} threads, {dataset} ({n_train} training "
                   f"images), {model}, {steps} timed steps after {warmup} warm-up steps")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("jsonl", nargs="+")
    p.add_argument("--dataset", help="keep only runs on this dataset")
    p.add_argument("--max-other", type=float, help="leave out runs during which other processes kept more CPU "
                                                    "cores busy than this (other_cores_busy)")
    args = p.parse_args(argv)
    rows = [r for r in read(args.jsonl) if args.dataset in (None, r["dataset"])]
    text = summarise(rows, args.max_other)
    print(text)
    return text


if __name__ == "__main__":
    main()
