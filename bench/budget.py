"""The physical bound and the Table 12 budget, as arithmetic a reader can re-run.

Counts the FLOPs of ResNet-32 (CIFAR, 10 classes) with ``torch.utils.flop_counter.FlopCounterMode``:
one forward of a 1x3x32x32 input, and one forward + backward (the counter covers convolutions and
matrix products, which are nearly all of the work). Training costs about 3x a forward; the measured
forward + backward count is printed beside that rule. Against an accelerator's peak (default: H100
SXM, bf16 dense, 989 TFLOP/s) this gives an upper bound on training images/s that no real run
reaches (ResNet-32 is small and bound by memory traffic and kernel launches, not by math).

Then the Table 12 grid (omegas x seeds x epochs x training images per epoch, CIFAR-10 long-tailed at
ratio 100 and 300, ``core.imbalance.class_counts``) and how long it takes at given throughputs.

    python bench/budget.py --img-per-s 300 20000
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from core.imbalance import class_counts  # noqa: E402
from core.models import create_model  # noqa: E402


def flops(model_name: str = "resnet32", num_classes: int = 10) -> tuple[int, int]:
    """FLOPs of one forward, and of one forward + backward, for a single 3x32x32 image."""
    model = create_model(model_name, num_classes, 3)
    x = torch.randn(1, 3, 32, 32)
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    forward = counter.get_total_flops()
    model.train()
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(2, 3, 32, 32)).sum().backward()  # batch 2: BatchNorm needs more than one value
    return forward, counter.get_total_flops() // 2


def hours(images: float, img_per_s: float) -> float:
    return images / img_per_s / 3600


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="accelerator peak (H100 SXM bf16 dense: 989)")
    p.add_argument("--omegas", type=int, default=7)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--test-images", type=int, default=10000, help="evaluated (forward only) after every epoch")
    p.add_argument("--img-per-s", type=float, nargs="*", default=[], help="training throughputs to convert")
    args = p.parse_args(argv)

    forward, train = flops()
    rule = 3 * forward
    bound = args.peak_tflops * 1e12 / rule
    print(f"ResNet-32 forward, 1x3x32x32:           {forward:,} FLOPs ({forward / 1e9:.4f} GFLOP)")
    print(f"forward + backward, measured per image: {train:,} FLOPs ({train / forward:.2f} x forward)")
    print(f"training per image, 3 x forward:        {rule:,} FLOPs ({rule / 1e9:.4f} GFLOP)")
    print(f"peak {args.peak_tflops:g} TFLOP/s -> upper bound {bound:,.0f} training images/s "
          f"(forward-only evaluation: {args.peak_tflops * 1e12 / forward:,.0f} images/s)")
    print()
    runs = args.omegas * args.seeds
    for ratio in (100, 300):
        counts = class_counts(5000, 10, ratio)
        n = sum(counts)
        images = runs * args.epochs * n
        evals = runs * args.epochs * args.test_images
        print(f"ratio {ratio}: class_counts(5000, 10, {ratio}) = {counts}, {n:,} images per epoch")
        print(f"  Table 12 grid: {args.omegas} omegas x {args.seeds} seeds x {args.epochs} epochs = {runs} runs, "
              f"{images:,} training images, {evals:,} test images evaluated")
        # A forward-only test image costs about 1/3 of a training image.
        work = images + evals / 3
        print(f"  at the bound: {hours(work, bound) * 3600:,.1f} s (training + evaluation)")
        for t in args.img_per_s:
            print(f"  at {t:,g} training images/s: {hours(images, t):,.2f} h training, "
                  f"{hours(work, t):,.2f} h with evaluation (one device, runs back to back)")
    print()
    print(f"the training images of one epoch at ratio 100 ({sum(class_counts(5000, 10, 100)):,}) take, per run:")
    for t in args.img_per_s:
        print(f"  at {t:,g} images/s: {sum(class_counts(5000, 10, 100)) / t:,.1f} s per epoch, "
              f"{args.epochs * sum(class_counts(5000, 10, 100)) / t / 3600:,.2f} h per {args.epochs}-epoch run")


if __name__ == "__main__":
    main()
