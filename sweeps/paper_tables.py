"""The paper's tables as data: a table's setting, and the numbers it reports, for scripts that train it
or print a reproduction beside it. Importable without Ray or MLflow (the bare GPU machines lack them).

Accuracies are top-1 test accuracy in %, (mean, std) over 5 runs, as printed in the paper.
"""

# Table 12: MAMix-DRW on CIFAR-10 long-tailed, ratio 300, ResNet-32, the CIFAR schedule of appendix A.1
# (200 epochs, lr x0.01 at 160 and 180, DRW at 160), by omega.
TABLE12_SETTING = dict(dataset="cifar10", imbalance="long_tailed", ratio=300.0, model="resnet32", method="mamix_drw",
                       epochs=200, milestones=[160, 180], drw_epoch=160)
TABLE12 = {0.125: (74.64, 0.17), 0.25: (74.85, 0.28), 0.5: (74.70, 0.75), 1.0: (74.66, 0.36), 2.0: (74.21, 0.56),
           4.0: (74.05, 0.50), 8.0: (73.52, 0.52)}
