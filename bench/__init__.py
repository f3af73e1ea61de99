"""Benchmarks of the training step and of sweep packing (see docs/PERFORMANCE.md)."""
