"""Run every cell of an experiment (model x method x seed), skipping finished ones, then aggregate.

Layout under the experiment folder::

    <model>/<method>/seed-<s>/train/   training run (adapter/, metrics.jsonl, result.json)
    <model>/<method>/seed-<s>/eval/    evaluation run (generations, judgements, results.json)
    <model>/<method>/seed-<s>/cell.json   finished-cell marker with the rows and costs
    results.csv  summary.csv  report.md  plots/  overlap.json

Training and evaluation resume on their own, so a crash anywhere loses at most a step or a batch;
a cell whose ``cell.json`` matches the current spec is not recomputed.  The untrained base
model is evaluated once per model when decoding is greedy (its outputs do not depend on the seed).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lpa.experiments.spec import ExperimentSpec, MethodEntry
from lpa.io import atomic_write_json, atomic_write_text, digest


@dataclass(frozen=True)
class Cell:
    model: str
    entry: MethodEntry
    seed: int | None  # None: a deterministic base evaluation shared by all seeds

    def folder(self, root: Path) -> Path:
        seed = "all" if self.seed is None else str(self.seed)
        return root / _slug(self.model) / self.entry.name / f"seed-{seed}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def cells(spec: ExperimentSpec) -> list[Cell]:
    """Every cell, seed-major within a model: all methods of seed 0 finish before any of seed 1.

    That order makes a partly run study useful: after any stop, each method has the same seeds.
    """
    out = []
    for model in spec.models:
        shared = [e for e in spec.methods if not e.trains and not spec.eval.generation.do_sample]
        out.extend(Cell(model, entry, None) for entry in shared)
        for seed in spec.seeds:
            out.extend(Cell(model, entry, seed) for entry in spec.methods if entry not in shared)
    return out


CELL_KEYS = ("model", "method", "seed")


def select_cells(todo: list[Cell], only: dict[str, list[str]] | None) -> list[Cell]:
    """The cells matching every ``key -> allowed values`` filter (``model``, ``method``, ``seed``).

    A shared base cell (seed "all") matches any seed filter, since every seed's comparison needs it.
    Unknown keys or values raise one error naming the valid choices.
    """
    from lpa.errors import LpaError

    if not only:
        return todo
    choices = {
        "model": list(dict.fromkeys(c.model for c in todo)),
        "method": list(dict.fromkeys(c.entry.name for c in todo)),
        "seed": list(dict.fromkeys(str(c.seed) for c in todo if c.seed is not None)),
    }
    for key, values in only.items():
        if key not in CELL_KEYS:
            raise LpaError(f"Unknown cell filter {key!r}; valid: {', '.join(CELL_KEYS)}.")
        unknown = [v for v in values if v not in choices[key]]
        if unknown:
            raise LpaError(f"No {key} {', '.join(map(repr, unknown))} in this spec; valid: {', '.join(choices[key])}.")

    def keep(cell: Cell) -> bool:
        values = {"model": cell.model, "method": cell.entry.name, "seed": None if cell.seed is None else str(cell.seed)}
        return all(values[k] is None or values[k] in allowed for k, allowed in only.items())

    return [c for c in todo if keep(c)]


def parse_only(items: list[str] | None) -> dict[str, list[str]]:
    """``["method=base,lpa", "seed=0"]`` -> ``{"method": ["base", "lpa"], "seed": ["0"]}``."""
    from lpa.errors import LpaError

    out: dict[str, list[str]] = {}
    for item in items or []:
        key, sep, values = item.partition("=")
        if not sep or not values.strip():
            raise LpaError(f"--only expects KEY=V1,V2 with KEY one of {', '.join(CELL_KEYS)}; got {item!r}.")
        out.setdefault(key.strip(), []).extend(v.strip() for v in values.split(",") if v.strip())
    return out


def train_config(spec: ExperimentSpec, cell: Cell, folder: Path) -> Any:
    from lpa.training import build_train_config

    fields: dict[str, Any] = {
        **cell.entry.train,
        "method": cell.entry.method,
        "model": cell.model,
        "out": str(folder / "train"),
        "seed": cell.seed or 0,
        "device": spec.device,
        "data_dir": spec.data_dir,
        "preset": cell.entry.preset,
    }
    if cell.entry.traits is not None:
        fields["traits"] = cell.entry.traits
    return build_train_config(None, None, **fields)


def _suite(spec: ExperimentSpec, entry: MethodEntry | None = None) -> Any:
    """The spec's suite, with the data folder filled in and ``entry``'s extra attacks appended."""
    update: dict[str, Any] = {}
    if spec.data_dir and not spec.eval.data_dir:
        update["data_dir"] = spec.data_dir
    if entry is not None and entry.extra_attacks:
        update["attacks"] = [*spec.eval.attacks, *entry.extra_attacks]
    if not update:
        return spec.eval
    from lpa.eval.suite import EvalSuite

    return EvalSuite.model_validate({**spec.eval.model_dump(mode="json"), **update})


def check_experiment(spec: ExperimentSpec) -> None:
    """Build every cell's training config and check every distinct eval suite (files, plugins) up front.

    Runs before the first cell, so a typo in the third method does not wait for the first two to
    train; one :class:`LpaError` lists every problem found.
    """
    from lpa.errors import LpaError
    from lpa.eval.preflight import suite_problems

    problems: list[str] = []
    suites: dict[str, tuple[str, Any]] = {}
    for cell in cells(spec):
        label = f"method {cell.entry.name!r} on {cell.model}"
        try:
            suite = _suite(spec, cell.entry)
            suites.setdefault(digest(suite.model_dump(mode="json")), (label, suite))
        except (LpaError, ValueError) as exc:
            problems.append(f"{label}: eval suite: {exc}")
        if cell.entry.trains:
            try:
                train_config(spec, cell, spec.out_dir / "_check")
            except (LpaError, ValueError) as exc:
                problems.append(f"{label}: training config: {exc}")
    for label, suite in suites.values():
        where = "eval suite" if len(suites) == 1 else f"eval suite of {label}"
        problems += [f"{where}: {p}" for p in suite_problems(suite)]
    if problems:
        unique = list(dict.fromkeys(problems))
        raise LpaError(f"The experiment {spec.name!r} cannot run ({len(unique)} problem(s); nothing was trained or "
                       "evaluated):\n" + "\n".join(f"- {p}" for p in unique))


def run_cell(spec: ExperimentSpec, cell: Cell, root: Path, *, progress: bool = True) -> dict[str, Any]:
    """Train (if needed) and evaluate one cell; returns its marker record (rows + costs)."""
    from lpa.eval.runner import evaluate

    folder = cell.folder(root)
    marker = folder / "cell.json"
    suite = _suite(spec, cell.entry)
    key = _cell_key(spec, cell)
    if (record := finished_record(spec, cell, root)) is not None:
        return record
    adapter = None
    cost: dict[str, Any] = {"n_train_examples": 0, "fwd_bwd_passes": 0, "train_wall_s": 0.0}
    if cell.entry.trains:
        from lpa.training import train

        config = train_config(spec, cell, folder)
        config = config.model_copy(update={"progress": progress})
        result = train(config)
        adapter = str(result.adapter)
        summary = result.summary
        cost = {
            "n_train_examples": summary.get("n_train_examples", 0),
            "fwd_bwd_passes": summary.get("fwd_bwd_passes", 0),
            "train_wall_s": summary.get("wall_time_s", 0.0),
            "steps_done": summary.get("steps_done"),
            "stopped": summary.get("stopped"),
        }
    start = time.perf_counter()
    results = evaluate(suite, cell.model, adapter=adapter, out_dir=folder / "eval", device=spec.device,
                       progress=progress)
    cost["eval_wall_s"] = time.perf_counter() - start
    tags = {"method": cell.entry.name, "seed": "all" if cell.seed is None else cell.seed, "model": cell.model}
    record = {
        "key": key,
        **tags,
        "adapter": adapter,
        "cost": cost,
        "rows": [{**row, **tags} for row in results.rows],
    }
    atomic_write_json(marker, record)
    return record


def _cell_key(spec: ExperimentSpec, cell: Cell) -> str:
    suite = _suite(spec, cell.entry)
    return digest({"suite": suite.model_dump(mode="json"), "entry": cell.entry.model_dump(), "model": cell.model,
                   "seed": cell.seed, "device": spec.device, "data_dir": spec.data_dir})


def finished_record(spec: ExperimentSpec, cell: Cell, root: Path) -> dict[str, Any] | None:
    """The cell's marker record if it was finished under the current spec, else None."""
    marker = cell.folder(root) / "cell.json"
    if not marker.is_file():
        return None
    record = json.loads(marker.read_text(encoding="utf-8"))
    return record if record.get("key") == _cell_key(spec, cell) else None


@dataclass
class ExperimentResult:
    out_dir: Path
    records: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    report: Path


def run_experiment(
    spec: ExperimentSpec,
    *,
    progress: bool = True,
    console: Any = None,
    report_only: bool = False,
    only: dict[str, list[str]] | None = None,
) -> ExperimentResult:
    """Run (or, with ``report_only``, just aggregate the finished) cells and write the report.

    Every cell's training config and the eval suites are checked first (:func:`check_experiment`).
    ``only`` restricts which cells are computed (see :func:`select_cells`); the report still covers
    every finished cell, so a study can be run in slices across sessions or machines.
    """
    from lpa.experiments.aggregate import summarise, write_outputs

    if not report_only:
        check_experiment(spec)
    root = spec.out_dir
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "spec.yaml", _dump(spec))
    every = cells(spec)
    todo = [] if report_only else select_cells(every, only)
    records = []
    for index, cell in enumerate(todo, start=1):
        if console is not None:
            seed = "all seeds" if cell.seed is None else f"seed {cell.seed}"
            console.rule(f"[{index}/{len(todo)}] {cell.model} · {cell.entry.name} · {seed}")
        records.append(run_cell(spec, cell, root, progress=progress))
    chosen = {c.folder(root) for c in todo}
    records += [r for c in every if c.folder(root) not in chosen and (r := finished_record(spec, c, root)) is not None]
    if not records:
        from lpa.errors import LpaError

        raise LpaError(f"No finished cells under {root}: run `lpa experiment` without --report-only first.")
    summary = summarise(spec, records)
    report = write_outputs(spec, records, summary)
    return ExperimentResult(root, records, summary, report)


def _dump(spec: ExperimentSpec) -> str:
    from lpa.config import dump_config

    return dump_config(spec)
