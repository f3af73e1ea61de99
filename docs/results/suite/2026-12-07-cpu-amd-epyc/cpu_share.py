"""The CPU's time during a run, from /proc/stat's cpu line sampled every 5 s (sample_proc_stat.sh):
the share taken by processes at nice 0 (user, system, irq, softirq, steal), by niced ones (nice), and
left idle (idle, iowait).

    python cpu_share.py 2-proc-stat.txt
"""
import collections
import sys

shares = []
previous = None
for line in open(sys.argv[1]):
    fields = list(map(int, line.split()[2:10]))  # user nice system idle iowait irq softirq steal
    if previous:
        d = [a - b for a, b in zip(fields, previous)]
        total = sum(d)
        shares.append(((d[0] + d[2] + d[5] + d[6] + d[7]) / total, d[1] / total, (d[3] + d[4]) / total))
    previous = fields
n = len(shares)
print(f"{n} intervals of 5 s; mean share at nice 0 {sum(s[0] for s in shares) / n:.3f}, "
      f"niced {sum(s[1] for s in shares) / n:.3f}, idle {sum(s[2] for s in shares) / n:.3f}")
print("intervals by share at nice 0 (tenths):", sorted(collections.Counter(round(s[0], 1) for s in shares).items()))
