"""The linear classifier's two options, crossed, on a short run: which one moves the numbers.

The authors' code (imbalanced-DL) has a bias-free linear head at ``nn.Linear``'s own initial draw
(``head_bias: false, head_init: pytorch``, this platform's default); Cao et al.'s LDAM-DRW code, which
this platform followed before, has a bias and draws the head Kaiming-normal with the convolutions
(``head_bias: true, head_init: kaiming_normal``). This trains every combination of the two options,
per method and seed, from one setting (by default the short digits run of
``tests/test_train.py::test_a_short_run_is_well_above_chance``), and tables the final test accuracy and
margin gap. The trainings run one after another in this process.

Written to ``--out``: ``runs.jsonl`` (one line per run: its options, method, seed and final metrics)
and ``heads.md`` (mean ± std over seeds).

    python bench/linear_head.py --out OUT                                # digits, erm and mixup_drw, 2 seeds
    python bench/linear_head.py --out OUT --methods mamix_drw --seeds 3 --set epochs=20 "milestones=[16, 18]"
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pandas as pd  # noqa: E402

from core.config import field_assignments  # noqa: E402
from core.models import HEAD_INITS  # noqa: E402
from core.reporting import markdown_table, summarise  # noqa: E402
from core.train import train  # noqa: E402

SHORT_RUN = dict(dataset="digits", epochs=12, milestones=[8, 10], drw_epoch=8, warmup_epochs=1, device="cpu")


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for runs.jsonl and heads.md")
    p.add_argument("--methods", nargs="+", default=["erm", "mixup_drw"])
    p.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1 of every combination")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="TrainConfig fields over the short digits run (YAML values)")
    args = p.parse_args(argv)
    setting = {**SHORT_RUN, **field_assignments(args.set)}
    os.makedirs(args.out, exist_ok=True)
    rows = []
    with open(os.path.join(args.out, "runs.jsonl"), "w") as log:
        for method, bias, init, seed in itertools.product(args.methods, (False, True), HEAD_INITS, range(args.seeds)):
            metrics = train({**setting, "method": method, "head_bias": bias, "head_init": init, "seed": seed})
            row = {"method": method, "head_bias": bias, "head_init": init, "seed": seed, **metrics}
            log.write(json.dumps(row) + "\n")
            log.flush()
            rows.append(row)
            print(f"{method} head_bias={bias} head_init={init} seed={seed}: test_acc {metrics['test_acc']:.4f}",
                  flush=True)
    table = summarise(pd.DataFrame(rows), ["method", "head_bias", "head_init"],
                      {"test_acc": "test acc (final epoch)", "margin_gap": "margin gap"})
    table = table[["method", "head_bias", "head_init", "n", "test acc (final epoch)", "margin gap"]]
    text = f"Linear head options, {json.dumps(setting)}, mean ± std over seeds\n\n{markdown_table(table)}\n"
    with open(os.path.join(args.out, "heads.md"), "w") as f:
        f.write(text)
    print(text)
    return table


if __name__ == "__main__":
    main()
