"""Benchmarks: re-runnable measurements (python -m bench.<name>); results in docs/PERFORMANCE.md."""
