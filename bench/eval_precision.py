"""Evaluation precision: one run's final weights evaluated in fp32, as the platform evaluates, and under
bf16 autocast, as it evaluated CUDA runs (amp's default) before 2026-12-07, on the same test set.

bf16 keeps 8 bits of mantissa: logits near 10 round to steps of 0.0625, so two close classes can tie
(``argmax`` then picks the lower label) and every margin (eq. 11) moves by up to half a step. This
trains one run (fp32, one process), then reports both evaluations' accuracies and margin statistics,
the share of test images whose predicted class differs, and the share whose two largest bf16 logits
are equal. On the CPU, autocast runs the convolutions and the head in bf16 as CUDA's does, through other
kernels, so the rounding is of the same size but not bit for bit the GPU's.

Written to ``--json`` (appended): one line per precision with the run's settings.

    python bench/eval_precision.py --json OUT.jsonl                          # digits, 30 epochs
    python bench/eval_precision.py --json OUT.jsonl --set dataset=cifar10 data_root=/abs/dir ratio=300 \\
        epochs=20 "milestones=[16, 18]" drw_epoch=16
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from bench.summarise import emit  # noqa: E402
from bench.throughput import device_name  # noqa: E402
from core.config import TrainConfig, field_assignments  # noqa: E402
from core.evaluation import accuracy_report, eval_logits  # noqa: E402
from core.margins import margin_report  # noqa: E402
from core.train import run_epoch, set_learning_rate, set_up  # noqa: E402


@torch.no_grad()
def bf16_logits(pack) -> torch.Tensor:
    """Member 0's test logits as the platform computed them under amp before 2026-12-07."""
    data, out = pack.data, []
    pack.net.eval()
    for start in range(0, len(data.y_test), 2 * pack.cfg.batch_size):
        x = data.eval_inputs("test", slice(start, start + 2 * pack.cfg.batch_size))
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out.append(pack.net.forward_shared(x).float())
    pack.net.train()
    return torch.cat(out, dim=1)[0]


def report(logits: torch.Tensor, pack) -> dict[str, float]:
    data, cfg = pack.data, pack.cfg
    return {**accuracy_report(logits, data.y_test, data.counts, cfg.many_shot, cfg.few_shot),
            **margin_report(logits, data.y_test, data.counts)}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="TrainConfig fields (YAML values); default: MAMix-DRW on digits, on the CPU")
    p.add_argument("--json", help="append one JSON line per precision to this file")
    args = p.parse_args(argv)
    cfg = TrainConfig.from_dict({"method": "mamix_drw", "device": "cpu", **field_assignments(args.set)})
    pack = set_up([cfg])
    start = time.perf_counter()
    for epoch in range(cfg.epochs):
        set_learning_rate(pack, epoch)
        run_epoch(pack, epoch)
    fp32 = eval_logits(pack.net, pack.data, "test", 2 * cfg.batch_size)[0]
    bf16 = bf16_logits(pack)
    top2 = bf16.topk(2, dim=1).values
    common = {"dataset": cfg.dataset, "ratio": cfg.ratio, "model": cfg.model, "method": cfg.method,
              "epochs": cfg.epochs, "seed": cfg.seed, "device": device_name(pack.device),
              "torch": torch.__version__, "python": platform.python_version(),
              "train_s": round(time.perf_counter() - start, 1), "test_images": len(pack.data.y_test),
              "predictions_differ": float((fp32.argmax(1) != bf16.argmax(1)).float().mean()),
              "bf16_top2_tied": float((top2[:, 0] == top2[:, 1]).float().mean()),
              "max_abs_logit": float(fp32.abs().max()), "max_logit_change": float((fp32 - bf16).abs().max())}
    rows = []
    for precision, logits in (("fp32", fp32), ("bf16", bf16)):
        metrics = report(logits, pack)
        rows.append({"precision": precision, **common,
                     **{k: v for k, v in metrics.items() if not k.startswith(("class_acc_", "class_margin_"))}})
        emit(rows[-1], args.json)
    return rows


if __name__ == "__main__":
    main()
