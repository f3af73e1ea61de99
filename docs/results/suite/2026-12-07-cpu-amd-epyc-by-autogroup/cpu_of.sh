#!/bin/bash
# CPU seconds used by everything outside the niced run's autogroup (its PID found by pgrep, or RUN_PID) while "$@" runs
RUN=${RUN_PID:-$(pgrep -f "extreme_imbalance.py --preset paper" | head -1)}
g() { python3 "$(dirname "$0")/sample_cpu.py" --once "$RUN"; }
read b0 r0 < <(g); t0=$(date +%s.%N)
"$@" > /tmp/cpuof.out 2>&1
read b1 r1 < <(g); t1=$(date +%s.%N)
python3 -c "print(f'cpu {(($b1-$b0)-($r1-$r0))/100:.1f} s, wall {$t1-$t0:.1f} s')"
