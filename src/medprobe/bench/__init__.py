"""Benchmarks that compare the naive way with medprobe's, measured side by side in one run.

Each module has ``run(quick) -> dict`` (used by ``medprobe bench``) and a ``main`` for
``python benchmarks/bench_<name>.py``. Absolute times depend on the machine; the ratios are the point.
"""
