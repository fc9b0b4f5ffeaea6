"""Benchmarks: one module each, registered in :data:`BENCHMARKS` (see ``base.py``)."""

from lpa.eval.benchmarks.base import (
    BENCHMARKS,
    Benchmark,
    BenchmarkArgs,
    data_dir_from_env,
    register_benchmark,
)

__all__ = ["BENCHMARKS", "Benchmark", "BenchmarkArgs", "data_dir_from_env", "register_benchmark"]
