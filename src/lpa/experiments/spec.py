"""The experiment spec: which models, methods (with their training settings), seeds and suite.

A method entry is a label for tables plus the training config fields it needs; ``method: base``
(or no method) means "evaluate the model as it is".  Example (``experiments/embedded.yaml``)::

    name: embedded
    models: [smollm2-135m]
    seeds: [0, 1, 2]
    methods:
      - {name: base}
      - {name: lpa, method: lpa, preset: embedded, traits: big-five}
      - {name: lat-harmful, method: lat-harmful, preset: embedded, seeds: [0]}
    eval: {benchmarks: [smoke], attacks: [direct], judges: [trained, keyword, refusal-probe]}

A method's ``seeds`` and ``models`` narrow its cells (three seeds for the method under test, one for a
baseline; an ablation only at the scale it tests); neither enters a cell's key, so narrowing a spec later
finds every finished cell again.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lpa.config import build_config
from lpa.eval.suite import EvalSuite
from lpa.training.selection_config import SelectionSettings


class MethodEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Label used in tables (unique within the spec).")
    method: str = Field("base", description="Training method (see `lpa train --help`), or 'base' for no training.")
    preset: str | None = Field(None, description="Training preset (paper | embedded).")
    traits: str | None = Field(None, description="Trait set for trait-based methods (built-in name or file).")
    train: dict[str, Any] = Field(default_factory=dict, description="Further training-config fields (nested).")
    seeds: list[int] | None = Field(
        None, description="This method's training seeds (default: the spec's seeds).  A study can afford several seeds "
        "for the method under test and one for each baseline; pooled tests use the seeds each method has.")
    models: list[str] | None = Field(
        None, description="The spec's models this method runs on (default: all), e.g. the ablations only at the scale "
        "whose effect they test.")
    extra_attacks: list[Any] = Field(
        default_factory=list,
        description="Attacks run only for this method's cells, on top of the suite's (e.g. the expensive ones on base "
        "and LPA only); same prompts, so comparisons stay paired.",
    )

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", value):
            raise ValueError(f"method label {value!r} may only use letters, digits, '.', '_' and '-'")
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or len(set(value)) != len(value)):
            raise ValueError(f"a method's seeds must be a non-empty list without repeats, got {value}")
        return value

    @property
    def trains(self) -> bool:
        return self.method != "base"


class AnalysesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap: bool = Field(True, description="Semantic overlap of training texts with each benchmark (MiniLM cosine).")
    embedder: str = Field("all-MiniLM-L6-v2", description="Sentence-embedding model for the overlap analysis.")


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("experiment", description="Experiment name.")
    out: str | None = Field(None, description="Output folder (default runs/<name>).")
    report_dir: str | None = Field(
        None, description="Folder for the report, tables, plots and spec copy (default: out). Set it when specs share "
        "one out folder of cells (e.g. an ablation reusing a study's base cells), so their reports don't overwrite.")
    models: list[str] = Field(default_factory=lambda: ["smollm2-135m"], description="Model specs to train and evaluate.")
    methods: list[MethodEntry] = Field(description="Methods to compare (base = untrained).")
    seeds: list[int] = Field(default_factory=lambda: [0], description="Training seeds; tables show mean ± sd over them.")
    data_dir: str | None = Field(None, description="Benchmark/training data folder (default $LPA_DATA_DIR).")
    device: str = Field("auto", description="Device for training and evaluation.")
    eval: EvalSuite = Field(default_factory=EvalSuite, description="The evaluation suite run on every cell.")
    analyses: AnalysesConfig = Field(default_factory=AnalysesConfig)
    baseline: str = Field("base", description="Method label whose misclassification rate ratios are taken against.")
    reference: str | None = Field("lat-harmful", description="Second method label for ratios (the harmful-data baseline).")
    compute_note: str | None = Field(None, description="Expected compute, shown in the report.")
    selection: SelectionSettings | None = Field(
        None, description="Checkpoint selection for every trained cell, by the same rule (lpa.training.selection); "
        "its split must be disjoint from the eval suite's prompts and its attacks must not be the suite's.")
    plan: PlanSettings = Field(default_factory=lambda: PlanSettings(), description="Cost estimate inputs for --plan.")

    @model_validator(mode="after")
    def _check(self) -> ExperimentSpec:
        from lpa.errors import unknown_choice
        from lpa.training import METHODS

        labels = [m.name for m in self.methods]
        if len(set(labels)) != len(labels):
            raise ValueError(f"method labels must be unique, got {labels}")
        for entry in self.methods:
            if entry.trains and entry.method not in METHODS:
                raise unknown_choice("training method", entry.method, [*METHODS.names(), "base"])
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        for entry in self.methods:
            unknown = [m for m in entry.models or [] if m not in self.models]
            if unknown or entry.models == []:
                raise ValueError(f"method {entry.name!r}: models {unknown or entry.models} are not among the spec's "
                                 f"models {self.models}; a method's models must be a non-empty subset of them")
        if self.selection is not None:
            tested = {_plugin_name(a) for a in self.eval.attacks} | {
                _plugin_name(a) for m in self.methods for a in m.extra_attacks}
            shared = sorted(tested & {_plugin_name(a) for a in self.selection.attacks})
            if shared:
                raise ValueError(f"selection.attacks {shared} are also test attacks of the eval suite; checkpoint "
                                 "selection must use held-in attacks the study does not report on")
            inline = [m.name for m in self.methods if "selection" in m.train]
            if inline:
                raise ValueError(f"methods {inline} set train.selection while the spec has a selection block; every "
                                 "cell is selected by the spec's one rule")
        return self

    def runs_on(self, entry: MethodEntry, model: str) -> bool:
        """Whether ``entry`` has cells for ``model`` (its own models list, or every model)."""
        return entry.models is None or model in entry.models

    def seeds_of(self, entry: MethodEntry) -> list[int]:
        """The seeds ``entry`` is trained with: its own list, or the spec's."""
        return self.seeds if entry.seeds is None else entry.seeds

    @property
    def all_seeds(self) -> list[int]:
        """Every seed any method uses, in the spec's order first (cells run seed-major over these)."""
        return list(dict.fromkeys([*self.seeds, *(s for m in self.methods for s in m.seeds or [])]))

    @property
    def most_seeds(self) -> int:
        """The most seeds a trained method has: what pooled power is quoted for (the method under test)."""
        return max((len(self.seeds_of(m)) for m in self.methods if m.trains), default=1)

    def seeds_text(self) -> str:
        """'0, 1, 2' or, when methods differ, '0, 1, 2 (sft, lat-harmful: 0)' for report headers."""
        default = ", ".join(map(str, self.seeds))
        own: dict[str, list[str]] = {}
        for m in self.methods:
            if m.trains and m.seeds is not None and m.seeds != self.seeds:
                own.setdefault(", ".join(map(str, m.seeds)), []).append(m.name)
        extra = "; ".join(f"{', '.join(names)}: {seeds}" for seeds, names in own.items())
        return f"{default} ({extra})" if extra else default

    @property
    def out_dir(self) -> Path:
        return Path(self.out or f"runs/{self.name}")

    @property
    def report_root(self) -> Path:
        """Where the report, tables, plots and the spec copy go (cells stay under :attr:`out_dir`)."""
        return Path(self.report_dir) if self.report_dir else self.out_dir


def _plugin_name(spec: Any) -> str:
    return str(spec["name"]) if isinstance(spec, dict) else str(spec).partition(":")[0].strip()


def suite_for(spec: ExperimentSpec, entry: MethodEntry | None = None) -> Any:
    """The spec's suite, with the data folder filled in and ``entry``'s extra attacks appended."""
    update: dict[str, Any] = {}
    if spec.data_dir and not spec.eval.data_dir:
        update["data_dir"] = spec.data_dir
    if entry is not None and entry.extra_attacks:
        update["attacks"] = [*spec.eval.attacks, *entry.extra_attacks]
    if not update:
        return spec.eval
    return EvalSuite.model_validate({**spec.eval.model_dump(mode="json"), **update})


class PlanSettings(BaseModel):
    """Measured unit times the plan's cost estimate multiplies (``lpa experiment SPEC --plan``)."""

    model_config = ConfigDict(extra="forbid")

    step_s: dict[str, float] = Field(default_factory=dict, description="Seconds per training step, by model spec "
                                     "(measured with bench/lat_step.py; a method without the attacker costs less).")
    generation_s: dict[str, float] = Field(default_factory=dict, description="Seconds per generated answer, by model "
                                           "spec (measured: eval wall time / generations of a finished cell).")
    non_adversarial_step_fraction: float = Field(
        0.35, gt=0, le=1, description="A step without the attacker (sft, refusal-sft) as a fraction of a LAT step.")
    measured_on: str | None = Field(None, description="Where the unit times were measured (shown with the plan).")
    measured_from: list[str] = Field(default_factory=list, description="Further experiment folders whose finished "
                                     "cells' costs give measured unit times (besides this spec's out folder).")


def load_spec(path: str | Path, overrides: list[str] | None = None) -> ExperimentSpec:
    return build_config(ExperimentSpec, path, overrides)
