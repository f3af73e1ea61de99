"""The fused network's executors against ``torch.vmap``: the measurement behind core/fused.py's choice.

K members of one architecture (each initialised under its own seed) take SGD steps on the same random
batches, (K, B, C, H, W), in three ways:

* ``grouped`` and ``per_member``: ``core.fused.FusedNetwork``, the engine's two executors;
* ``vmap``: ``torch.func`` as its tutorials fuse ensembles: ``stack_module_state`` over the members,
  ``vmap(grad(loss))`` over ``functional_call`` of the member architecture.

A step is the forward pass, the cross-entropy of every member (summed, so each member's gradient is its
own), the backward pass and one SGD step (Table 12's lr, momentum and weight decay, over the stacked tensors
in all three). ``--precisions fp32 bf16`` measures both, bf16 being autocast over the forward pass and
loss; ``--channels-last`` gives the executors that layout, as the engine does on CUDA.

Under ``vmap`` BatchNorm normalises with the batch's statistics but does not update its running
statistics, which ``vmap`` cannot write in place (``torch.func.replace_all_batch_norm_modules_``): it
does a little less work than the executors. On the CPU its BatchNorm backward also refuses autocast's
mixed dtypes, so its bf16 row there holds that error. The losses of the first two steps of the three
ways are compared (same weights, same batch: the second step checks the first update) before any
timing, so the timings are of the same computation. One JSON line per precision, K and way, printed
and appended to ``--json``.

    python bench/executors.py --device cpu --model resnet32 --members 4 --batch 128 --steps 3 --warmup 1
    python bench/executors.py --device cpu --model small_cnn --input 1 8 8 --members 8 --batch 64
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from typing import Any, Callable, Iterator

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.func import functional_call, grad_and_value, replace_all_batch_norm_modules_, stack_module_state  # noqa: E402,E501

from bench.fused_throughput import timed  # noqa: E402
from bench.summarise import emit  # noqa: E402
from bench.throughput import device_name  # noqa: E402
from core.config import TrainConfig  # noqa: E402
from core.fused import FusedNetwork  # noqa: E402
from core.models import create_model  # noqa: E402
from sweeps.paper_tables import TABLE12_SETTING  # noqa: E402

WAYS = ("grouped", "per_member", "vmap")


def members(model: str, k: int, in_channels: int, classes: int, device: torch.device) -> list[torch.nn.Module]:
    """K member models, member m initialised under seed m."""
    nets = []
    for m in range(k):
        torch.manual_seed(m)
        nets.append(create_model(model, classes, in_channels).to(device).train())
    return nets


def sgd(params: list[torch.Tensor]) -> torch.optim.SGD:
    """The engine's optimiser in Table 12's setting (the paper's lr, momentum and weight decay for CIFAR)."""
    cfg = TrainConfig.from_dict(TABLE12_SETTING)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def fused_step(nets: list[torch.nn.Module], executor: str, amp: bool, channels_last: bool
               ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A step of the engine's fused network; returns the members' losses (K,)."""
    net = FusedNetwork(nets, executor=executor, channels_last=channels_last)
    optimizer = sgd(list(net.parameters()))

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = net(x)  # (K, B, classes)
            losses = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none").view(y.shape).mean(1)
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        optimizer.step()
        return losses.detach()

    return step


def vmap_step(nets: list[torch.nn.Module], amp: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A step of ``vmap(grad(loss))`` over ``functional_call``; returns the members' losses (K,)."""
    nets = [copy.deepcopy(n) for n in nets]
    for n in nets:
        replace_all_batch_norm_modules_(n)
    params, buffers = stack_module_state(nets)
    template = copy.deepcopy(nets[0]).to("meta")

    def loss(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            return F.cross_entropy(functional_call(template, (p, b), (x,)).float(), y)

    grads = torch.vmap(grad_and_value(loss))
    optimizer = sgd(list(params.values()))

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        g, losses = grads(params, buffers, x, y)
        for name, p in params.items():
            p.grad = g[name]
        optimizer.step()
        return losses.detach()

    return step


def repeated(step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor
             ) -> Iterator[None]:
    """``step`` on the same batch at every ``next``: the run ``fused_throughput.timed`` times."""
    while True:
        step(x, y)
        yield


def measure(args: argparse.Namespace, k: int, amp: bool) -> list[dict[str, Any]]:
    """Each way's img/s for K members, and how far its first two steps' losses are from those of the
    first way that ran; a way that cannot run here gets a row with its error instead."""
    device = torch.device(args.device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(k, args.batch, *args.input, generator=gen).to(device)
    y = torch.randint(0, args.classes, (k, args.batch), generator=gen).to(device)
    nets = members(args.model, k, args.input[0], args.classes, device)
    common = {"members": k, "model": args.model, "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
              "amp": amp, "device": args.device, "device_name": device_name(device), "torch": torch.__version__,
              "threads": torch.get_num_threads()}
    steps, checked, rows = {}, {}, []
    for way in args.ways:
        try:
            step = vmap_step(nets, amp) if way == "vmap" else fused_step(nets, way, amp, args.channels_last)
            checked[way] = torch.stack([step(x, y), step(x, y)])
            steps[way] = step
        except Exception as err:  # noqa: BLE001 - e.g. vmap under CPU autocast: reported, the others measured
            rows.append({"way": way, **common, "error": f"{type(err).__name__}: {str(err).splitlines()[0]}"})
    reference = next(iter(checked.values()), None)
    for way, step in steps.items():
        *_, seconds = timed([repeated(step, x, y)], device, args.steps, args.warmup)
        rows.append({"way": way, **common, "img_per_s": round(k * args.batch * args.steps / seconds, 2),
                     "loss_max_abs_diff": [float(d) for d in (checked[way] - reference).abs().amax(1)],
                     "channels_last": args.channels_last and way != "vmap"})
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="resnet32")
    p.add_argument("--input", type=int, nargs=3, default=[3, 32, 32], metavar=("C", "H", "W"))
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--members", type=int, nargs="+", default=[4])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    p.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32"],
                   help="bf16: autocast over the forward pass and loss")
    p.add_argument("--channels-last", action="store_true", help="channels-last layout for the executors")
    p.add_argument("--json", help="append one JSON line per precision, K and way to this file")
    args = p.parse_args(argv)
    rows = []
    for precision in args.precisions:
        for k in args.members:
            for row in measure(args, k, precision == "bf16"):
                emit(row, args.json)
                rows.append(row)
    return rows


if __name__ == "__main__":
    main()
