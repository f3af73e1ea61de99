"""BatchNorm's running statistics and the Table 12 gap: one cell trained, then evaluated with the
running statistics its training left and with those that other forward passes would have left.

The authors' Mixup-family trainers (imbalanced-DL's ``_mamix_drw.py``) forward the clean batch in train
mode before the mixed one, each step, to log a training accuracy; this platform forwards the mixed batch
only (``TrainConfig.clean_forward`` off, as ``../shared/notes/reference-facts.md`` asks). In train mode
BatchNorm normalises with each batch's own statistics, so that extra forward changes no gradient and no
weight: the two trainings are the same, and differ only in the running statistics that evaluation
normalises with. So one training answers how much they matter:

1. Train the cell (Table 12's setting, ``--omega`` and ``--seed``) and keep the pack's state at every
   evaluation in ``OUT/state.pt`` (3.8 MB for ResNet-32; checkpoints stay out of git). An existing final
   state is reused and an unfinished one resumed, so a second run of the same command only evaluates.
2. From the final weights, replay one more epoch per way of forwarding (``bench/replays.py``) at
   learning rate 0 (weights unchanged; BatchNorm in train mode, its momentum as trained), and evaluate
   each; as often as ``--repeats`` says, on other draws, for the spread that the replayed batches alone cause.
   ``--replays`` picks the ways (default: ``FORWARDING``, the three that change no weight); "mixed,
   trained" is one more epoch of training steps at the learning rate training ended with.

The best of a row's repeats is printed too: it is what the authors' ``best_acc1`` would have seen over
that many epochs at rest (``bench/replays.py`` says why).

Written to ``--out``: ``members.jsonl`` and ``final.json`` (the training, as ``bench/table12_fused.py``
writes them), ``training.json`` (its wall time and config), ``run.json`` (the record of a window that
``bench/table12_fused.py --table`` reads, so a folder committed under ``docs/results/table12/`` counts
its cell among Table 12's), ``replays.json`` (every evaluation's metrics: accuracies overall, per class
and per group, and margin statistics) and ``replays.md`` (the table).

    python bench/bn_statistics.py --data-root DIR --out OUT --device cpu     # DIR/cifar10.npz
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from bench.table12_fused import cell_configs, config_setting, progress_log  # noqa: E402
from bench.throughput import device_name  # noqa: E402
from bench.replays import FORWARDING, REPLAYS, replays  # noqa: E402
from core.config import TrainConfig, field_assignments  # noqa: E402
from core.reporting import markdown_table, summarise  # noqa: E402
from core.train import train_pack  # noqa: E402

def cell_config(args: argparse.Namespace) -> TrainConfig:
    """Table 12's setting for one (omega, seed), as ``bench/table12_fused.py`` trains its cells."""
    window_flags = argparse.Namespace(**vars(args), compile=None)  # TrainConfig's default, as a window's
    return cell_configs(window_flags, [(args.omega, args.seed)], args.eval_every, {})[0]


def trained_state(cfg: TrainConfig, out: str) -> dict[str, Any]:
    """The pack's final state: ``out/state.pt`` if it holds the last epoch, else trained (resumed from
    ``out/state.pt`` if a run was cut short), saved at every evaluation."""
    path = os.path.join(out, "state.pt")
    state = torch.load(path, weights_only=True) if os.path.exists(path) else None
    if state is not None and state["epoch"] == cfg.epochs:
        return state

    def save(new: dict[str, Any]) -> None:
        torch.save(new, path + ".tmp")
        os.replace(path + ".tmp", path)  # a run killed mid-write keeps the last whole state

    started = time.time()
    result = train_pack([cfg], progress_log(out, [cfg], started, resumed=state is not None), resume=state,
                        save_state=save)
    with open(os.path.join(out, "final.json"), "w") as f:
        json.dump([{"omega": cfg.omega, "seed": cfg.seed, **result.metrics[0]}], f, indent=1)
    with open(os.path.join(out, "training.json"), "w") as f:
        json.dump({"training_s": round(time.time() - started, 1), "resumed_from_epoch": (state or {}).get("epoch"),
                   "torch": torch.__version__, "config": cfg.to_dict()}, f, indent=1)
    return torch.load(path, weights_only=True)


def write_run(cfg: TrainConfig, out: str) -> dict[str, Any]:
    """``out/run.json``: the trained cell as one window of ``bench/table12_fused.py`` (one member,
    evaluated every ``eval_every`` epochs), from ``out/training.json``. A resumed training's
    ``training_s`` is its last leg's, so the record names the epoch that leg resumed from."""
    with open(os.path.join(out, "training.json")) as f:
        training = json.load(f)
    run = {"device": device_name(torch.device(cfg.device)), "torch": training["torch"],
           "setting": config_setting(cfg), "grid_cells": 1, "plan": {"members": 1, "eval_every": cfg.eval_every},
           "training_s": training["training_s"], "resumed_from_epoch": training["resumed_from_epoch"],
           "written_by": "bench/bn_statistics.py"}
    with open(os.path.join(out, "run.json"), "w") as f:
        json.dump(run, f, indent=1)
    return run


def replay_table(result: dict[str, Any], counts: list[int]) -> str:
    """One row per set of running statistics, mean +- std over the repeats: accuracies in %, the margin
    gap, the two rarest classes' accuracy; and the best test accuracy of the repeats (the authors'
    ``best_acc1`` over that many epochs at rest, module docstring)."""
    rare = sorted(range(len(counts)), key=counts.__getitem__)[:2]
    columns = {"test_acc": "test acc (%)", "many_shot_acc": "many (%)", "medium_shot_acc": "medium (%)",
               "few_shot_acc": "few (%)", **{f"class_acc_{c}": f"class {c}, n = {counts[c]} (%)" for c in rare},
               "margin_gap": "margin gap"}
    names = list(result["statistics"])
    runs = pd.DataFrame([{"BatchNorm statistics": name, **run} for name, group in result["statistics"].items()
                         for run in group])
    runs["BatchNorm statistics"] = pd.Categorical(runs["BatchNorm statistics"], categories=names)
    percent = [key for key in columns if key != "margin_gap"]
    runs[percent] *= 100
    summary = summarise(runs, ["BatchNorm statistics"], columns, digits={**dict.fromkeys(percent, 2), "margin_gap": 3})
    best = runs.groupby("BatchNorm statistics", observed=True)["test_acc"].max()
    summary["best of n (%)"] = summary["BatchNorm statistics"].map(best).map("{:.2f}".format)
    rows = summary[["BatchNorm statistics", "n", "test acc (%)", "best of n (%)", *list(columns.values())[1:]]]
    rows = rows.astype({"BatchNorm statistics": str})
    head = (f"omega {result['omega']:g}, seed {result['seed']}: the weights after epoch {result['epoch']}, "
            "evaluated with the running statistics training left (as trained) and with those of one more epoch "
            "of each replay's forwards at learning rate 0 (\"mixed, trained\": of training steps at the last "
            "learning rate; n: repeats on other draws, mean ± std)\n\n")
    return head + markdown_table(rows) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", help="directory holding cifar10.npz (the compact ratio-300 file)")
    p.add_argument("--out", required=True, help="folder for state.pt, members.jsonl, final.json, replays.*")
    p.add_argument("--device", default="cuda")
    p.add_argument("--omega", type=float, default=0.125)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="replays of each kind, on other draws (default: 3)")
    p.add_argument("--replays", nargs="+", choices=list(REPLAYS), default=list(FORWARDING), metavar="NAME",
                   help=f"the replays, of {list(REPLAYS)} (default: {list(FORWARDING)})")
    p.add_argument("--epochs", type=int, help="shorter runs for a dry run (default: the paper's 200)")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="TrainConfig fields over the paper's setting (YAML values), e.g. for a dry run on digits")
    args = p.parse_args(argv)
    args.set = field_assignments(args.set)
    os.makedirs(args.out, exist_ok=True)
    cfg = cell_config(args)
    state = trained_state(cfg, args.out)
    write_run(cfg, args.out)
    result = {"omega": cfg.omega, "seed": cfg.seed, "epoch": state["epoch"],
              "statistics": replays([cfg], state, args.repeats, args.replays)[0]}
    with open(os.path.join(args.out, "replays.json"), "w") as f:
        json.dump(result, f, indent=1)
    page = replay_table(result, state["counts"])
    with open(os.path.join(args.out, "replays.md"), "w") as f:
        f.write(page)
    print(page, flush=True)
    return result


if __name__ == "__main__":
    main()
