"""Each worker's files in the order it ran them: start, end and span in seconds from the first test's start,
and when the worker's last test ended.   python timeline_summary.py DIR   (DIR holds timeline-gw*.tsv)"""
import collections
import glob
import os
import sys

folder = sys.argv[1]
paths = sorted(glob.glob(os.path.join(folder, "timeline-gw*.tsv")))
rows = {p: [line.rstrip("\n").split("\t") for line in open(p)] for p in paths}
t0 = min(float(start) for lines in rows.values() for start, _, _ in lines)
for path, lines in rows.items():
    files = collections.OrderedDict()
    for start, end, nodeid in lines:
        name = nodeid.split("::")[0]
        first, last = files.get(name, (float(start), float(end)))
        files[name] = (min(first, float(start)), max(last, float(end)))
    print(os.path.basename(path), "end", round(max(float(end) for _, end, _ in lines) - t0, 1))
    for name, (first, last) in files.items():
        print(f"   {first - t0:7.1f} {last - t0:7.1f} {last - first:6.1f} {name}")
