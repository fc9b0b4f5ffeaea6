"""Experiments: a spec of models x methods x seeds x an evaluation suite -> tables and plots.

``run_experiment`` is loaded on first use (it imports torch), so ``import lpa.experiments`` and
``lpa --help`` stay fast; it is the function itself, with its signature and docstring.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lpa.experiments.spec import ExperimentSpec, MethodEntry, load_spec

if TYPE_CHECKING:
    from lpa.experiments.grid import run_experiment

__all__ = ["ExperimentSpec", "MethodEntry", "load_spec", "run_experiment"]


def __getattr__(name: str) -> Any:
    if name == "run_experiment":
        from lpa.experiments.grid import run_experiment

        return run_experiment
    raise AttributeError(f"module 'lpa.experiments' has no attribute {name!r}")
