"""Numbers the paper reports, as data, for tables that print them beside a reproduction.

Top-1 test accuracy in %, (mean, std) over 5 runs, as printed in the paper.
"""

# Table 12: MAMix-DRW on CIFAR-10 long-tailed, ratio 300, by omega.
TABLE12 = {0.125: (74.64, 0.17), 0.25: (74.85, 0.28), 0.5: (74.70, 0.75), 1.0: (74.66, 0.36), 2.0: (74.21, 0.56),
           4.0: (74.05, 0.50), 8.0: (73.52, 0.52)}
