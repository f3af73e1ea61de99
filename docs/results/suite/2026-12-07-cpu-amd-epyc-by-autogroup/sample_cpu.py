"""Every 5 s until killed: the time, /proc/stat's cpu line (jiffies) and the CPU time (utime + stime, jiffies)
of the processes in one scheduler autogroup, the one of the process given (a niced run beside the suite).
/proc/stat's "nice" column cannot separate that run from the suite: Ray starts its workers at nice 15
(worker_niceness), so the suite's own trials count as niced there too.

    python sample_cpu.py PID > samples.txt
"""
import os
import sys
import time

group = open(f"/proc/{sys.argv[1]}/autogroup").read().split()[0]


def group_jiffies() -> int:
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if open(f"/proc/{pid}/autogroup").read().split()[0] == group:
                fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError):
            pass  # a process that ended meanwhile
    return total


while True:
    print(int(time.time()), open("/proc/stat").readline().strip(), group_jiffies(), flush=True)
    time.sleep(5)
