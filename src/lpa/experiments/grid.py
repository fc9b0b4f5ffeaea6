"""Run every cell of an experiment (model x method x seed), skipping finished ones, then report.

Layout under the experiment folder: one folder per cell (see :mod:`lpa.experiments.cells`), and
``results.csv  summary.csv  report.md  plots/  overlap.json`` written from the cells' records.

Training and evaluation resume on their own, so a crash anywhere loses at most a step or a batch;
a cell whose ``cell.json`` matches the current spec is not recomputed.  A cell another process is
running (its folder is locked) is skipped, so two shells or machines on one spec share its cells.  The
untrained base model is evaluated once per model when decoding is greedy (its outputs do not depend on
the seed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lpa.errors import FolderBusy, LpaError
from lpa.experiments.cells import (
    CELL_KEYS,
    Cell,
    cell_key,
    cells,
    finished_record,
    parse_only,
    run_cell,
    select_cells,
    suite_for,
    train_config,
)
from lpa.experiments.spec import ExperimentSpec
from lpa.io import atomic_write_text, digest

log = logging.getLogger(__name__)


def check_experiment(spec: ExperimentSpec) -> None:
    """Build every cell's training config and check every distinct eval suite (files, plugins) up front.

    Runs before the first cell, so a typo in the third method does not wait for the first two to
    train; one :class:`LpaError` lists every problem found.
    """
    from lpa.eval.preflight import suite_problems

    problems: list[str] = []
    suites: dict[str, tuple[str, Any]] = {}
    for cell in cells(spec):
        label = f"method {cell.entry.name!r} on {cell.model}"
        try:
            suite = suite_for(spec, cell.entry)
            suites.setdefault(digest(suite.model_dump(mode="json")), (label, suite))
        except (LpaError, ValueError) as exc:
            problems.append(f"{label}: eval suite: {exc}")
        if cell.entry.trains:
            try:
                train_config(spec, cell, spec.out_dir / "_check")
            except (LpaError, ValueError) as exc:
                problems.append(f"{label}: training config: {exc}")
    try:  # one engine for the whole study: answers of two engines differ
        from lpa.eval.backends import check_one_engine

        check_one_engine([(suite_for(spec, c.entry).backend, c.model) for c in cells(spec)], spec.device)
    except (LpaError, ValueError) as exc:
        problems.append(str(exc))
    for label, suite in suites.values():
        where = "eval suite" if len(suites) == 1 else f"eval suite of {label}"
        problems += [f"{where}: {p}" for p in suite_problems(suite)]
    if not problems:
        from lpa.experiments.selection import selection_coverage, selection_problems

        problems += selection_problems(spec)
        for warning in selection_coverage(spec) if not problems else []:
            log.warning("checkpoint selection: %s", warning)
    if problems:
        unique = list(dict.fromkeys(problems))
        raise LpaError(f"The experiment {spec.name!r} cannot run ({len(unique)} problem(s); nothing was trained or "
                       "evaluated):\n" + "\n".join(f"- {p}" for p in unique))


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
    spec.report_root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(spec.report_root / "spec.yaml", _dump(spec))
    every = cells(spec)
    todo = [] if report_only else select_cells(every, only)
    records, busy = [], []
    for index, cell in enumerate(todo, start=1):
        seed = "all seeds" if cell.seed is None else f"seed {cell.seed}"
        if console is not None:
            console.rule(f"[{index}/{len(todo)}] {cell.model} · {cell.entry.name} · {seed}")
        try:
            records.append(run_cell(spec, cell, root, progress=progress))
        except FolderBusy:  # another shell or job runs it: leave it to its owner, go on with the next cell
            busy.append(f"{cell.model} · {cell.entry.name} · {seed}")
            log.warning("%s: another lpa process is running this cell; skipped here", cell.folder(root))
    chosen = {c.folder(root) for c in todo}
    records += [r for c in every if c.folder(root) not in chosen and (r := finished_record(spec, c, root)) is not None]
    if busy:
        log.warning("%d cell(s) left to the processes running them (the report covers the cells finished now; "
                    "run with --report-only when they end): %s", len(busy), "; ".join(busy))
    if not records:
        raise LpaError(f"No finished cells under {root}: "
                       + (f"{len(busy)} are being run by other processes; run with --report-only when they end."
                          if busy else "run `lpa experiment` without --report-only first."))
    summary = summarise(spec, records)
    report = write_outputs(spec, records, summary)
    return ExperimentResult(root, records, summary, report)


def _dump(spec: ExperimentSpec) -> str:
    from lpa.config import dump_config

    return dump_config(spec)


__all__ = [
    "CELL_KEYS", "Cell", "ExperimentResult", "cell_key", "cells", "check_experiment", "finished_record", "parse_only",
    "run_cell", "run_experiment", "select_cells", "suite_for", "train_config",
]
