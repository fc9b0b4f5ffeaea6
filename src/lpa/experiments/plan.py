"""What a spec will cost before it runs (``lpa experiment SPEC --plan``), and what it can detect.

The workload is counted from the spec itself -- training steps per cell, the prompts each attack makes
from each benchmark (templates multiply them), the MMLU questions, and the checkpoint-selection
evaluations every ``selection.every`` steps -- and multiplied by unit times: seconds per training step
(with and without the LAT attacker) and per generated answer.  Unit times come from the spec's
``plan`` block when given there, else they are measured from finished cells (``cell.json`` costs) under
the spec's folder and ``plan.measured_from``; every figure says which.  Where finished cells timed an
attack (``cost.attack_timing``), its own seconds per answer replace the generic one -- a human jailbreak's
long prompt costs ~10x a direct request on a CPU -- and a search attack, whose answers are unknown before
it runs, is costed per request (borrowed from the other models' cells until this model's first cell has
timed it: its attacker and judge, the same for every target, make most of its cost).  Judging and the
engine's load are not in the unit times, so finished cells are set beside what the plan says for them:
their measured/planned ratio scales the hours left.  The design's smallest detectable ASR difference
(:func:`lpa.experiments.power.min_detectable_difference`) is printed beside it.
"""

from __future__ import annotations

import copy
import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lpa.experiments.spec import ExperimentSpec, suite_for

LOGLIK_COST = 0.25  # one log-likelihood MMLU question ~ a quarter of a generated answer (one forward, no decode)
MDE_GOAL = 0.15


@dataclass
class Units:
    """Seconds per LAT step, per step without the attacker, and per generated answer, with their source."""

    lat_step_s: float | None = None
    plain_step_s: float | None = None
    generation_s: float | None = None
    source: dict[str, str] = field(default_factory=dict)
    attack_answer_s: dict[str, float] = field(default_factory=dict)  # measured per attack: seconds per answer
    attack_request_s: dict[str, float] = field(default_factory=dict)  # ... and per request (searches)


@dataclass
class SuiteWork:
    """What one evaluation of a suite asks for, per attack, before it runs."""

    answers: dict[str, float]  # planned target answers of the attacks that know them
    requests: dict[str, int]  # requests per attack (every attack)
    utility: float  # utility questions, in generated-answer equivalents
    harmful: dict[str, int]  # harmful test prompts per benchmark
    unknown: list[str]  # attacks whose answers a search decides

    @property
    def total(self) -> float:
        return sum(self.answers.values()) + self.utility


@dataclass
class CellWork:
    model: str
    method: str
    seed: str
    steps: int
    adversarial: bool
    eval_generations: float
    selection_generations: float
    train_s: float | None  # training steps plus the selection evaluations (0 for an untrained cell)
    eval_s: float | None  # the test evaluation
    done: bool = False
    measured_train_s: float | None = None  # a finished cell's own wall times (cell.json costs)
    measured_eval_s: float | None = None  # None where its answers were read from the base cell (selection kept 0)
    progress: str | None = None  # what an unfinished cell's folder already holds (it resumes from there)

    @property
    def seconds(self) -> float | None:
        return None if self.train_s is None or self.eval_s is None else self.train_s + self.eval_s


def cell_progress(folder: Path, steps: int) -> str | None:
    """What an unfinished cell has already computed -- it resumes from there -- or None for an untouched cell.

    Read from the files a run appends to as it goes (metrics, selection curve, answers), so it is right even
    while the cell runs in another process.
    """
    from lpa.io import held_elsewhere, read_jsonl

    def lines(path: Path) -> int:
        return sum(1 for _ in read_jsonl(path)) if path.is_file() else 0

    train, evaluation = folder / "train", folder / "eval"
    parts = ["running now in another process"] if any(map(held_elsewhere, (folder, train, evaluation))) else []
    if (train / "result.json").is_file():
        parts.append("trained")
    elif (train / "metrics.jsonl").is_file():
        step = max((int(r.get("step") or 0) for r in read_jsonl(train / "metrics.jsonl")), default=0)
        parts.append(f"training at step {step} of {steps}")
    if (train / "selection.jsonl").is_file():
        parts.append(f"{lines(train / 'selection.jsonl')} selection step(s) evaluated")
    if (evaluation / "generations.jsonl").is_file():
        parts.append(f"{lines(evaluation / 'generations.jsonl')} test answer(s) generated")
    return ", ".join(parts) or None


def measured_units(folders: list[Path]) -> dict[str, Units]:
    """Unit times per model from the costs of finished cells (medians; cells that re-used cached answers skipped)."""
    lat: dict[str, list[float]] = defaultdict(list)
    plain: dict[str, list[float]] = defaultdict(list)
    gen: dict[str, list[float]] = defaultdict(list)
    per_answer: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    per_request: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for folder in folders:
        for marker in sorted(Path(folder).glob("*/*/seed-*/cell.json")):
            try:
                record = json.loads(marker.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            cost, model = record.get("cost") or {}, record.get("model")
            steps = cost.get("steps_done") or 0
            if steps and cost.get("train_wall_s"):
                adversarial = cost.get("fwd_bwd_passes", 0) > steps * 3  # the attacker adds K passes per step
                (lat if adversarial else plain)[model].append(cost["train_wall_s"] / steps)
            answers = generated_answers(record.get("rows") or [])
            if answers and cost.get("eval_wall_s", 0) > 0.5 * answers:  # mostly computed, not read from a cache
                gen[model].append(cost["eval_wall_s"] / answers)
            for attack, t in (cost.get("attack_timing") or {}).items():
                if t.get("timed_answers") and t.get("seconds"):
                    per_answer[model][attack].append(t["seconds"] / t["timed_answers"])
                    per_request[model][attack].append(t["seconds"] / (t.get("timed_requests") or 1))
    out: dict[str, Units] = {}
    for model in set(lat) | set(plain) | set(gen) | set(per_answer):
        units = Units()
        for name, values in (("lat_step_s", lat[model]), ("plain_step_s", plain[model]), ("generation_s", gen[model])):
            if values:
                setattr(units, name, statistics.median(values))
                units.source[name] = f"measured (median of {len(values)} finished cells)"
        for attack, values in per_answer[model].items():
            units.attack_answer_s[attack] = statistics.median(values)
            units.attack_request_s[attack] = statistics.median(per_request[model][attack])
            units.source[attack] = f"measured (median of {len(values)} finished cells' engine time)"
        out[model] = units
    return out


def generated_answers(rows: list[dict[str, Any]]) -> float:
    """Answers a cell generated, from its result rows: coherence rows count every answer; MMLU by its method."""
    answers = sum(r.get("n") or 0 for r in rows if r.get("metric") == "template_leak_rate")
    for r in rows:
        if r.get("metric") == "accuracy" and r.get("judge") in ("generate", "loglik"):
            answers += (r.get("n") or 0) * (1.0 if r["judge"] == "generate" else LOGLIK_COST)
    return answers


def units_for(spec: ExperimentSpec, model: str, measured: dict[str, Units], searches: Sequence[str] = ()) -> Units:
    """The spec's given unit times over the measured ones; a step without the attacker defaults to a fraction.

    A given LAT step also replaces a measured plain step: it was given because the finished cells trained under
    other settings (dtype, hardware), so their plain steps no longer apply.  A search attack (``searches``) this
    model has not timed yet borrows its seconds per request from the other models' cells: its attacker and judge
    models, the same for every target, make most of its cost.
    """
    units = copy.deepcopy(measured.get(model, Units()))
    for attack in searches:
        others = [u.attack_request_s[attack] for m, u in measured.items() if m != model and attack in u.attack_request_s]
        if attack not in units.attack_request_s and others:
            units.attack_request_s[attack] = units.attack_answer_s[attack] = statistics.median(others)
            units.source[attack] = (f"borrowed from {len(others)} other target model(s)' cells (a search's cost is "
                                    "mostly its attacker's)")
    given = f"given in the spec's plan block ({spec.plan.measured_on or 'source not stated'})"
    if model in spec.plan.step_s:
        units.lat_step_s, units.source["lat_step_s"] = spec.plan.step_s[model], given
        units.plain_step_s = None
    if model in spec.plan.generation_s:
        units.generation_s, units.source["generation_s"] = spec.plan.generation_s[model], given
    if units.plain_step_s is None and units.lat_step_s is not None:
        units.plain_step_s = units.lat_step_s * spec.plan.non_adversarial_step_fraction
        units.source["plain_step_s"] = f"{spec.plan.non_adversarial_step_fraction:g} x the LAT step"
    return units


def suite_workload(suite: Any) -> SuiteWork:
    """Per attack, the answers (where known) and requests one evaluation of ``suite`` makes."""
    from lpa.eval.preflight import prepare_suite

    prepared = prepare_suite(suite)
    answers: dict[str, float] = defaultdict(float)
    requests: dict[str, int] = defaultdict(int)
    harmful, unknown = {}, []
    for bench, samples in prepared.benchmarks:
        name = samples[0].benchmark if samples else bench.name
        harmful[name] = sum(s.label == "harmful" for s in samples)
        for attack in prepared.attacks:
            scope = suite.attack_benchmarks.get(attack.name)
            if scope is not None and bench.name not in scope:
                continue
            asked = samples[: getattr(attack.args, "limit", None)]
            requests[attack.name] += len(asked)
            planned = attack.planned_answers(asked)
            if planned is None:
                unknown.append(attack.name)
            else:
                answers[attack.name] += planned
    utility = 0.0
    if suite.utility is not None:
        utility = suite.utility.n * sum(1.0 if m == "generate" else LOGLIK_COST for m in suite.utility.methods)
    return SuiteWork(dict(answers), dict(requests), utility, harmful, sorted(set(unknown)))


def eval_seconds(work: SuiteWork, units: Units) -> float | None:
    """Seconds of one evaluation: each attack's answers at its measured cost (else the generic one), searches
    at their measured seconds per request (left out where unmeasured: the plan's notes say so); None when a
    needed unit time is unknown."""
    total = 0.0
    for attack, answers in work.answers.items():
        per = units.attack_answer_s.get(attack, units.generation_s)
        if per is None:
            return None
        total += answers * per
    total += sum(work.requests[a] * units.attack_request_s[a] for a in work.unknown if a in units.attack_request_s)
    if work.utility:
        if units.generation_s is None:
            return None
        total += work.utility * units.generation_s
    return total


@dataclass
class Calibration:
    """Measured over planned seconds of the finished cells, training and evaluation apart (the unit times
    leave out judging and the machine's load, which weigh on evaluation only)."""

    train: float | None
    eval: float | None
    n_train: int
    n_eval: int

    def scale(self, cell: CellWork) -> float:
        """The cell's planned seconds at the measured ratios (a part without a ratio stays as planned)."""
        return (cell.train_s or 0.0) * (self.train or 1.0) + (cell.eval_s or 0.0) * (self.eval or 1.0)


def calibration(work: list[CellWork]) -> Calibration:
    """Ratios over the finished cells that measured each part (trained cells for training, computed evaluations)."""
    def ratio(pairs: list[tuple[float, float]]) -> float | None:
        planned = sum(p for _, p in pairs)
        return sum(m for m, _ in pairs) / planned if pairs and planned > 0 else None

    train = [(float(w.measured_train_s or 0.0), float(w.train_s or 0.0)) for w in work
             if w.done and w.steps and w.measured_train_s and w.train_s]
    evals = [(float(w.measured_eval_s or 0.0), float(w.eval_s or 0.0)) for w in work
             if w.done and w.measured_eval_s and w.eval_s]
    return Calibration(ratio(train), ratio(evals), len(train), len(evals))


def selection_evaluations(steps: int, every: int) -> int:
    """Steps evaluated: 0, every ``every`` steps, and the last."""
    return len({0, steps, *range(every, steps + 1, every)})


def plan(spec: ExperimentSpec) -> tuple[list[CellWork], list[str]]:
    """Every cell's workload and estimated seconds, plus notes (unit sources, what could not be estimated)."""
    from lpa.experiments.cells import cells, finished_record, train_config
    from lpa.training.base import METHODS

    folders = [spec.out_dir, *(Path(p) for p in spec.plan.measured_from)]
    measured = measured_units([f for f in folders if f.is_dir()])
    notes: list[str] = []
    evals: dict[str, SuiteWork] = {}
    selection_work: list[SuiteWork] = []
    if spec.selection is not None:
        from lpa.training.selection import selection_suites

        selection_work = [suite_workload(s) for s in selection_suites(spec.selection, [], spec.data_dir)]
    selection_cost = sum(w.total for w in selection_work)
    work: list[CellWork] = []
    searches: set[str] = set()
    for cell in cells(spec):
        suite = suite_for(spec, cell.entry)
        key = json.dumps(suite.model_dump(mode="json"), sort_keys=True)
        if key not in evals:
            evals[key] = suite_workload(suite)
        units = units_for(spec, cell.model, measured, evals[key].unknown)
        searches.update(evals[key].unknown)
        unmeasured = [a for a in evals[key].unknown if a not in units.attack_request_s]
        if unmeasured:
            notes.append(f"{cell.model}: attacks whose cost a search decides ({', '.join(unmeasured)}) are not in "
                         "the estimate until a finished cell has timed them (report.md gives their queries)")
        steps, adversarial, selection = 0, False, 0.0
        selection_s: float | None = 0.0
        if cell.entry.trains:
            config = train_config(spec, cell, spec.out_dir / "_plan")
            steps, adversarial = config.steps, METHODS.get(config.method).adversarial
            if config.selection.enabled:
                times = selection_evaluations(steps, config.selection.every)
                selection = times * selection_cost
                parts = [eval_seconds(w, units) for w in selection_work]
                selection_s = None if None in parts else times * sum(p or 0.0 for p in parts)
        step_s = units.lat_step_s if adversarial else units.plain_step_s
        train_s = None if selection_s is None or (steps and step_s is None) else steps * (step_s or 0.0) + selection_s
        row = CellWork(cell.model, cell.entry.name, "all" if cell.seed is None else str(cell.seed), steps,
                       adversarial, evals[key].total, selection, train_s, eval_seconds(evals[key], units))
        record = finished_record(spec, cell, spec.out_dir)
        if record is not None:
            cost = record.get("cost") or {}
            eval_wall = float(cost.get("eval_wall_s") or 0.0)
            row.done, row.measured_train_s = True, float(cost.get("train_wall_s") or 0.0)
            # a resumed evaluation timed only its last part; one whose selection kept step 0 read the base cell's
            # answers (cells finished before 'eval_resumed' was recorded: only its few seconds tell)
            partial = cost.get("eval_resumed") or eval_wall <= 0.5 * (row.eval_s or 0.0)
            row.measured_eval_s = None if partial else eval_wall
        else:
            row.progress = cell_progress(cell.folder(spec.out_dir), steps)
        work.append(row)
    for model in spec.models:
        units = units_for(spec, model, measured, sorted(searches))
        for name in ("lat_step_s", "plain_step_s", "generation_s"):
            value = getattr(units, name)
            notes.append(f"{model}: {name} = " + (f"{value:.2f} s, {units.source[name]}" if value is not None else
                                                   "unknown (no finished cell, not given in plan.*): cells left out"))
        for attack in sorted(units.attack_answer_s):
            notes.append(f"{model}: {attack} = {units.attack_answer_s[attack]:.2f} s an answer, "
                         f"{units.attack_request_s[attack]:.1f} s a request, {units.source[attack]}")
    return work, list(dict.fromkeys(notes))


def mde_lines(spec: ExperimentSpec) -> list[str]:
    """The smallest detectable ASR difference per harmful test benchmark and pooled over them, one seed and pooled."""
    from lpa.experiments.cells import suite_for
    from lpa.experiments.power import min_detectable_difference

    harmful = suite_workload(suite_for(spec)).harmful
    harmful = {k: v for k, v in harmful.items() if v}
    seeds = spec.most_seeds
    lines = []
    pooled_benchmarks = [("all harmful test prompts", sum(harmful.values()))] if len(harmful) > 1 else []
    for name, n in [*sorted(harmful.items()), *pooled_benchmarks]:
        one, pooled = min_detectable_difference(n), min_detectable_difference(n * seeds)
        verdict = "meets" if pooled <= MDE_GOAL else "misses"
        lines.append(f"{name}: n={n}; MDE {one:.3f} (one seed), {pooled:.3f} ({seeds} seeds pooled) -- {verdict} the "
                     f"goal <= {MDE_GOAL}")
    return lines


def _hours(seconds: list[float | None]) -> str:
    """Hours of the given cells, '?' when any is unknown."""
    return "?" if any(x is None for x in seconds) else f"{sum(x or 0.0 for x in seconds) / 3600:.1f}"


def format_plan(spec: ExperimentSpec, work: list[CellWork], notes: list[str]) -> str:
    """The plan as text: per model x method, the totals and what is left, the finished cells' measured/planned
    ratio, the unit sources and the MDE."""
    from lpa.report.tables import markdown_table

    grouped: dict[tuple[str, str], list[CellWork]] = defaultdict(list)
    for w in work:
        grouped[(w.model, w.method)].append(w)
    body = []
    for (model, method), ws in grouped.items():
        left = [w.seconds for w in ws if not w.done]
        body.append([model, method, str(len(ws)), str(sum(w.done for w in ws)), str(ws[0].steps),
                     "LAT" if ws[0].adversarial else "-", f"{ws[0].eval_generations:.0f}",
                     f"{ws[0].selection_generations:.0f}", _hours([w.seconds for w in ws]),
                     _hours(left) if left else "0"])
    total = [w.seconds for w in work]
    known_total = sum(s for s in total if s is not None)
    missing = sum(s is None for s in total)
    todo = [w for w in work if not w.done]
    known_left = sum(w.seconds or 0.0 for w in todo)
    lines = [f"Plan for {spec.name!r}: {len(work)} cells ({len(work) - len(todo)} finished) -> {spec.out_dir}",
             markdown_table(["model", "method", "cells", "done", "steps", "attacker", "answers / eval",
                             "answers / selection", "hours (all cells)", "hours left"], body),
             f"Total: {known_total / 3600:.1f} hours of compute on the measured hardware"
             + (f", plus {missing} cell(s) with unknown unit times" if missing else "") + "; "
             + f"left: {known_left / 3600:.1f} hours for {len(todo)} unfinished cell(s).",
             *_calibration_lines(work)]
    started = [w for w in todo if w.progress]
    if started:
        lines += ["Started, not finished (each resumes from what it has; run its `--only` slice again):",
                  *(f"  - {w.model} · {w.method} · seed {w.seed}: {w.progress}" for w in started)]
    from lpa.experiments.selection import selection_coverage

    lines += [f"Checkpoint selection: {warning}." for warning in selection_coverage(spec)]
    lines += ["Unit times:", *(f"  - {n}" for n in notes),
              "Smallest detectable ASR difference (alpha 0.05, power 0.8, two-proportion normal approximation; "
              "conservative for paired tests):", *(f"  - {line}" for line in mde_lines(spec))]
    return "\n".join(lines)


def _calibration_lines(work: list[CellWork]) -> list[str]:
    """What the finished cells measured against what the plan says for them, and the hours left at those ratios."""
    cal = calibration(work)
    if cal.train is None and cal.eval is None:
        return ["No finished cell has measured its cost yet: the hours above are unit times only (judging and the "
                "machine's load are not in them)."]
    parts = []
    if cal.train is not None:
        parts.append(f"training + selection {cal.train:.2f}x the plan ({cal.n_train} cell(s))")
    if cal.eval is not None:
        parts.append(f"evaluation {cal.eval:.2f}x ({cal.n_eval} cell(s) that computed it)")
    todo = [w for w in work if not w.done and w.seconds is not None]
    left = sum(cal.scale(w) for w in todo)
    return [f"Finished cells measured (cell.json costs): {'; '.join(parts)}. At those ratios the {len(todo)} cell(s) "
            f"left take about {left / 3600:.1f} hours (ratios from one model carry over to the others only roughly)."]


__all__ = ["Calibration", "CellWork", "SuiteWork", "Units", "calibration", "cell_progress", "eval_seconds", "format_plan", "generated_answers", "measured_units",
           "mde_lines", "plan", "selection_evaluations", "suite_workload"]
