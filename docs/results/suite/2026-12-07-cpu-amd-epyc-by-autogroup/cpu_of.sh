#!/bin/bash
# CPU seconds used by everything outside the niced run's autogroup while "$@" runs (the machine is otherwise quiet)
RUN=$(pgrep -f "extreme_imbalance.py --preset paper" | head -1)
g() { python3 - "$RUN" <<'PY'
import os,sys
grp=open(f"/proc/{sys.argv[1]}/autogroup").read().split()[0]; t=0
for p in filter(str.isdigit, os.listdir("/proc")):
    try:
        if open(f"/proc/{p}/autogroup").read().split()[0]==grp:
            f=open(f"/proc/{p}/stat").read().rsplit(")",1)[1].split(); t+=int(f[11])+int(f[12])
    except Exception: pass
s=list(map(int,open("/proc/stat").readline().split()[1:9]))
print(sum(s)-s[3]-s[4], t)
PY
}
read b0 r0 < <(g); t0=$(date +%s.%N)
"$@" > /tmp/cpuof.out 2>&1
read b1 r1 < <(g); t1=$(date +%s.%N)
python3 -c "print(f'cpu {(($b1-$b0)-($r1-$r0))/100:.1f} s, wall {$t1-$t0:.1f} s')"
