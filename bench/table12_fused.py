"""Table 12 on real data in one GPU window: the paper preset trained as fused packs, without Ray.

The paper preset of ``sweeps/omega_sensitivity.py`` (MAMix-DRW, ResNet-32, CIFAR-10 long-tailed at
ratio 300, 200 epochs, omega in {0.125, ..., 8} x 5 seeds) needs only torch, numpy, scikit-learn and
pandas here, which the bare GPU machines have (no Ray, MLflow or Optuna). Before training, it times a
few steps and an evaluation of a pack of every member and of one seed's members, estimates each
choice's duration (steps linear in the pack size between the two probes), and trains the most seeds,
then the most frequent evaluation, that fit ``--budget-s``: all members of a pack finish together,
so a pack too large for the window would leave nothing.

Written to ``--out``: ``members.jsonl`` (one line per member and evaluation: its omega, seed, epoch,
test accuracy, margin statistics), ``final.json`` (every member's last metrics), ``table12.md`` (the
reproduced table beside the paper's numbers) and ``run.json`` (device, plan, probes, wall time).

    python bench/table12_fused.py --data-root DIR --out OUT                  # DIR/cifar10.npz, on CUDA
    python bench/table12_fused.py --data-root DIR --out OUT --device cpu --epochs 1 --seeds 2 \\
        --omegas 0.25 4 --probe-steps 2                                      # CPU dry run of the flow
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pandas as pd  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from bench.fused_throughput import ready, steps, timed  # noqa: E402
from bench.throughput import device_name, synchronize  # noqa: E402
from core.config import TrainConfig  # noqa: E402
from core.reporting import summarise  # noqa: E402
from core.train import batch_bounds, evaluate, train_pack  # noqa: E402
from search_spaces import OMEGA_GRID  # noqa: E402
from sweeps.paper_tables import TABLE12, TABLE12_SETTING  # noqa: E402

EVAL_EVERY_CHOICES = (1, 2, 5, 10, 20)


def member_configs(args: argparse.Namespace, seeds: int, eval_every: int) -> list[TrainConfig]:
    base = {**TABLE12_SETTING, **args.set, "device": args.device, "eval_every": eval_every}
    if args.data_root:
        base["data_root"] = os.path.abspath(args.data_root)
    if args.epochs is not None:
        base.update(epochs=args.epochs, milestones=[m for m in base["milestones"] if m < args.epochs],
                    drw_epoch=min(base["drw_epoch"], args.epochs - 1), warmup_epochs=min(5, args.epochs))
    if args.compile:
        base.update(compile=True, compile_mode=args.compile)
    return [TrainConfig.from_dict({**base, "omega": omega, "seed": seed}) for seed in range(seeds)
            for omega in args.omegas]


def probe(cfgs: list[TrainConfig], count: int) -> dict[str, float]:
    """Seconds per training step (after two warm-up steps) and per evaluation of a pack of ``cfgs``."""
    pack = ready(cfgs)
    *_, seconds = timed([steps(pack)], pack.device, count, warmup=2)
    t = time.perf_counter()
    evaluate(pack, list(range(pack.size)))
    synchronize(pack.device)
    return {"members": len(cfgs), "step_s": seconds / count, "eval_s": time.perf_counter() - t,
            "steps_per_epoch": len(batch_bounds(pack.index.shape[1], pack.cfg.batch_size))}


def plan(args: argparse.Namespace, probes: list[dict[str, float]], budget: float) -> dict[str, Any]:
    """The most seeds, then the most frequent evaluation, whose estimated duration fits ``budget``."""
    small, large = probes[0], probes[-1]
    epochs = args.epochs or TABLE12_SETTING["epochs"]

    def per_member(p: str) -> float:  # linear in the pack size between the two probes
        span = large["members"] - small["members"]
        return (large[p] - small[p]) / span if span else 0.0

    for seeds in range(args.seeds, 0, -1):
        members = seeds * len(args.omegas)
        step = small["step_s"] + per_member("step_s") * (members - small["members"])
        evaluation = small["eval_s"] + per_member("eval_s") * (members - small["members"])
        for every in EVAL_EVERY_CHOICES:
            estimate = epochs * step * small["steps_per_epoch"] + math.ceil(epochs / every) * evaluation
            if estimate <= budget:
                return {"seeds": seeds, "members": members, "eval_every": every, "estimated_s": round(estimate, 1)}
    return {"seeds": 1, "members": len(args.omegas), "eval_every": EVAL_EVERY_CHOICES[-1], "estimated_s": None}


def table(final: list[dict[str, Any]]) -> str:
    """The reproduced Table 12 (final-epoch accuracy, mean +- std over seeds, in %) beside the paper's."""
    trials = pd.DataFrame(final)
    trials["test_acc"] *= 100
    summary = summarise(trials, ["omega"], {"test_acc": "Reproduced (%)", "margin_gap": "Margin gap"})
    summary["Paper (%)"] = [f"{TABLE12[w][0]:.2f} ± {TABLE12[w][1]:.2f}" if w in TABLE12 else "-"
                            for w in summary["omega"]]
    return summary[["omega", "n", "Reproduced (%)", "Paper (%)", "Margin gap"]].to_markdown(index=False)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", help="directory holding cifar10.npz (the compact ratio-300 file)")
    p.add_argument("--out", required=True, help="folder for members.jsonl, final.json, table12.md, run.json")
    p.add_argument("--device", default="cuda")
    p.add_argument("--seeds", type=int, default=5, help="at most this many seeds (0..N-1)")
    p.add_argument("--omegas", type=float, nargs="+", default=OMEGA_GRID)
    p.add_argument("--epochs", type=int, help="shorter runs for a dry run (default: the paper's 200)")
    p.add_argument("--budget-s", type=float, default=420,
                   help="seconds the training may take (default: a 9-minute window less set-up and probes)")
    p.add_argument("--probe-steps", type=int, default=10)
    p.add_argument("--compile", help="torch.compile mode (e.g. reduce-overhead); default: eager")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="TrainConfig fields over the paper's setting (YAML values), e.g. for a dry run on digits")
    args = p.parse_args(argv)
    args.set = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    os.makedirs(args.out, exist_ok=True)
    started = time.time()

    probes = [probe(member_configs(args, 1, 1), args.probe_steps)]
    if args.seeds > 1:
        probes.append(probe(member_configs(args, args.seeds, 1), args.probe_steps))
    chosen = plan(args, probes, args.budget_s - (time.time() - started) / 2)
    print(json.dumps({"probes": probes, "plan": chosen}), flush=True)

    cfgs = member_configs(args, chosen["seeds"], chosen["eval_every"])
    log_path = os.path.join(args.out, "members.jsonl")
    with open(log_path, "w") as log:
        def report(metrics: list[dict[str, float]], failures: dict[int, str]) -> None:
            for m, row in enumerate(metrics):
                if m not in failures:
                    log.write(json.dumps({"omega": cfgs[m].omega, "seed": cfgs[m].seed, **row}) + "\n")
            log.flush()
            print(f"epoch {metrics[0]['epoch']}: mean test_acc {sum(r['test_acc'] for r in metrics) / len(metrics):.4f}"
                  f" ({time.time() - started:.0f} s)", flush=True)

        training_started = time.time()
        result = train_pack(cfgs, report)
    wall = time.time() - training_started
    final = [{"omega": c.omega, "seed": c.seed, **result.metrics[m], "failure": result.failures.get(m)}
             for m, c in enumerate(cfgs)]
    with open(os.path.join(args.out, "final.json"), "w") as f:
        json.dump(final, f, indent=1)
    finished = [row for row in final if row["failure"] is None]
    c = cfgs[0]
    markdown = (f"Table 12 ({c.method}, {c.dataset} {c.imbalance} ratio {c.ratio:g}, {c.model}, {c.epochs} epochs, "
                f"{chosen['seeds']} seed(s), final-epoch test accuracy) on {device_name(torch.device(args.device))}, "
                f"training {wall:.0f} s\n\n" + table(finished))
    with open(os.path.join(args.out, "table12.md"), "w") as f:
        f.write(markdown + "\n")
    run = {"device": device_name(torch.device(args.device)), "torch": torch.__version__, "plan": chosen,
           "probes": probes, "training_s": round(wall, 1), "total_s": round(time.time() - started, 1),
           "members": len(cfgs), "failures": result.failures, "epochs": cfgs[0].epochs,
           "argv": sys.argv[1:] if argv is None else argv}
    with open(os.path.join(args.out, "run.json"), "w") as f:
        json.dump(run, f, indent=1)
    print(markdown, flush=True)
    return run


if __name__ == "__main__":
    main()
