"""Each trial run's last epoch and its best (test-selected) epoch from an exported history.csv.

    python summary.py OUT/history.csv
"""
import sys

import pandas as pd

history = pd.read_csv(sys.argv[1])
for name, run in history.groupby("run_name"):
    last = run.loc[run["step"].idxmax()]
    best = run.loc[run["test_acc"].idxmax()]
    print(f"{name}: epochs {int(run['step'].min())}-{int(last['step'])} ({len(run)} rows); last epoch "
          f"{int(last['step'])}: test_acc {last['test_acc']:.4f}, many {last['many_shot_acc']:.4f}, "
          f"medium {last['medium_shot_acc']:.4f}, few {last['few_shot_acc']:.4f}, margin_gap {last['margin_gap']:.4f}; "
          f"best epoch {int(best['step'])}: test_acc {best['test_acc']:.4f}; wall_s {last.get('wall_s', float('nan')):.0f}")
