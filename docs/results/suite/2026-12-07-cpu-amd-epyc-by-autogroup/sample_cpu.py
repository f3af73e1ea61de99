"""Every 5 s until killed: the time, /proc/stat's cpu line (jiffies) and the CPU time (utime + stime, jiffies)
of the processes in one scheduler autogroup, the one of the process given (a niced run beside the suite).
/proc/stat's "nice" column cannot separate that run from the suite: Ray starts its workers at nice 15
(worker_niceness), so the suite's own trials count as niced there too.

    python sample_cpu.py PID > samples.txt
    python sample_cpu.py --once PID   # one line: the machine's busy jiffies and the group's (cpu_of.sh)
"""
import os
import sys
import time


def autogroup_of(pid: str) -> str:
    return open(f"/proc/{pid}/autogroup").read().split()[0]


def group_jiffies(group: str) -> int:
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if autogroup_of(pid) == group:
                fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError):
            pass  # a process that ended meanwhile
    return total


def busy_jiffies(cpu_line: str) -> int:
    """All of /proc/stat's first eight cpu columns but idle and iowait."""
    columns = list(map(int, cpu_line.split()[1:9]))
    return sum(columns) - columns[3] - columns[4]


if __name__ == "__main__":
    once = sys.argv[1] == "--once"
    group = autogroup_of(sys.argv[-1])
    while True:
        cpu_line = open("/proc/stat").readline().strip()
        if once:
            print(busy_jiffies(cpu_line), group_jiffies(group))
            break
        print(int(time.time()), cpu_line, group_jiffies(group), flush=True)
        time.sleep(5)
