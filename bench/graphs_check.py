"""The compiled fused step (``torch.compile``; mode ``reduce-overhead`` adds CUDA graphs) checked through
whole runs against the eager one, and timed.

Three packs of the same Table 12 cells start from the same weights and generators: the eager one, one
whose network is compiled, and a float64 eager reference without autocast. They train in lockstep through
``--epochs`` whole epochs of the paper's schedule cut to that length (warm-up, the DRW switch in the last
epoch, every epoch's last, partial batch), and the first two are evaluated after each epoch. Before every
step the compiled and reference packs are put back to the eager pack's state (weights, BatchNorm
statistics, momentum), so each step compares one update from the same state and batch: two free runs
would drift apart through rounding alone, as the grouped kernels do (tests/test_fused.py). Then one more
epoch of the eager and the compiled pack is timed, free.

A step passes when the compiled update is about as close to the float64 update as the eager one: its
error is at most ``multiplier`` times the eager update's (2 in fp32, 3 under bf16 autocast, as PyTorch's
own compiler accuracy checks, ``torch._dynamo.utils.same``, compare against a float64 reference) plus
``--slack`` (default 0.01), errors being ``||du - du_fp64|| / ||du_fp64||`` over all members'
parameters, and apart over their BatchNorm statistics (which the eager evaluation reads). Rounding
differs between kernels by itself, so the eager kernels' own distance from float64 is the yardstick;
the slack admits Inductor's own, which put ResNet-32's updates up to
1.2e-3 off float64 on this project's CPU where eager ones were 6.6e-4 off (docs/PERFORMANCE.md). A
computation that is wrong, not rounded (logits off by 10 %, statistics never updated: both are planted
in tests/test_bench.py), is off by far more.

``--variants`` checks other settings in turn, each over Table 12's (and ``--set``): the methods whose
step differs from MAMix-DRW's where it meets the compiled network (LDAM's cosine head, M2m's eager
translations through the same network between compiled steps, DeepSMOTE's switch of training set, the
clean forward pass under no_grad). A method's stages (M2m's g, DeepSMOTE's autoencoder) are trained
first, eagerly, on the same cut schedule: they are frozen inputs here, not what is checked. A setting
that fails to build, compile or run gives a line with its error, and the others still run; the exit
status is 1 unless every setting passed.

Printed and written to ``--json`` (one object per setting): per batch size and for the weights and the
statistics, the largest eager and compiled errors and their largest ratio; the largest loss difference; the
largest differences of test accuracy and margin gap at the evaluations; Inductor's count of CUDA-graph
skips; the graphs TorchDynamo compiled (at least one a batch size, or the network ran eagerly); the first
call of each batch shape (its compile); img/s of each executor's timed epoch; and ``passed``.

    python bench/graphs_check.py --device cuda --data-root DIR --members 7 --epochs 2 --json OUT/graphs.jsonl
    python bench/graphs_check.py --device cpu --set dataset=digits model=small_cnn ratio=10 \\
        --members 2 --epochs 2 --mode default                                     # the CPU check of the flow
    python bench/graphs_check.py --device cuda --data-root DIR --members 4 --variants method=ldam_drw \\
        method=m2m method=deepsmote,deepsmote_epochs=2 clean_forward=true --json OUT/graphs.jsonl
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import traceback
from typing import Any

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from bench.table12_fused import paper_setting  # noqa: E402
from bench.summarise import emit  # noqa: E402
from bench.throughput import device_name, synchronize  # noqa: E402
from core.config import COMPILE_MODES, TrainConfig, field_assignments  # noqa: E402
from core.stages import needed_stages, train_stage_file  # noqa: E402
from core.train import (Pack, batch_bounds, draw_epoch, epoch_weights, evaluate, make_batch, run_epoch,  # noqa: E402
                        set_learning_rate, set_up, train_step)
from search_spaces import OMEGA_GRID  # noqa: E402


def packs(args: argparse.Namespace, variant: dict[str, Any], stage_dir: str) -> tuple[Pack, Pack, Pack]:
    """The eager, the compiled and the float64 reference pack of the first ``--members`` cells (omegas,
    then seeds), in Table 12's setting with ``--set`` and ``variant``. The stages its method needs are
    trained into ``stage_dir`` under that setting, eagerly (a stage is frozen input here, not checked)."""
    base = paper_setting(args.epochs, **{**args.set, **variant}, device=args.device)
    if args.data_root:
        base["data_root"] = os.path.abspath(args.data_root)
    for name in needed_stages(TrainConfig.from_dict(base)):
        path = os.path.join(stage_dir, f"{name}.pt")
        train_stage_file(name, TrainConfig.from_dict({**base, "compile": False}), path)
        base[name] = path
    cells = [dict(omega=OMEGA_GRID[m % len(OMEGA_GRID)], seed=m // len(OMEGA_GRID)) for m in range(args.members)]

    def pack(**changes: Any) -> Pack:
        return set_up([TrainConfig.from_dict({**base, **c, **changes}) for c in cells])

    eager = pack(compile=False)
    reference = pack(amp=False, channels_last=eager.net.channels_last, fuse_executor=eager.net.executor)
    reference.net.double()
    reference.forward = lambda x: reference.net(x.double())
    return eager, pack(compile=True, compile_mode=args.mode), reference


def variant_fields(word: str) -> dict[str, Any]:
    """A ``--variants`` word's fields: ``FIELD=VALUE`` pairs joined by commas (a comma inside a value,
    as in ``milestones=[1,2]``, stays in it)."""
    return field_assignments(re.split(r",(?=\w+=)", word))


@torch.no_grad()
def copy_state(source: Pack, target: Pack) -> None:
    """Weights, BatchNorm statistics and momentum of ``source`` into ``target``, in place (a compiled
    network's CUDA graphs read their tensors where they are), cast to the target's dtype."""
    tensors = [(*pack.net.parameters(), *pack.net.buffers()) for pack in (source, target)]
    for a, b in zip(*tensors):
        b.copy_(a)
    for a, b in zip(source.net.parameters(), target.net.parameters()):
        momentum = source.optimizer.state.get(a, {}).get("momentum_buffer")
        if momentum is not None:
            target.optimizer.state.setdefault(b, {})["momentum_buffer"] = momentum.to(b.dtype, copy=True)


GROUPS = ("weights", "statistics")


def flat(pack: Pack) -> dict[str, torch.Tensor]:
    """Every parameter, and every BatchNorm statistic apart (their updates differ in scale by orders of
    magnitude), so that a step that forgot the statistics, which the eager evaluation reads, fails too."""
    stats = [b for b in pack.net.buffers() if b.is_floating_point()]
    return {name: torch.cat([t.detach().flatten().double() for t in tensors])
            for name, tensors in zip(GROUPS, (list(pack.net.parameters()), stats))}


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def step_errors(before: dict[str, torch.Tensor], eager: Pack, compiled: Pack, reference: Pack
                ) -> dict[str, tuple[float, float]]:
    """Per group, the eager and the compiled update's relative distance from the float64 update."""
    after = [flat(p) for p in (eager, compiled, reference)]
    errors = {}
    for group in GROUPS:
        du_eager, du_compiled, du_reference = (a[group] - before[group] for a in after)
        errors[group] = relative(du_eager, du_reference), relative(du_compiled, du_reference)
    return errors


def lockstep(eager: Pack, compiled: Pack, reference: Pack, epochs: int, multiplier: float, slack: float
             ) -> dict[str, Any]:
    """The three packs through ``epochs`` epochs, the compiled and reference ones reset to the eager
    one before each step; errors per batch size, and the evaluations' differences."""
    by_size: dict[int, dict[str, dict[str, float]]] = {}
    loss_error, metric_error, first_call, passed = 0.0, {"test_acc": 0.0, "margin_gap": 0.0}, {}, True
    for epoch in range(epochs):
        for pack in (eager, compiled, reference):
            set_learning_rate(pack, epoch)
        draws, weights = draw_epoch(eager, epoch), epoch_weights(eager, epoch)
        for step, (start, end) in enumerate(batch_bounds(draws.order.shape[1], eager.cfg.batch_size)):
            batch, size = make_batch(eager, draws, step, start, end), end - start
            copy_state(eager, compiled)
            copy_state(eager, reference)
            before = flat(eager)
            loss_eager = train_step(eager, batch, weights)
            train_step(reference, batch, weights)
            t = time.perf_counter()
            loss_compiled = train_step(compiled, batch, weights)
            if size not in by_size:  # the first call of a shape compiles it
                synchronize(compiled.device)
                first_call[str(size)] = round(time.perf_counter() - t, 2)
                by_size[size] = {g: {"eager_error": 0.0, "compiled_error": 0.0, "worst_ratio": 0.0} for g in GROUPS}
            for group, (e_eager, e_compiled) in step_errors(before, eager, compiled, reference).items():
                passed &= e_compiled <= multiplier * e_eager + slack
                row = by_size[size][group]
                row.update(eager_error=max(row["eager_error"], e_eager),
                           compiled_error=max(row["compiled_error"], e_compiled),
                           worst_ratio=max(row["worst_ratio"], e_compiled / max(e_eager, 1e-12)))
            loss_error = max(loss_error, ((loss_compiled - loss_eager).abs() / loss_eager.abs()).max().item())
        members = list(range(eager.size))
        for a, b in zip(evaluate(eager, members).values(), evaluate(compiled, members).values()):
            for name in metric_error:
                metric_error[name] = max(metric_error[name], abs(a[name] - b[name]))
    return {"passed": passed, "multiplier": multiplier, "slack": slack,
            "update_errors": {str(k): v for k, v in sorted(by_size.items(), reverse=True)},
            "max_loss_rel_error": loss_error, "max_eval_abs_error": metric_error,
            "batch_sizes": sorted(by_size, reverse=True), "first_call_s": first_call}


def timed_epoch(pack: Pack, epoch: int) -> float:
    """img/s of one free epoch of every member."""
    synchronize(pack.device)
    t = time.perf_counter()
    run_epoch(pack, epoch)
    synchronize(pack.device)
    return pack.size * pack.index.shape[1] / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--data-root", help="directory holding cifar10.npz (the compact ratio-300 file)")
    p.add_argument("--members", type=int, default=7)
    p.add_argument("--epochs", type=int, default=2, help="epochs in lockstep (the schedule cut to them)")
    p.add_argument("--mode", default="reduce-overhead", choices=COMPILE_MODES)
    p.add_argument("--slack", type=float, default=1e-2,
                   help="relative update error allowed beyond the multiple of the eager one (default 1e-2)")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="TrainConfig fields over Table 12's setting (YAML values), e.g. for a dry run on digits")
    p.add_argument("--variants", nargs="*", default=[], metavar="FIELD=VALUE[,FIELD=VALUE]",
                   help="check each of these settings in turn (over Table 12's and --set), e.g. method=ldam_drw "
                        "clean_forward=true; default: Table 12's setting alone")
    p.add_argument("--json", help="write the results to this file (one JSON line each, appended)")
    args = p.parse_args(argv)
    args.set = field_assignments(args.set)
    variants = {word: variant_fields(word) for word in args.variants}  # refused here, before any training
    results = []
    with tempfile.TemporaryDirectory() as stage_dir:
        for word, fields in (variants or {"": {}}).items():
            try:
                results.append(check(args, word, fields, stage_dir))
            except Exception as err:  # noqa: BLE001 - a setting that fails to compile or run is its result
                traceback.print_exc()
                results.append({"device": device_name(torch.device(args.device)), "torch": torch.__version__,
                                "variant": word, "passed": False, "error": f"{type(err).__name__}: {err}"})
                emit(results[-1], args.json)
    return results


def check(args: argparse.Namespace, variant: str, fields: dict[str, Any], stage_dir: str) -> dict[str, Any]:
    """One setting's check (``variant`` over Table 12's setting and ``--set``), printed and written."""
    from torch._dynamo.utils import counters

    # Each setting compiles afresh: TorchDynamo's compiled code is per code object, shared by every pack's
    # network, and past its recompile limit it would run the later settings eagerly, and pass them unchecked.
    torch._dynamo.reset()
    skips_before, graphs_before = counters["inductor"]["cudagraph_skips"], counters["stats"]["unique_graphs"]
    eager, compiled, reference = packs(args, fields, stage_dir)
    result = {"device": device_name(eager.device), "torch": torch.__version__, "members": eager.size,
              "epochs": args.epochs, "mode": args.mode, "amp": eager.amp, "executor": eager.net.executor,
              "dataset": eager.cfg.dataset, "model": eager.cfg.model, "method": eager.cfg.method,
              "variant": variant, "clean_forward": eager.cfg.clean_forward,
              **lockstep(eager, compiled, reference, args.epochs, 3.0 if eager.amp else 2.0, args.slack)}
    result["eager_img_per_s"] = round(timed_epoch(eager, args.epochs), 1)
    result["compiled_img_per_s"] = round(timed_epoch(compiled, args.epochs), 1)
    result["speedup"] = round(result["compiled_img_per_s"] / result["eager_img_per_s"], 3)
    result["cudagraph_skips"] = counters["inductor"]["cudagraph_skips"] - skips_before
    result["graphs_compiled"] = counters["stats"]["unique_graphs"] - graphs_before
    emit(result, args.json)
    return result


if __name__ == "__main__":
    sys.exit(0 if all(r["passed"] for r in main()) else 1)
