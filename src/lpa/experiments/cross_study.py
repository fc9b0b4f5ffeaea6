"""One table across finished studies (one per scale, say): ASR per attack, over-refusal, utility, template answers
and the step each trained cell kept, with each method's paired difference against the base model of the same
study, and against a reference method (sft by default) in a second table.

Why a table of its own: each study's report compares methods on one model; the question "does the effect grow with
size?" needs the same rows side by side for several models, each still paired with its own base model's answers
(same engine, same prompts), and the provenance of every cell in a footnote.  Everything is read from finished
cells (``*/*/seed-*/cell.json`` and ``eval/outcomes.jsonl(.gz)``); no model is loaded and nothing is recomputed.
For each model and attack one study supplies every method: the folder whose base cell has that attack and that has
it for the most of the table's methods (the first listed on a tie).  Differences: per behaviour the seeds' mean
outcome minus the base's, with a sign-flip p (:func:`lpa.eval.stats.pooled_paired_rows`).
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lpa.errors import LpaError

ATTACKS = ("direct", "prefill", "template", "in-the-wild", "pair", "tap", "crescendo")
DEFAULT_METHODS = ("base", "lpa", "sft", "lat-harmful", "lat-harmful-4", "refusal-sft")
AUTO_REFERENCE = "auto"  # sft when the studies hold it
Column = tuple[str, str, str, str]  # benchmark, attack, judge, metric
Record = dict[str, Any]


@dataclass(frozen=True)
class Cell:
    """One finished cell of a study: its ``cell.json`` record and where its evaluation lives."""

    study: str
    record: Record
    eval_dir: Path

    @property
    def model(self) -> str:
        return str(self.record["model"])

    @property
    def method(self) -> str:
        return str(self.record["method"])

    @property
    def seed(self) -> str:
        return str(self.record.get("seed"))

    def values(self, column: Column) -> list[float]:
        return [float(r["value"]) for r in self.record.get("rows", [])
                if (r["benchmark"], r["attack"], r["judge"], r["metric"]) == column and r.get("value") is not None]


Study = list[Cell]


def load_study(folder: Path) -> Study:
    """Every finished cell under ``folder``; one clear error when there is none."""
    cells = [Cell(folder.name, json.loads(path.read_text(encoding="utf-8")), path.parent / "eval")
             for path in sorted(Path(folder).glob("*/*/seed-*/cell.json"))]
    if not cells:
        raise LpaError(f"No finished cell (*/*/seed-*/cell.json) under {folder}: give the folder a study wrote "
                       "(the spec's `out`).")
    return cells


def planned_methods(folders: Sequence[Path]) -> set[str]:
    """The method names of the specs the studies wrote (``spec.yaml`` in each folder), finished or not."""
    import yaml

    names: set[str] = set()
    for folder in folders:
        path = Path(folder) / "spec.yaml"
        if path.is_file():
            spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            names |= {str(m["name"]) for m in spec.get("methods") or [] if isinstance(m, dict) and "name" in m}
    return names


def check_choices(studies: Sequence[Study], judge: str, benchmark: str, methods: Sequence[str],
                  reference: str | None, planned: Collection[str] = ()) -> list[str]:
    """Name an unknown judge, benchmark or method and the ones the studies hold, before any table is computed;
    return the asked methods a spec plans but no cell has finished (their rows are left out, and a note says so)."""
    rows = [r for study in studies for cell in study for r in cell.record.get("rows", [])]
    finished = {cell.method for study in studies for cell in study}
    held = {"judge": {str(r["judge"]) for r in rows if r["judge"] != "-"},
            "benchmark": {str(r["benchmark"]) for r in rows if r["metric"] == "asr"},
            "method": finished | set(planned)}
    asked = {"judge": [judge], "benchmark": [benchmark], "method": [*methods, *([reference] if reference else [])]}
    for what, names in asked.items():
        unknown = [n for n in names if n not in held[what]]
        if unknown:
            raise LpaError(f"Unknown {what}(s) {', '.join(unknown)}: the studies hold {', '.join(sorted(held[what]))}.")
    return [m for m in dict.fromkeys(asked["method"]) if m not in finished]


def _study_for(studies: Sequence[Study], model: str, column: Column, methods: Sequence[str] = ()) -> Study:
    """The study whose base cell of ``model`` measured ``column`` and that measured it for the most of ``methods``
    (the first listed on a tie), so one study's base pairs every method; empty when none did."""
    best: Study = []
    best_count = 0
    for study in studies:
        if not any(c.model == model and c.method == "base" and c.values(column) for c in study):
            continue
        measured = {c.method for c in study if c.model == model and c.values(column)}
        count = len(measured & set(methods)) if methods else len(measured)
        if count > best_count:
            best, best_count = study, count
    return best


def _paired(reference: Sequence[Cell], seeds: Sequence[Cell], column: Column) -> dict[str, Any] | None:
    """The seeds' pooled paired difference against ``reference`` (one cell, or several seeds: their mean outcome
    per behaviour, as a study report pairs against a reference with seeds); None without outcomes."""
    from lpa.eval.stats import load_outcomes, pooled_paired_rows
    from lpa.experiments.paired import mean_outcomes

    def keep(outcomes: dict[tuple[str, str, str, str], float]) -> dict[tuple[str, str, str, str], float]:
        return {k: v for k, v in outcomes.items() if k[:3] == column[:3]}

    try:
        other = mean_outcomes([keep(load_outcomes(c.eval_dir)) for c in reference])
        rows = pooled_paired_rows(other, [keep(load_outcomes(s.eval_dir)) for s in seeds], n_boot=1000)
    except LpaError:  # a cell without outcomes.jsonl: the table shows the mean alone
        return None
    return rows[0] if len(rows) == 1 else None


@dataclass
class _Row:
    texts: list[str]
    used: list[Cell]
    sources: set[str]


def _against(studies: Sequence[Study], model: str, method: str, reference: str, columns: Sequence[Column],
             methods: Sequence[str]) -> _Row:
    """Per column: the method's mean over seeds and its paired difference against ``reference`` (the same study's
    cells); the cells used, and per column the study and seeds behind it."""
    row = _Row([], [], set())
    for column in columns:
        study = _study_for(studies, model, column, methods)
        ref = [c for c in study if c.model == model and c.method == reference and c.values(column)]
        seeds = [c for c in study if c.model == model and c.method == method and c.values(column)]
        if not seeds or not ref:
            row.texts.append("–")
            continue
        row.used += seeds
        row.sources.add(f"{column[1]}: {seeds[0].study} seed(s) {','.join(c.seed for c in seeds)}")
        text = f"{statistics.mean(v for s in seeds for v in s.values(column)):.2f}"
        if method != reference and (paired := _paired(ref, seeds, column)) is not None:
            text += f" ({paired['diff']:+.2f}, p {paired['perm_p']:.2g})"
        row.texts.append(text)
    return row


def _kept_step(cells: Sequence[Cell], model: str, method: str) -> str:
    """The step each seed kept, '/'-joined; a seed found in two studies counts once (the first study listed)."""
    from lpa.experiments.aggregate import kept_steps

    if method == "base":
        return "–"
    per_seed: dict[str, Record] = {}
    for cell in cells:
        per_seed.setdefault(cell.seed, cell.record)
    return kept_steps(list(per_seed.values())).get((model, method), "–")


def _mde_notes(studies: Sequence[Study], models: Sequence[str], benchmark: str, judge: str,
               methods: Sequence[str]) -> list[str]:
    """Per model: n harmful requests of the direct column, and the MDE with one seed and with LPA's seeds pooled."""
    from lpa.experiments.power import min_detectable_difference

    out = []
    column = (benchmark, "direct", judge, "asr")
    for model in models:
        study = _study_for(studies, model, column, methods)
        n = next((int(r["n"]) for c in study if c.model == model and c.method == "base" for r in c.record["rows"]
                  if (r["benchmark"], r["attack"], r["judge"], r["metric"]) == column and r.get("n")), 0)
        seeds = len({c.seed for c in study if c.model == model and c.method == "lpa" and c.values(column)})
        if n:
            text = f"{model} n = {n}: {min_detectable_difference(n):.2f} one seed"
            if seeds > 1:
                text += f", {min_detectable_difference(n * seeds):.2f} over LPA's {seeds} seeds"
            out.append(text)
    return out


def shape_rates(cell: Cell) -> list[float]:
    """Per (benchmark, attack), the share of answers in a training completion's shape: the cell's
    ``template_shape_rate`` rows, or, for a cell evaluated before that metric existed, counted from its answers
    (with the templates its evaluation config names)."""
    rows = [float(r["value"]) for r in cell.record.get("rows", [])
            if r["metric"] == "template_shape_rate" and r.get("value") is not None]
    if rows:
        return rows
    from lpa.coherence import DEFAULT_TEMPLATES, is_template_shaped
    from lpa.io import existing_jsonl, read_jsonl

    path = existing_jsonl(cell.eval_dir / "generations.jsonl")
    if not path.is_file():
        return []
    config = cell.eval_dir / "config.yaml"
    templates = DEFAULT_TEMPLATES
    if config.is_file():
        import yaml

        templates = tuple((yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("templates") or templates)
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for row in read_jsonl(path):
        count = counts[(str(row.get("benchmark", "")), str(row.get("attack", "")))]
        count[0] += is_template_shaped(str(row.get("text") or ""), templates)
        count[1] += 1
    return [shaped / total for shaped, total in counts.values() if total]


def _utility_and_collapse(cells: Sequence[Cell]) -> tuple[str, str, str]:
    """MMLU by log-likelihood / generation, and the largest template-answer and template-shape rates."""
    unique = list({id(c): c for c in cells}.values())
    mmlu = []
    for how in ("loglik", "generate"):
        values = [v for c in unique for v in c.values(("mmlu", "-", how, "accuracy"))]
        mmlu.append(f"{statistics.mean(values):.2f}" if values else "–")
    leaks = [float(r["value"]) for c in cells for r in c.record.get("rows", [])
             if r["metric"] == "template_leak_rate" and r.get("value") is not None]
    shapes = [v for c in unique for v in shape_rates(c)]
    return (" / ".join(mmlu), f"{max(leaks):.2f}" if leaks else "–", f"{max(shapes):.2f}" if shapes else "–")


def cross_study_table(folders: Sequence[Path], judge: str = "cascade", benchmark: str = "harmbench",
                      methods: Sequence[str] | None = None, reference: str | None = AUTO_REFERENCE) -> str:
    """Markdown: the table against each study's base, the table against ``reference``, MDE and provenance notes.

    ``methods=None``: the :data:`DEFAULT_METHODS` the studies hold, so a study without (say) refusal-sft needs no
    list; ``reference="auto"``: sft when the studies hold it, else no second table; ``None``: no second table.
    """
    studies = [load_study(Path(f)) for f in folders]
    finished = {c.method for study in studies for c in study}
    if methods is None:
        methods = [m for m in DEFAULT_METHODS if m in finished]
    if reference == AUTO_REFERENCE:
        reference = "sft" if "sft" in finished else None
    unfinished = check_choices(studies, judge, benchmark, methods, reference, planned_methods(folders))
    models = list(dict.fromkeys(c.model for study in studies for c in study))
    columns: list[Column] = [(benchmark, a, judge, "asr") for a in ATTACKS] + [("xstest", "direct", judge,
                                                                                 "refusal_rate")]
    columns = [c for c in columns if any(_study_for(studies, m, c) for m in models)]
    names = [("refusal XSTest-safe" if c[3] == "refusal_rate" else f"ASR {c[1]}") for c in columns]
    header = ["model", "method", "kept step", *names, "MMLU loglik / gen", "template answers (max)",
              "template-shaped (max)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    versus = ["| " + " | ".join(["model", "method", *names]) + " |", "|" + "---|" * (len(names) + 2)]
    sources: dict[str, set[str]] = defaultdict(set)
    for model in models:
        for method in methods:
            row = _against(studies, model, method, "base", columns, methods)
            if not row.used:
                continue
            sources[f"{model} · {method}"] |= row.sources
            mmlu, leaks, shapes = _utility_and_collapse(row.used)
            lines.append("| " + " | ".join([model, method, _kept_step(row.used, model, method), *row.texts, mmlu,
                                            leaks, shapes]) + " |")
            if reference and method not in ("base", reference):
                ref_row = _against(studies, model, method, reference, columns, methods)
                if ref_row.used:
                    versus.append("| " + " | ".join([model, f"{method} vs {reference}", *ref_row.texts]) + " |")
    notes = [f"Judge {judge}; harmful attacks on {benchmark}, over-refusal on XSTest-safe; a cell is the mean over "
             "seeds, with (difference vs the same study's base, seeds pooled by behaviour; sign-flip p). Kept step: "
             "the checkpoint-selection choice ('no window': the rule kept the model before training), else the steps "
             "trained ('<N (guard)': the collapse guard stopped at step N and kept its last good check); seeds "
             "'/'-joined. Template answers contain a training completion; template-shaped answers also count a "
             "short sentence that opens like one (\"I do not understand the question.\"), the largest share over "
             "the cell's benchmark x attack groups.", "",
             "Smallest detectable ASR difference on the direct column (alpha 0.05, power 0.8, two proportions; "
             "conservative for these paired tests): " + "; ".join(_mde_notes(studies, models, benchmark, judge,
                                                                              methods))]
    if reference and len(versus) > 2:
        what = {"sft": " (the same statements without the attacker)",
                "lpa": " (several seeds: their mean outcome per behaviour)"}.get(reference, "")
        notes += ["", f"Against {reference}{what}, paired the same way:", "", *versus]
    if unfinished:
        notes += ["", f"Not finished in any study yet (no rows): {', '.join(unfinished)}."]
    notes += ["", "Sources:", *(f"- {k}: {'; '.join(sorted(v))}" for k, v in sources.items())]
    return "\n".join(lines) + "\n\n" + "\n".join(notes)
