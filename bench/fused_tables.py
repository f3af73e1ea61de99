"""The tables of docs/PERFORMANCE.md's fused-trial sections, from the JSON lines that
``bench/fused_throughput.py`` (lines whose ``mode`` is one of its modes), ``bench/executors.py`` (with
``way``) and ``bench/graphs_check.py`` (with ``passed``) append, so that the page shows what a command
printed and a GPU session's measurements table themselves.

* Throughput: a row per K and fused executor with each mode's aggregate img/s, and fused against
  sequential (the same K configurations trained one after another) and against processes.
* Executors: a row per K and precision with each way's img/s, or "error" where it could not run.
* CUDA graphs against eager: a row per check and batch size, the largest update errors of the eager and
  the compiled step from the float64 reference (weights, with their worst ratio; BatchNorm statistics),
  both speeds and the verdict, or the error that stopped the check.
* A whole Table 12 pack's step, from the ``run.json`` of ``bench/table12_fused.py`` windows (a ``.json``
  file, not lines): a row per pack size, a column per way it was timed (the candidates on the whole pack,
  then the probes in the way kept, eager or compiled), img/s as members x batch / seconds a step.

One table per setting measured (device, model, dataset, method, batch, precision, timed steps; for the
graphs checks, device and torch; for the packs, device, torch, model, dataset, method and batch), under a
line naming it. The files are appended to run after run, so where a K was measured more than once in a
mode (and executor) or way, its last line counts.

    python bench/fused_tables.py docs/results/cpu-fused/small_cnn_digits.jsonl [more.jsonl ...]
    python bench/fused_tables.py docs/results/table12/2026-12-04-nvidia-h200/run.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pandas as pd  # noqa: E402

from bench.executors import WAYS  # noqa: E402
from bench.fused_throughput import MODES  # noqa: E402
from bench.summarise import read  # noqa: E402
from core.reporting import markdown_table  # noqa: E402

# What a line's numbers depend on besides K and its mode or way: lines that differ here get their own table.
THROUGHPUT_SETTING = ("device_name", "model", "dataset", "method", "batch", "amp", "compile", "steps", "warmup")
EXECUTORS_SETTING = ("device_name", "model", "batch", "steps", "warmup")
GRAPHS_SETTING = ("device", "torch")
PACKS_SETTING = ("device", "torch", "model", "dataset", "method", "batch")


def rate(value: float) -> str:
    return f"{value:,.0f}"


def heading(setting: dict[str, Any]) -> str:
    """The setting of a table in words, e.g. "NVIDIA H200, resnet32 on cifar10 (mamix_drw), batch 128, bf16,
    30 timed steps after 5"."""
    data = f" on {setting['dataset']} ({setting['method']})" if "dataset" in setting else ""
    precision = "" if "amp" not in setting else ", bf16" if setting["amp"] else ", fp32"
    compiled = f", compiled ({setting['compile']})" if setting.get("compile") else ""
    return (f"{setting['device_name']}, {setting['model']}{data}, batch {setting['batch']}{precision}{compiled}, "
            f"{setting['steps']} timed steps after {setting['warmup']}")


def throughput_table(lines: list[dict[str, Any]]) -> pd.DataFrame:
    """One setting's ``fused_throughput.py`` lines: a row per K and fused executor (``--executor`` may
    differ between runs), a column per mode measured, and fused against each other mode."""
    last = {(line["members"], line["mode"], line.get("executor")): line for line in lines}
    modes = [m for m in MODES if any(mode == m for _, mode, _ in last)]
    rows = []
    for k in sorted({k for k, *_ in last}):
        at_k = [line for (members, *_), line in last.items() if members == k]
        others = {line["mode"]: line for line in at_k if line["mode"] != "fused"}
        for fused in [line for line in at_k if line["mode"] == "fused"] or [None]:
            row: dict[str, Any] = {"K": k}
            for mode in modes:
                line = fused if mode == "fused" else others.get(mode)
                row[f"{mode} img/s"] = rate(line["img_per_s"]) if line else ""
                if mode == "fused":
                    row["executor"] = fused["executor"] if fused else ""
            for mode in modes:
                if mode != "fused" and "fused" in modes:
                    other = others.get(mode)
                    row[f"fused / {mode}"] = f"{fused['img_per_s'] / other['img_per_s']:.2f}" if fused and other else ""
            rows.append(row)
    return pd.DataFrame(rows)


def executors_table(lines: list[dict[str, Any]]) -> pd.DataFrame:
    """One setting's ``executors.py`` lines: a row per K and precision, a column per way measured."""
    last = {(line["members"], bool(line.get("amp")), line["way"]): line for line in lines}
    ways = [w for w in WAYS if any(way == w for *_, way in last)]
    rows = []
    for k, amp in sorted({(k, amp) for k, amp, _ in last}):
        row: dict[str, Any] = {"K": k, "precision": "bf16" if amp else "fp32"}
        for way in ways:
            line = last.get((k, amp, way))
            row[f"{way} img/s"] = ("" if line is None else "error" if "error" in line else rate(line["img_per_s"]))
        rows.append(row)
    return pd.DataFrame(rows)


def graphs_table(lines: list[dict[str, Any]]) -> pd.DataFrame:
    """One device's ``graphs_check.py`` lines: a row per check and batch size, in the order run; a check
    of ``--variants`` is named after its variant."""
    rows = []
    for line in lines:
        variant = f"{line['variant']}: " if line.get("variant") else ""
        if "error" in line:
            rows.append({"check": variant.rstrip(": ") or "-", "passed": "no: " + line["error"]})
            continue
        check = (f"{variant}{line['model']}, {line['dataset']}, {line['members']} member(s), {line['epochs']} "
                 f"epoch(s), {line['mode']}, {'bf16' if line['amp'] else 'fp32'}")
        for i, (batch, errors) in enumerate(line["update_errors"].items()):
            weights, statistics = errors["weights"], errors["statistics"]
            rows.append({
                "check": "" if i else check, "batch": batch,
                "weights: eager / compiled error (worst ratio)":
                    f"{weights['eager_error']:.1e} / {weights['compiled_error']:.1e} ({weights['worst_ratio']:.2f})",
                "statistics: eager / compiled error":
                    f"{statistics['eager_error']:.1e} / {statistics['compiled_error']:.1e}",
                "eager / compiled img/s":
                    "" if i else f"{rate(line['eager_img_per_s'])} / {rate(line['compiled_img_per_s'])}",
                "passed": "" if i else "yes" if line["passed"] else "no"})
    return pd.DataFrame(rows).fillna("")


def graphs_heading(setting: dict[str, Any]) -> str:
    return f"{setting.get('device', 'device not recorded')}, torch {setting.get('torch', '?')}"


def compile_mode(run: dict[str, Any], timing: dict[str, Any]) -> str | None:
    """How a timed pack's step ran: its compile mode, or None for eager. Probes before 2026-12-06 did not
    record it: a pack was compiled if its probe spent time compiling, in its window's ``--compile`` mode."""
    if "compile_mode" in timing:
        return timing["compile_mode"]
    if not timing.get("compile_s"):
        return None
    argv = run["argv"]
    return argv[argv.index("--compile") + 1] if "--compile" in argv else "mode not recorded"


def pack_lines(run: dict[str, Any]) -> list[dict[str, Any]]:
    """A ``table12_fused.py`` window's ``run.json`` as a line per timed pack: each candidate way on the
    whole pack of the cells left (an error where it could not run), then the probes in the way kept."""
    setting = run["setting"]
    common = {"device": run["device"], "torch": run["torch"], "model": setting["model"],
              "dataset": setting["dataset"], "method": setting["method"], "batch": setting["batch_size"]}
    timed = run.get("candidates", []) + [{"candidate": run["candidate"], **p} for p in run.get("probes", [])]
    lines = []
    for timing in timed:
        mode = compile_mode(run, timing)
        way = timing["candidate"] + (f", compiled ({mode})" if mode else "")
        members = timing.get("members", run["grid_cells"] - run["done_before"])
        lines.append({**common, "pack": way, "members": members,
                      **{k: timing[k] for k in ("step_s", "error") if k in timing}})
    return lines


def packs_table(lines: list[dict[str, Any]]) -> pd.DataFrame:
    """One setting's timed packs: a row per pack size, a column per way, img/s and seconds a step."""
    last = {(line["members"], line["pack"]): line for line in lines}
    ways = list(dict.fromkeys(way for _, way in last))
    rows = []
    for k in sorted({k for k, _ in last}):
        row: dict[str, Any] = {"members": k}
        for way in ways:
            line = last.get((k, way))
            row[way] = ("" if line is None else "error" if "error" in line
                        else f"{rate(k * line['batch'] / line['step_s'])} ({line['step_s']:.4f} s)")
        rows.append(row)
    return pd.DataFrame(rows)


def packs_heading(setting: dict[str, Any]) -> str:
    return (f"{setting['device']}, torch {setting['torch']}, {setting['model']} on {setting['dataset']} "
            f"({setting['method']}), {setting['batch']} images a member a step")


# The four kinds of line: a table's title, which lines belong, what they share, how the table is built and
# how its setting reads.
KINDS = (("Fused throughput", lambda line: line.get("mode") in MODES, THROUGHPUT_SETTING, throughput_table, heading),
         ("Executors (one SGD step)", lambda line: "way" in line, EXECUTORS_SETTING, executors_table, heading),
         ("CUDA graphs against eager (bench/graphs_check.py)", lambda line: "passed" in line, GRAPHS_SETTING,
          graphs_table, graphs_heading),
         ("A whole Table 12 pack's step (bench/table12_fused.py's probes: img/s and seconds a step)",
          lambda line: "pack" in line, PACKS_SETTING, packs_table, packs_heading))


def tables(lines: list[dict[str, Any]]) -> str:
    """Every setting's table, throughput first, then executors, graphs checks and packs, each under its
    heading."""
    parts = []
    for title, belongs, fields, build, describe in KINDS:
        groups: dict[tuple, list[dict[str, Any]]] = {}
        for line in lines:
            if belongs(line):
                groups.setdefault(tuple(line.get(f) for f in fields), []).append(line)
        for key, group in groups.items():
            setting = {f: v for f, v in zip(fields, key) if v is not None}
            parts.append(f"{title}, {describe(setting)}:\n\n{markdown_table(build(group))}\n")
    return "\n".join(parts)


def load(paths: list[str]) -> list[dict[str, Any]]:
    """The lines of every ``.jsonl`` file and the timed packs of every ``.json`` one (a window's run.json)."""
    lines = []
    for path in paths:
        if path.endswith(".jsonl"):
            lines += read([path])
        else:
            with open(path) as f:
                try:
                    run = json.load(f)
                except json.JSONDecodeError:
                    run = None
            if not isinstance(run, dict) or "setting" not in run:
                raise SystemExit(f"{path}: not the run.json of a bench/table12_fused.py window, which has a "
                                 "setting (JSON lines go in a .jsonl file)")
            lines += pack_lines(run)
    return lines


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", help="JSON lines of fused_throughput.py, executors.py or graphs_check.py "
                                            "(.jsonl), or a table12_fused.py window's run.json")
    text = tables(load(p.parse_args(argv).files))
    print(text, end="")
    return text


if __name__ == "__main__":
    main()
