"""The CPU's time through a run from sample_cpu.py's lines: the share taken by the niced run's autogroup,
by everything else (the suite), and left idle.

    python cpu_share.py samples.txt
"""
import sys

rows = [list(map(int, [line.split()[0], *line.split()[2:]])) for line in open(sys.argv[1])]
shares = []
for before, after in zip(rows, rows[1:]):
    stat = [a - b for a, b in zip(after[1:11], before[1:11])]  # user nice system idle iowait irq softirq steal ...
    total, idle = sum(stat[:8]), stat[3] + stat[4]
    run = after[-1] - before[-1]
    if run >= 0:  # negative: a process of the run's group ended and took its time with it
        shares.append(((total - idle - run) / total, run / total, idle / total))
n = len(shares)
print(f"{n} intervals of 5 s over {rows[-1][0] - rows[0][0]} s; mean share of the two cores: the suite "
      f"{sum(s[0] for s in shares) / n:.3f}, the niced run {sum(s[1] for s in shares) / n:.3f}, "
      f"idle {sum(s[2] for s in shares) / n:.3f}")
