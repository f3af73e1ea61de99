"""Core of the platform: the paper's equations, data, models and the training function.

Nothing here imports Ray or MLflow, and nothing runs at import time.
"""
