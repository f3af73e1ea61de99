"""One script per experiment of the paper; all share ``sweeps.cli`` and the runner in ``core.sweep``."""
