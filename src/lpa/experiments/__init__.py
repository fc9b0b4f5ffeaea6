"""Experiments: a spec of models x methods x seeds x an evaluation suite -> tables and plots."""

from lpa.experiments.spec import ExperimentSpec, MethodEntry, load_spec

__all__ = ["ExperimentSpec", "MethodEntry", "load_spec", "run_experiment"]


def run_experiment(*args, **kwargs):  # noqa: ANN002, ANN003 - lazy import keeps `lpa --help` fast
    from lpa.experiments.grid import run_experiment as _run

    return _run(*args, **kwargs)
