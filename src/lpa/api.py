"""The Python API: the CLI's verbs as plain functions, keyword arguments named after the flags.

    import lpa

    run = lpa.train(model="smollm2-135m", method="lpa", traits="big-five", preset="embedded", out="runs/lpa")
    base = lpa.evaluate(model="smollm2-135m", benchmarks=["smoke"], judges=["keyword"], out="runs/base")
    tuned = lpa.evaluate(model="smollm2-135m", adapter=run.adapter, benchmarks=["smoke"], judges=["keyword"],
                         out="runs/lpa-eval")
    print(lpa.compare([base.out_dir, tuned.out_dir]))

``lpa train``, ``lpa eval``, ``lpa compare`` and ``lpa persona extract`` call exactly these functions
(``lpa.persona.extract`` lives with the persona package).  Every argument left ``None`` takes the
config file's value, else the preset's, else the default, as on the command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lpa.io import atomic_write_text
from lpa.plugins import PluginSpec

if TYPE_CHECKING:
    from lpa.eval.runner import Results
    from lpa.models.loader import LoadedModel
    from lpa.training.trainer import TrainResult

Specs = str | Sequence[PluginSpec] | None


def train(
    *,
    model: str | None = None,
    method: str | None = None,
    traits: str | None = None,
    layout: str | None = None,
    preset: str | None = None,
    out: str | Path | None = None,
    steps: int | None = None,
    seed: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    data_dir: str | Path | None = None,
    report_to: Sequence[str] | None = None,
    config: str | Path | None = None,
    overrides: Sequence[str] | None = None,
    select: bool = False,
    **settings: Any,
) -> TrainResult:
    """Train a LoRA adapter (``lpa train``); rerunning with the same ``out`` resumes or returns the finished run.

    ``settings`` are any other training-config fields, nested ones as dicts
    (``trainer_args={"optim": "adamw_torch_fused"}``); ``overrides`` are ``--set key=value`` strings.
    ``select`` turns on checkpoint selection (``lpa train --select``; the ``selection`` block's defaults).
    """
    from lpa.training import build_train_config
    from lpa.training import train as run_training

    fields = dict(method=method, model=model, traits=traits, layout=layout, preset=preset, out=_str(out), steps=steps,
                  seed=seed, batch_size=batch_size, device=device, data_dir=_str(data_dir),
                  report_to=list(report_to) if report_to is not None else None, **settings)
    overrides = [*(["selection.enabled=true"] if select else []), *(overrides or [])]
    return run_training(build_train_config(config, overrides, **fields))


def evaluate(
    *,
    model: str,
    adapter: str | Path | None = None,
    benchmarks: Specs = None,
    attacks: Specs = None,
    judges: Specs = None,
    limit: int | None = None,
    max_new_tokens: int | None = None,
    batch_size: int | None = None,
    system: str | None = None,
    mmlu: int | None = None,
    examples: int | None = None,
    out: str | Path = "runs/eval",
    backend: str | None = None,
    base_url: str | None = None,
    served_model: str | None = None,
    lora_name: str | None = None,
    concurrency: int | None = None,
    data_dir: str | Path | None = None,
    config: str | Path | None = None,
    overrides: Sequence[str] | None = None,
    device: str | None = None,
    dtype: str | None = None,
    progress: bool = False,
) -> Results:
    """Evaluate a model (+ adapter) on benchmarks x attacks x judges (``lpa eval``); reruns resume.

    Plugins are names, ``"name:key=value"`` strings (see :mod:`lpa.plugins` for the quoting rule) or
    ``{"name": ..., "args": {...}}`` dicts.  Writes ``results.json``, ``report.md`` and plots to ``out``.
    """
    from lpa.eval.runner import evaluate as run_eval
    from lpa.eval.suite import build_eval_suite

    suite = build_eval_suite(
        config, list(overrides or []), benchmarks=_specs(benchmarks), attacks=_specs(attacks), judges=_specs(judges),
        limit=limit, system=system, examples=examples, data_dir=_str(data_dir), max_new_tokens=max_new_tokens,
        batch_size=batch_size, mmlu=mmlu, backend=backend, base_url=base_url, served_model=served_model,
        lora_name=lora_name, concurrency=concurrency,
    )
    return run_eval(suite, model, adapter=adapter, out_dir=out, device=device, dtype=dtype, progress=progress)


@dataclass(frozen=True)
class Comparison:
    """``lpa compare``'s output: the side-by-side (or per-seed) table and the paired tests against the first run."""

    table: str
    paired: str | None = None

    def __str__(self) -> str:
        return self.table if self.paired is None else f"{self.table}\n\n{self.paired}"


def compare(
    runs: Sequence[str | Path],
    *,
    out: str | Path | None = None,
    seeds: bool = False,
    paired: bool = True,
    n_boot: int = 10_000,
    base: str | Path | None = None,
) -> Comparison:
    """Compare evaluation runs side by side (the first is the baseline), or mean ± sd when they are ``seeds``.

    With ``seeds`` and a ``base`` run, the seeds' mean is also tested against ``base``, paired by behaviour
    (bootstrap CI over behaviours, sign-flip p).  With ``out``, writes ``compare.md``, ``paired.md`` and plots there.
    """
    from lpa.errors import LpaError
    from lpa.eval.per_template import template_paired_report
    from lpa.eval.stats import paired_report, pooled_paired_report
    from lpa.report import aggregate
    from lpa.report import compare as compare_runs

    runs = list(runs)
    if base is not None and not seeds:
        raise LpaError("A base run is for seeds (--seeds): without it, the first run is the baseline.")
    table = aggregate(runs) if seeds else compare_runs(runs, out)
    tests = None
    if paired and seeds and base is not None:
        tests = pooled_paired_report(base, runs, n_boot=n_boot)
        if out is not None:
            atomic_write_text(Path(out) / "paired.md", tests + "\n")
    if paired and not seeds and len(runs) > 1:
        per_template = template_paired_report(runs[0], runs[1:])  # in-the-wild: each human template paired
        tests = "\n\n".join(part for part in (paired_report(runs[0], runs[1:], n_boot=n_boot), per_template) if part)
        if out is not None:
            atomic_write_text(Path(out) / "paired.md", tests + "\n")
    return Comparison(table, tests)


def load(model: str, *, adapter: str | Path | None = None, device: str | None = None, dtype: str | None = None,
         merge_adapter: bool = False) -> LoadedModel:
    """A model (alias, HF id, local dir or ``.gguf``) and its tokenizer, with an adapter if given, in eval mode."""
    from lpa.models.loader import load as load_model

    return load_model(model, adapter=adapter, device=device, dtype=dtype, merge_adapter=merge_adapter)


def _str(value: str | Path | None) -> str | None:
    return None if value is None else str(value)


def _specs(value: Specs) -> str | list[PluginSpec] | None:
    return value if value is None or isinstance(value, str) else list(value)


__all__ = ["Comparison", "compare", "evaluate", "load", "train"]
