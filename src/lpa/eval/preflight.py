"""Check a suite before any model is loaded: every plugin is built and every file it reads is found.

A run over ``smoke;harmbench`` without the HarmBench file used to generate all of ``smoke`` and
only then stop.  :func:`prepare_suite` creates every attack, judge and benchmark, runs each
plugin's cheap :meth:`~lpa.plugins.Plugin.check` (template and shot files, judge weights) and
loads every benchmark's samples (a few small files), then raises one :class:`LpaError` that lists
every problem found.  The runner reuses what it built, so nothing is loaded twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lpa.errors import LpaError
from lpa.eval.attacks import ATTACKS, Attack
from lpa.eval.benchmarks import BENCHMARKS, Benchmark
from lpa.eval.judges import JUDGES, Judge
from lpa.eval.suite import EvalSuite
from lpa.plugins import Plugin, PluginSpec, create, parse_spec, spec_label
from lpa.records import Sample

T = TypeVar("T")
PluginT = TypeVar("PluginT", bound=Plugin[Any])


@dataclass
class PreparedSuite:
    """The suite's plugins, created and checked, and each benchmark's loaded samples."""

    attacks: list[Attack[Any]]
    judges: list[Judge[Any]]
    benchmarks: list[tuple[Benchmark[Any], list[Sample]]]


def prepare_suite(suite: EvalSuite) -> PreparedSuite:
    """Create and check every plugin of ``suite`` and load its benchmarks; one error lists every problem."""
    prepared, problems = _prepare(suite)
    if problems:
        count = f"{len(problems)} problems" if len(problems) > 1 else "1 problem"
        raise LpaError(f"The evaluation suite cannot run ({count}; nothing was loaded or generated):\n"
                       + "\n".join(f"- {p}" for p in problems))
    return prepared


def suite_problems(suite: EvalSuite) -> list[str]:
    """Every problem :func:`prepare_suite` would raise for, as a list (empty when the suite can run)."""
    return _prepare(suite)[1]


def _prepare(suite: EvalSuite) -> tuple[PreparedSuite, list[str]]:
    problems: list[str] = []

    def attack(spec: PluginSpec) -> Attack[Any]:
        return _checked(create(ATTACKS, spec, **seed_arg(ATTACKS, spec, suite.seed)))

    def judge(spec: PluginSpec) -> Judge[Any]:
        return _checked(create(JUDGES, spec))

    def benchmark(spec: PluginSpec) -> tuple[Benchmark[Any], list[Sample]]:
        return _loaded(create(BENCHMARKS, spec, **bench_args(spec, suite)))

    attacks = [_attempt(problems, "attack", spec, attack) for spec in suite.attacks]
    judges = [_attempt(problems, "judge", spec, judge) for spec in suite.judges]
    benchmarks = [_attempt(problems, "benchmark", spec, benchmark) for spec in suite.benchmarks]
    if suite.utility is not None and suite.utility.file is not None and not Path(suite.utility.file).is_file():
        problems.append(f"utility: MMLU file not found: {suite.utility.file}")
    built = PreparedSuite([a for a in attacks if a is not None], [j for j in judges if j is not None],
                          [b for b in benchmarks if b is not None])
    return built, problems  # with problems the caller discards what was built


def _attempt(problems: list[str], kind: str, spec: PluginSpec, build: Callable[[PluginSpec], T]) -> T | None:
    try:
        return build(spec)
    except (LpaError, OSError, ValueError) as exc:
        problems.append(f"{kind} {spec_label(spec)!r}: {exc}")
        return None


def _checked(plugin: PluginT) -> PluginT:
    plugin.check()
    return plugin


def _loaded(bench: Benchmark[Any]) -> tuple[Benchmark[Any], list[Sample]]:
    return bench, bench.load()


def bench_args(spec: PluginSpec, suite: EvalSuite) -> dict[str, Any]:
    """The suite's data folder and limit, unless the benchmark's own spec sets them."""
    given = parse_spec(spec)[1]
    args: dict[str, Any] = {}
    if suite.data_dir and "data_dir" not in given:
        args["data_dir"] = suite.data_dir
    if suite.limit and "limit" not in given:
        args["limit"] = suite.limit
    return args


def seed_arg(registry: Any, spec: PluginSpec, seed: int) -> dict[str, Any]:
    """Pass the suite seed to attacks that take one (unless the spec sets it)."""
    name, given = parse_spec(spec)
    cls = registry.get(name)
    return {"seed": seed} if "seed" in cls.Args.model_fields and "seed" not in given else {}
