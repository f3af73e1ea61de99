"""Table 12 on real data, one GPU window at a time: the paper preset trained as fused packs, without Ray.

The paper preset of ``sweeps/omega_sensitivity.py`` (MAMix-DRW, ResNet-32, CIFAR-10 long-tailed at
ratio 300, 200 epochs, omega in {0.125, ..., 8} x 5 seeds) needs only torch, numpy, scikit-learn and
pandas here, which the bare GPU machines have (no Ray, MLflow or Optuna). Its 35 cells (omega, seed)
may not all fit one window of a few minutes, so each run of this script is one window:

1. It reads the windows already run (``--done``, by default ``docs/results/table12/``: one folder per
   window with its ``run.json`` and ``final.json``) and leaves out the cells they trained in the same
   setting; the rest are taken seed by seed (every omega of seed 0, then of seed 1, ...).
2. It times a few steps of a pack of every remaining cell for each way of running it (``--candidates``:
   the fused network's executor, channels-last, cuDNN's benchmark mode), keeps the fastest, times one
   evaluation and the set-up, and the same for a pack of one seed's cells.
3. It trains the most remaining cells, then with the most frequent evaluation, whose estimate (steps and
   evaluations linear in the pack size between the two probes) fits the time left of ``--budget-s``: all
   members of a pack finish together, so a pack too large for the window would leave nothing.
4. With ``--replays N``, it replays every member's final weights up to N times in the time left
   (``bench/replays.py``: this platform's forward passes and the authors'; the best of the authors' is
   the kind of number the paper prints), with ``--replay-s`` seconds kept from evaluations for them.

Written to ``--out``: ``members.jsonl`` (one line per member and evaluation, written as training goes:
its omega, seed, epoch, test accuracy, margin statistics), ``final.json`` (every member's last metrics),
``run.json`` (device, setting, plan, probes, wall time), ``replays.json`` (with ``--replays``: every
member's evaluations after each replay) and ``table12.md``: the table over every window's cells, this
one's included: final-epoch accuracy, beside it the best evaluated epoch's (a test-set selection, the kind
of number the authors' code reports), the paper's numbers and the margin gap; below it the trend over
omega (slopes per doubling over the cells, ``core.reporting.trend``), each cell, and every replayed cell.
Commit ``--out`` as a new folder under ``--done``; the next window then trains the cells still missing.
Windows of another setting (``--set``, e.g. the authors' clean forward pass, ``clean_forward=true``) may
share the folder: a window counts and tables only its own setting's cells, and ``--table`` names another
setting's page after its changes (``table12-clean_forward=true.md``), leaving ``table12.md`` to Table 12's.

    python bench/table12_fused.py --data-root DIR --out OUT                  # DIR/cifar10.npz, on CUDA
    python bench/table12_fused.py --table docs/results/table12               # the table of the windows run
    python bench/table12_fused.py --data-root DIR --out OUT --device cpu --epochs 1 --seeds 2 \\
        --omegas 0.25 4 --probe-steps 2                                      # CPU dry run of the flow
"""

from __future__ import annotations

import argparse
import glob
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

from bench.fused_throughput import ready, steps, timed  # noqa: E402
from bench.replays import AUTHORS, replays  # noqa: E402
from bench.throughput import device_name, synchronize  # noqa: E402
from core.config import FORMER_DEFAULTS, TRAIN_DEFAULTS, TrainConfig, field_assignments  # noqa: E402
from core.reporting import markdown_table, mean_std, summarise, trend  # noqa: E402
from core.train import batch_bounds, compiles, evaluate, train_pack  # noqa: E402
from search_spaces import OMEGA_GRID  # noqa: E402
from sweeps.paper_tables import TABLE12, TABLE12_SETTING  # noqa: E402

EVAL_EVERY_CHOICES = (1, 2, 5, 10, 20)
REPLAYED = ("mixed", AUTHORS)  # --replays: this platform's forward passes and the authors'
DONE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "results", "table12")
# Fields that change how a cell is computed, not what: windows that differ only in these share a table.
RUN_FIELDS = ("omega", "seed", "device", "data_root", "eval_every", "amp", "channels_last", "compile",
              "compile_mode", "fuse_executor")
# Ways to run a pack (TrainConfig fields, and cuDNN's benchmark mode, a process-wide switch); on CUDA the
# fastest on the whole pack is kept. "grouped" is the HFTA layout, "per_member" one member after another.
CANDIDATES = {
    "auto": {"fuse_executor": "auto"},
    "grouped": {"fuse_executor": "grouped"},
    "grouped+benchmark": {"fuse_executor": "grouped", "cudnn_benchmark": True},
    "grouped+nchw": {"fuse_executor": "grouped", "channels_last": False},
    "per_member": {"fuse_executor": "per_member"},
}


# ----------------------------------------------------------------------------- cells and windows

def paper_setting(epochs: int | None = None, **changes: Any) -> dict[str, Any]:
    """Table 12's setting (TrainConfig fields) with ``changes``; with ``epochs``, its schedule cut to that
    many epochs, the DRW switch and the milestones inside them (a dry run, or a check of whole runs)."""
    base = {**TABLE12_SETTING, **changes}
    if epochs is not None:
        base.update(epochs=epochs, milestones=[m for m in base["milestones"] if m < epochs],
                    drw_epoch=min(base["drw_epoch"], epochs - 1), warmup_epochs=min(5, epochs))
    return base


def base_config(args: argparse.Namespace) -> dict[str, Any]:
    """The setting every cell trains in: the paper's, with ``--set`` and a dry run's ``--epochs``."""
    base = paper_setting(args.epochs, **args.set, device=args.device)
    if args.data_root:
        base["data_root"] = os.path.abspath(args.data_root)
    if args.compile == "off":
        base["compile"] = False
    elif args.compile:
        base.update(compile=True, compile_mode=args.compile)
    return base


def config_setting(cfg: TrainConfig) -> dict[str, Any]:
    """What a cell's numbers depend on: every resolved TrainConfig field but ``RUN_FIELDS``."""
    return {k: v for k, v in cfg.to_dict().items() if k not in RUN_FIELDS}


def setting_of(args: argparse.Namespace) -> dict[str, Any]:
    """The setting every cell of the flags' grid trains in."""
    return config_setting(TrainConfig.from_dict(base_config(args)))


def setting_differences(theirs: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    """The fields in which two settings differ; a field one of them lacks (a window run before the field
    existed) counts as the field's default then: its former default (``FORMER_DEFAULTS``), or its default."""
    defaults = {**TRAIN_DEFAULTS, **FORMER_DEFAULTS}
    return sorted(k for k in {**theirs, **ours} if theirs.get(k, defaults.get(k)) != ours.get(k, defaults.get(k)))


def changes_from_paper(setting: dict[str, Any]) -> list[str]:
    """``setting``'s fields that differ from Table 12's own (``--set`` and ``--epochs``), as FIELD=VALUE."""
    paper = config_setting(TrainConfig.from_dict(paper_setting(device="cpu")))

    def word(value: Any) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        return (",".join(map(str, value)) or "none") if isinstance(value, list) else str(value)

    return [f"{k}={word(setting.get(k))}" for k in setting_differences(paper, setting)]


def table_name(setting: dict[str, Any]) -> str:
    """``table12.md`` for Table 12's setting; another setting's page names its changes, so that the pages of
    two settings whose windows share a folder do not overwrite each other."""
    return "-".join(["table12", *changes_from_paper(setting)]) + ".md"


def all_cells(args: argparse.Namespace) -> list[tuple[float, int]]:
    """The grid's (omega, seed) cells, seed by seed."""
    return [(omega, seed) for seed in range(args.seeds) for omega in args.omegas]


def read_windows(done: str, setting: dict[str, Any]) -> list[dict[str, Any]]:
    """Every member of the windows under ``done`` (their ``final.json`` rows, failed ones included) run in
    ``setting``; windows of another setting are named and left out."""
    rows = []
    for run_path in sorted(glob.glob(os.path.join(done, "*", "run.json"))):
        folder = os.path.dirname(run_path)
        with open(run_path) as f:
            run = json.load(f)
        differ = setting_differences(run.get("setting") or {}, setting)
        if differ:
            print(f"left out {folder}: another setting ({', '.join(differ[:5])} differ)", flush=True)
            continue
        with open(os.path.join(folder, "final.json")) as f:
            rows += window_rows(json.load(f), folder, run)
    return rows


def window_rows(final: list[dict[str, Any]], folder: str, run: dict[str, Any]) -> list[dict[str, Any]]:
    """A window's members, each with the window's name, its device, how often it evaluated (its best
    epoch is the best of those evaluations) and its replays where the window has ``replays.json``
    (one cell's of ``bench/bn_statistics.py``, or a list of every member's of ``--replays``)."""
    every = (run.get("plan") or {}).get("eval_every")
    replayed = {}
    if os.path.exists(path := os.path.join(folder, "replays.json")):
        with open(path) as f:
            cells = json.load(f)
        replayed = {(c["omega"], c["seed"]): c["statistics"] for c in (cells if isinstance(cells, list) else [cells])}
    return [{**row, "window": os.path.basename(os.path.normpath(folder)), "device": run.get("device", "?"),
             "eval_every": every, "replays": replayed.get((row["omega"], row["seed"]), {})} for row in final]


def cell_configs(args: argparse.Namespace, cells: list[tuple[float, int]], eval_every: int,
                 candidate: dict[str, Any]) -> list[TrainConfig]:
    fields = {k: v for k, v in candidate.items() if k != "cudnn_benchmark"}
    return [TrainConfig.from_dict({**base_config(args), **fields, "eval_every": eval_every, "omega": omega,
                                   "seed": seed}) for omega, seed in cells]


# ----------------------------------------------------------------------------- probes and the plan

def use(candidate: dict[str, Any]) -> None:
    torch.backends.cudnn.benchmark = bool(candidate.get("cudnn_benchmark", False))


def probe(cfgs: list[TrainConfig], count: int, evaluation: bool = True) -> dict[str, Any]:
    """Seconds of the set-up (its first two steps included: cuDNN's choices, and with ``compile`` the
    full batch's graph; the last, partial batch's graph costs as much again, ``compile_s``), per training
    step and per evaluation of a pack, and its compile mode (None: eager)."""
    t = time.perf_counter()
    pack = ready(cfgs)
    run = steps(pack)
    synchronize(pack.device)
    built = time.perf_counter()
    *_, first_steps = timed([run], pack.device, 2, warmup=0)
    *_, seconds = timed([run], pack.device, count, warmup=0)
    result = {"members": len(cfgs), "setup_s": built - t + first_steps,
              "compile_s": first_steps if pack.compiled else 0.0, "step_s": seconds / count,
              "compile_mode": pack.cfg.compile_mode if pack.compiled else None,
              "steps_per_epoch": len(batch_bounds(pack.index.shape[1], pack.cfg.batch_size))}
    if evaluation:
        t = time.perf_counter()
        evaluate(pack, list(range(pack.size)))
        synchronize(pack.device)
        result["eval_s"] = time.perf_counter() - t
    return result


def default_candidates(args: argparse.Namespace) -> list[str]:
    """Every way but ``auto`` for an eager pack on CUDA, else ``auto`` alone: each compiled candidate would
    compile its own graphs, and on the CPU there is no cuDNN to choose for."""
    device = torch.device(args.device)
    eager = not compiles(TrainConfig.from_dict(base_config(args)), device)
    return sorted(set(CANDIDATES) - {"auto"}) if device.type == "cuda" and eager else ["auto"]


def fastest(args: argparse.Namespace, cells: list[tuple[float, int]]) -> tuple[str, list[dict[str, Any]]]:
    """The candidate whose steps on the pack of ``cells`` are fastest, and every candidate's timing."""
    if len(args.candidates) == 1:
        return args.candidates[0], []
    timings = []
    for name in args.candidates:
        use(CANDIDATES[name])
        try:
            timings.append({"candidate": name, **probe(cell_configs(args, cells, 1, CANDIDATES[name]),
                                                       args.probe_steps, evaluation=False)})
        except (RuntimeError, ValueError) as err:  # e.g. out of memory: that way is not an option
            timings.append({"candidate": name, "error": str(err).splitlines()[0]})
        print(json.dumps(timings[-1]), flush=True)
    ran = [t for t in timings if "step_s" in t]
    if not ran:
        raise SystemExit("no candidate could run the pack: " + "; ".join(t["error"] for t in timings))
    return min(ran, key=lambda t: t["step_s"])["candidate"], timings


def estimate(probes: list[dict[str, float]], members: int, epochs: int, every: int) -> float:
    """Seconds to set up and train a pack of ``members`` evaluated every ``every`` epochs: linear in the
    pack size between the probes, and no faster than the smaller probe below it."""
    small, large = probes[0], probes[-1]
    span = large["members"] - small["members"]
    at = max(members, small["members"])

    def cost(p: str) -> float:
        return small[p] + ((large[p] - small[p]) / span * (at - small["members"]) if span else 0.0)

    return (cost("setup_s") + cost("compile_s") + epochs * cost("step_s") * small["steps_per_epoch"]
            + math.ceil(epochs / every) * cost("eval_s"))


def plan(remaining: int, epochs: int, probes: list[dict[str, float]], budget: float,
         reserve: float = 0.0) -> dict[str, Any] | None:
    """The most remaining cells whose estimate fits ``budget``, then the most frequent evaluation that
    leaves ``reserve`` seconds of it (the replays') free, or the least frequent."""
    for members in range(remaining, 0, -1):
        if estimate(probes, members, epochs, EVAL_EVERY_CHOICES[-1]) <= budget:
            every = next((e for e in EVAL_EVERY_CHOICES if estimate(probes, members, epochs, e) <= budget - reserve),
                         EVAL_EVERY_CHOICES[-1])
            return {"members": members, "eval_every": every,
                    "estimated_s": round(estimate(probes, members, epochs, every), 1)}
    return None


# ----------------------------------------------------------------------------- the table

# Accuracies in % with two decimals, as the paper prints them.
PERCENT_COLUMNS = {"test_acc": "Reproduced (%)", "test_acc_best": "Best epoch (%, test-selected)"}


def percent_trials(final: list[dict[str, Any]]) -> pd.DataFrame:
    """The members' final metrics, one row each, accuracies in %."""
    trials = pd.DataFrame(final)
    for column in PERCENT_COLUMNS:
        trials[column] *= 100
    return trials


def table(final: list[dict[str, Any]]) -> str:
    """Table 12 (final-epoch accuracy, and beside it the best evaluated epoch's, in %, mean +- std over
    seeds) beside the paper's numbers."""
    summary = summarise(percent_trials(final), ["omega"], {**PERCENT_COLUMNS, "margin_gap": "Margin gap"})
    for column, title in PERCENT_COLUMNS.items():
        summary[title] = mean_std(summary[f"{column}_mean"], summary[f"{column}_std"], summary["n"], digits=2)
    summary["Paper (%)"] = [f"{TABLE12[w][0]:.2f} ± {TABLE12[w][1]:.2f}" if w in TABLE12 else "-"
                            for w in summary["omega"]]
    return markdown_table(summary[["omega", "n", *PERCENT_COLUMNS.values(), "Paper (%)", "Margin gap"]])


def trend_table(final: list[dict[str, Any]]) -> str:
    """How accuracy and the margin gap move with omega over the cells (``core.reporting.trend``), and the
    paper's accuracy over its seven means (it publishes no seed's number); empty while the cells leave no
    slope (one omega, or fewer than three cells)."""
    ours = trend(percent_trials(final), "omega", {**PERCENT_COLUMNS, "margin_gap": "Margin gap"},
                 digits={column: 2 for column in PERCENT_COLUMNS})
    if (ours["Slope per doubling"] == "-").all():
        return ""
    paper = pd.DataFrame({"omega": list(TABLE12), "mean": [mean for mean, _ in TABLE12.values()]})
    theirs = trend(paper, "omega", {"mean": f"Paper (%), over its {len(paper)} means"}, digits=2)
    return ("\nTrend over omega: the least-squares slope per doubling of omega over the cells (each seed's, as "
            "independent draws), its 95% confidence interval and p-value, and Spearman's rank correlation; the "
            "paper's over its means.\n\n" + markdown_table(pd.concat([ours, theirs], ignore_index=True)) + "\n")


def replay_table(rows: list[dict[str, Any]]) -> str:
    """One row per replayed cell: its final epoch, the replays' mean +- std (%), this platform's forward
    passes' and the authors', and the best of the authors' (their ``best_acc1`` over that many epochs at
    rest, ``bench/replays.py``) beside the paper's number; empty if no cell was replayed."""
    cells = []
    for row in sorted((r for r in rows if r.get("replays", {}).get(AUTHORS)),
                      key=lambda r: (r["omega"], r["seed"], r["window"])):
        accuracy = {way: [100 * m["test_acc"] for m in row["replays"].get(way, [])] for way in REPLAYED}
        cell = {"omega": row["omega"], "seed": row["seed"], "window": row["window"], "n": len(accuracy[AUTHORS]),
                "Final epoch (%)": f"{100 * row['test_acc']:.2f}"}
        for way, values in accuracy.items():
            spread = pd.Series(values, dtype=float)
            cell[f"{way.capitalize()} (%)"] = (mean_std([spread.mean()], [spread.std()], [len(values)], digits=2)[0]
                                               if values else "-")
        cell["Best of n, the authors' way (%, test-selected)"] = f"{max(accuracy[AUTHORS]):.2f}"
        cell["Paper (%)"] = f"{TABLE12[row['omega']][0]:.2f}" if row["omega"] in TABLE12 else "-"
        cells.append(cell)
    if not cells:
        return ""
    return ("\nReplayed cells: the final weights evaluated after n more epochs of forward passes at rest, this "
            "platform's (mixed) and the authors' (clean, then mixed); the best of the authors' n is what their "
            "best_acc1, the paper's kind of number, saw over n epochs at rest (bench/replays.py).\n\n"
            + markdown_table(pd.DataFrame(cells)) + "\n")


def cell_table(rows: list[dict[str, Any]]) -> str:
    """Each cell's final-epoch test accuracy (%), an omega a row and a seed a column, marked with the
    device that trained it; a cell trained in two windows shows both."""
    marks = {device: chr(ord("a") + i) for i, device in enumerate(sorted({r["device"] for r in rows}))}
    seeds = sorted({r["seed"] for r in rows})
    grid: dict[float, dict[int, list[str]]] = {}
    for row in sorted(rows, key=lambda r: r["window"]):
        grid.setdefault(row["omega"], {}).setdefault(row["seed"], []).append(
            f"{100 * row['test_acc']:.2f} {marks[row['device']]}")
    frame = pd.DataFrame([{"omega": f"{omega:g}", **{f"seed {s}": "; ".join(grid[omega].get(s, [])) for s in seeds}}
                          for omega in sorted(grid)])
    legend = ", ".join(f"{mark}: {device}" for device, mark in marks.items())
    heading = f"Each cell's final-epoch test accuracy (%), marked with its device ({legend}):"
    return f"\n{heading}\n\n{markdown_table(frame)}\n"


def table_page(rows: list[dict[str, Any]], setting: dict[str, Any], cells: int) -> str:
    """The table of ``rows`` (the members of every window) with a line saying what it holds."""
    finished = [r for r in rows if r.get("failure") is None]
    # One setting's cells may come from different devices, whose random streams and arithmetic differ
    # (a seed's run on the CPU is not its run on a GPU): each window is named with its device.
    windows = sorted({(r["window"], r.get("device", "?")) for r in rows})
    changes = changes_from_paper(setting)
    head = ("Table 12 ({method}, {dataset} {imbalance} ratio {ratio:g}, {model}, {epochs} epochs, final-epoch test "
            "accuracy)".format(**setting) + (f" in Table 12's setting but {', '.join(changes)}" if changes else "")
            + f": {len(finished)} member(s) of the grid's {cells} "
            f"from {len(windows)} window(s) ({', '.join(f'{w} on {d}' for w, d in windows)})")
    failed = [f"omega {r['omega']:g} seed {r['seed']}: {r['failure']}" for r in rows if r.get("failure")]
    every = sorted({r["eval_every"] for r in finished if r.get("eval_every")})
    best = ("\nBest epoch: the highest test accuracy over the evaluated epochs (every "
            f"{' or '.join(map(str, every)) or '?'} epoch(s), the last always), a test-set selection; the "
            "authors' code reports that kind of number, over every epoch.\n")
    body = (table(finished) + "\n" + best + trend_table(finished) + cell_table(finished) if finished
            else "(no finished member yet)\n")
    return head + "\n\n" + body + ("\nFailed: " + "; ".join(failed) + "\n" if failed else "") + replay_table(finished)


def write_table(args: argparse.Namespace) -> str:
    """The page over the windows under ``DONE`` (``--table``) in the setting of the flags: ``DONE/table12.md``
    in Table 12's setting, else the name ``table_name`` gives it."""
    setting = setting_of(args)
    page = table_page(read_windows(args.table, setting), setting, len(all_cells(args)))
    with open(os.path.join(args.table, table_name(setting)), "w") as f:
        f.write(page)
    return page


# ----------------------------------------------------------------------------- one window

def window(args: argparse.Namespace) -> dict[str, Any]:
    """One window: the cells not done yet that fit, trained as one pack; its files written."""
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    setting = setting_of(args)
    done_rows = read_windows(args.done, setting) if args.done and os.path.isdir(args.done) else []
    done = {(r["omega"], r["seed"]) for r in done_rows}
    remaining = [c for c in all_cells(args) if c not in done]
    run: dict[str, Any] = {"device": device_name(torch.device(args.device)), "torch": torch.__version__,
                           "setting": setting, "grid_cells": len(all_cells(args)), "done_before": len(done),
                           "argv": args.argv, "training_s": 0.0}
    final: list[dict[str, Any]] = []
    if not remaining:
        print("every cell of the grid is done already", flush=True)
    elif (chosen := plan_window(args, remaining, started, run)) is not None:
        cfgs = cell_configs(args, remaining[: chosen["members"]], chosen["eval_every"], CANDIDATES[run["candidate"]])
        training_started = time.time()
        last: dict[str, Any] = {}  # the pack's state at its last evaluation, the final one
        result = train_pack(cfgs, progress_log(args.out, cfgs, started),
                            save_state=last.update if args.replays else None)
        run.update(training_s=round(time.time() - training_started, 1), failures=result.failures)
        final = [{"omega": c.omega, "seed": c.seed, **result.metrics[m], "failure": result.failures.get(m)}
                 for m, c in enumerate(cfgs)]
        if args.replays and len(result.failures) < len(cfgs):  # then ``last`` is the final epoch's
            replay_window(args, cfgs, last, started, run)
    run.update(members=len(final), total_s=round(time.time() - started, 1))
    rows = done_rows + window_rows(final, args.out, run)
    page = table_page(rows, setting, len(all_cells(args))) + (
        f"\nThis window: {len(final)} member(s) trained on {run['device']} in {run['training_s']:.0f} s.\n")
    for name, text in (("final.json", json.dumps(final, indent=1)), ("run.json", json.dumps(run, indent=1)),
                       ("table12.md", page)):
        with open(os.path.join(args.out, name), "w") as f:
            f.write(text)
    print(page, flush=True)
    return run


def replay_window(args: argparse.Namespace, cfgs: list[TrainConfig], state: dict[str, Any], started: float,
                  run: dict[str, Any]) -> None:
    """Every member's final weights replayed (``REPLAYED``) up to ``--replays`` times, as often as the
    budget's time left allows; ``out/replays.json`` (one entry per member, as ``bench/bn_statistics.py``
    writes one) and the repeats and seconds in ``run``."""
    replay_started = time.time()
    members = replays(cfgs, state, args.replays, REPLAYED, deadline=started + args.budget_s)
    cells = [{"omega": c.omega, "seed": c.seed, "epoch": state["epoch"], "statistics": statistics}
             for c, statistics in zip(cfgs, members)]
    with open(os.path.join(args.out, "replays.json"), "w") as f:
        json.dump(cells, f, indent=1)
    repeats = max((len(s[AUTHORS]) for s in members if s), default=0)
    run.update(replays_s=round(time.time() - replay_started, 1), replay_repeats=repeats)
    print(f"replayed every member's final weights {repeats} time(s) each way ({run['replays_s']:.0f} s)", flush=True)


def plan_window(args: argparse.Namespace, remaining: list[tuple[float, int]], started: float,
                run: dict[str, Any]) -> dict[str, Any] | None:
    """The fastest way to run the pack, the probes and the plan (recorded in ``run``); None if not even
    one cell fits the time left."""
    name, timings = fastest(args, remaining)
    candidate = CANDIDATES[name]
    use(candidate)
    # The whole pack is probed again, with its evaluation: no pack is kept from ``fastest``, whose
    # candidates would otherwise hold several packs' memory at once.
    probes = [probe(cell_configs(args, remaining[: len(args.omegas)], 1, candidate), args.probe_steps)]
    if len(remaining) > len(args.omegas):
        probes.append(probe(cell_configs(args, remaining, 1, candidate), args.probe_steps))
    left = (args.budget_s - (time.time() - started)) * (1 - args.margin)
    chosen = plan(len(remaining), run["setting"]["epochs"], probes, left, args.replay_s if args.replays else 0.0)
    run.update(candidate=name, candidates=timings, probes=probes, plan=chosen, budget_left_s=round(left, 1))
    print(json.dumps({"candidate": name, "probes": probes, "plan": chosen}), flush=True)
    if chosen is None:
        print(f"not even one cell fits the {left:.0f} s left; nothing trained", flush=True)
    return chosen


def progress_log(out: str, cfgs: list[TrainConfig], started: float, resumed: bool = False):
    """A ``train_pack`` report that appends every member's evaluation to ``out/members.jsonl`` at once,
    so a window cut short still leaves its evaluations (a resumed run adds to them)."""
    path = os.path.join(out, "members.jsonl")
    if not resumed:
        open(path, "w").close()

    def report(metrics: list[dict[str, float]], failures: dict[int, str]) -> None:
        with open(path, "a") as log:
            for m, row in enumerate(metrics):
                if m not in failures:
                    log.write(json.dumps({"omega": cfgs[m].omega, "seed": cfgs[m].seed, **row}) + "\n")
        alive = [r["test_acc"] for m, r in enumerate(metrics) if m not in failures and r]
        mean = sum(alive) / len(alive) if alive else math.nan
        print(f"epoch {metrics[0].get('epoch', '?')}: mean test_acc {mean:.4f} ({time.time() - started:.0f} s)",
              flush=True)

    return report


def main(argv: list[str] | None = None) -> dict[str, Any] | str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", help="directory holding cifar10.npz (the compact ratio-300 file)")
    p.add_argument("--out", help="folder for members.jsonl, final.json, table12.md, run.json")
    p.add_argument("--table", metavar="DONE", help="only write DONE/table12.md from the windows under DONE "
                                                   "(those of the setting the other flags give; another "
                                                   "setting's page is named after its changes, e.g. "
                                                   "table12-clean_forward=true.md)")
    p.add_argument("--done", default=DONE, help="folder of the windows already run (default: docs/results/table12)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--seeds", type=int, default=5, help="the grid's seeds: 0..N-1")
    p.add_argument("--omegas", type=float, nargs="+", default=OMEGA_GRID)
    p.add_argument("--epochs", type=int, help="shorter runs for a dry run (default: the paper's 200)")
    p.add_argument("--budget-s", type=float, default=540,
                   help="seconds this script may take, probes included (default: 9 minutes, in a 10-minute command)")
    p.add_argument("--margin", type=float, default=0.1, help="fraction of the time left kept free of the plan")
    p.add_argument("--replays", type=int, default=0, metavar="N",
                   help="after training, replay every member's final weights up to N times this platform's way "
                        "and the authors' (bench/replays.py) in the budget's time left; the best of the authors' "
                        "replays estimates the paper's kind of number (default: 0, none)")
    p.add_argument("--replay-s", type=float, default=90,
                   help="seconds of the budget that evaluations may not take from the replays (default: 90)")
    p.add_argument("--probe-steps", type=int, default=10)
    p.add_argument("--candidates", nargs="+", choices=sorted(CANDIDATES),
                   help="ways to run the pack, the fastest kept (default: all but auto on CUDA unless compiling, "
                        "else auto)")
    p.add_argument("--compile", help="torch.compile mode (e.g. reduce-overhead), or off for eager; default: "
                                     "TrainConfig's (CUDA graphs on CUDA, eager on the CPU)")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="TrainConfig fields over the paper's setting (YAML values), e.g. for a dry run on digits")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    args.set = field_assignments(args.set)
    if args.table:
        page = write_table(args)
        print(page)
        return page
    if not args.out:
        p.error("--out is required (or --table DONE)")
    if args.candidates is None:
        args.candidates = default_candidates(args)
    return window(args)


if __name__ == "__main__":
    main()
