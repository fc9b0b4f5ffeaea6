"""Checkpoint selection across a study: the split check, each cell's chosen step, the report section and plots.

Every trained cell of a spec with a ``selection:`` block is trained with the same block
(:func:`lpa.experiments.cells.train_config`), so every method -- LPA and each baseline -- gets the same
chance to stop at its best step.  Before anything runs, :func:`selection_problems` proves the
selection split disjoint from the prompts the study reports on (by behaviour, as the ``heldout``
benchmark groups them); the report names, per cell, the step kept and which split chose and which measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lpa.experiments.spec import ExperimentSpec, suite_for
from lpa.report.tables import markdown_table


def _labels(specs: Sequence[Any]) -> list[str]:
    out = []
    for spec in specs:
        if isinstance(spec, str):
            out.append(spec)
            continue
        args = {k: v for k, v in (spec.get("args") or {}).items() if k != "data_dir"}
        out.append(f"{spec['name']}({', '.join(f'{k}={v}' for k, v in sorted(args.items()))})" if args else spec["name"])
    return out


def selection_problems(spec: ExperimentSpec) -> list[str]:
    """Selection prompts that are also test prompts (same behaviour group), as problems; empty when disjoint."""
    if spec.selection is None:
        return []
    from lpa.eval.preflight import suite_problems
    from lpa.training.selection import selection_suites

    chose = selection_suites(spec.selection, [], spec.data_dir)
    problems = [f"selection split: {p}" for suite in chose for p in suite_problems(suite)]
    if problems:
        return problems
    selection = _groups(chose)
    test = _groups(_test_suites(spec))
    overlap = sorted(selection & test, key=lambda g: g[1])
    if overlap:
        shown = "; ".join(f"{bench}: {group[:50]!r}" for bench, group in overlap[:3])
        problems.append(f"selection split shares {len(overlap)} behaviour(s) with the eval suite ({shown}); split one "
                        "benchmark with `heldout` (part: selection / part: test, same seed) or use another source")
    return problems


def selection_coverage(spec: ExperimentSpec) -> list[str]:
    """Warnings where the test prompts' categories (XSTest's prompt types, HarmBench's semantic categories) are
    missing from the selection split of the same label: a bound chosen on some prompt types need not hold on others.

    Only categories the selection prompts of that label carry at all are compared (AdvBench has none), and only
    test categories of two or more prompts (a category of one prompt cannot be on both sides of a split).
    """
    if spec.selection is None:
        return []
    from lpa.errors import LpaError
    from lpa.training.selection import selection_suites

    try:  # a report rebuilt where the benchmark files are absent cannot look, and says nothing
        chose = _categories(selection_suites(spec.selection, [], spec.data_dir))
        test = _categories(_test_suites(spec))
    except (LpaError, OSError):
        return []
    out = []
    for label, name in (("benign", "borderline (over-refusal)"), ("harmful", "harmful")):
        covered = set(chose.get(label, {}))
        if not covered - {""}:
            continue
        tested = test.get(label, {})
        missing = {c: n for c, n in tested.items() if c and n >= 2 and c not in covered}
        if missing:
            total = sum(tested.values())
            shown = ", ".join(f"{c} ({n})" for c, n in sorted(missing.items(), key=lambda kv: -kv[1]))
            out.append(f"the selection split's {name} prompts include none of the categories {shown} "
                       f"({sum(missing.values())} of the {total} test prompts), so a bound the rule checks on the "
                       "selection split may not hold on them; split the benchmark with `heldout` (stratify: true) "
                       "for both parts")
    return out


def _test_suites(spec: ExperimentSpec) -> list[Any]:
    """Every method's test suite without its utility probe: the prompts the study reports on."""
    from lpa.eval.suite import EvalSuite

    return [EvalSuite.model_validate({**suite_for(spec, e).model_dump(mode="json"), "utility": None})
            for e in spec.methods]


def _samples(suites: Sequence[Any]) -> list[Any]:
    """Every sample the suites' benchmarks load."""
    from lpa.eval.preflight import prepare_suite

    return [s for suite in suites for _bench, samples in prepare_suite(suite).benchmarks for s in samples]


def _categories(suites: Sequence[Any]) -> dict[str, dict[str, int]]:
    """label -> category -> distinct prompts of ``suites`` (category '' where a sample has none)."""
    seen: dict[str, dict[str, set[str]]] = {}
    for sample in _samples(suites):
        seen.setdefault(sample.label, {}).setdefault(sample.category or "", set()).add(sample.id)
    return {label: {c: len(ids) for c, ids in cats.items()} for label, cats in seen.items()}


def _groups(suites: Sequence[Any]) -> set[tuple[str, str]]:
    """(label, behaviour group) of every harmful or borderline prompt of ``suites`` (labels compared separately)."""
    from lpa.eval.benchmarks.heldout import behaviour_group

    return {(s.label, behaviour_group(s)) for s in _samples(suites)}


def cell_selection(summary: dict[str, Any], train_dir: Path, eval_meta: dict[str, Any]) -> dict[str, Any]:
    """A cell record's ``selection``: the step kept, why, which split chose and which measured, and the curve."""
    from lpa.training.selection import read_curve

    measured = _labels((eval_meta.get("suite") or {}).get("benchmarks") or [])
    keep = ("step", "reason", "selective_window", "qualifying", "rule", "chose_on", "attacks", "judge", "evaluated_steps")
    return {**{k: summary.get(k) for k in keep}, "measured_on": measured,
            "curve": [{k: v for k, v in r.items() if k != "key"} for r in read_curve(train_dir)]}


def selection_section(spec: ExperimentSpec, records: Sequence[dict[str, Any]]) -> str:
    """The report's table of chosen steps, with the rule and the two splits stated."""
    chosen = [r for r in records if r.get("selection")]
    if spec.selection is None and not chosen:
        return "_no checkpoint selection in this spec (trained cells report their last or guard-kept step)_"
    if not chosen:
        return "_no finished cell with checkpoint selection yet_"
    first = chosen[0]["selection"]
    head = [f"Rule: {first.get('rule')}.",
            f"Chosen on (selection split): {', '.join(first.get('chose_on') or [])} under "
            f"{', '.join(first.get('attacks') or [])}, judge {first.get('judge')}.",
            f"Measured on (test split, every table above): {', '.join(first.get('measured_on') or [])}."]
    body = []
    for r in sorted(chosen, key=lambda r: (r["model"], r["method"], str(r["seed"]))):
        sel = r["selection"]
        row: dict[str, Any] = next((c for c in sel.get("curve") or [] if c["step"] == sel["step"]), {})
        body.append([r["model"], r["method"], str(r["seed"]), str(sel["step"]),
                     ", ".join(map(str, sel.get("evaluated_steps") or [])), "yes" if sel.get("selective_window") else "no",
                     _f(row.get("asr")), _f(row.get("borderline_refusal")), _f(row.get("utility")), str(sel.get("reason"))])
    table = markdown_table(["model", "method", "seed", "kept step", "evaluated steps", "selective window",
                            "selection ASR", "borderline refusal", "utility probe", "why"], body)
    caveats = [f"**Coverage:** {warning}." for warning in selection_coverage(spec)]
    return "\n\n".join([" ".join(head), *caveats, table])


def _f(value: Any) -> str:
    return "–" if value is None else f"{value:.2f}"


def selection_plots(records: Sequence[dict[str, Any]], folder: Path) -> list[Path]:
    """One selection curve per trained cell (model, method, seed), the kept step marked."""
    from lpa.report.plots import selection_curve

    paths = []
    for r in records:
        sel = r.get("selection")
        if not sel or not sel.get("curve"):
            continue
        name = f"selection_{_slug(r['model'])}_{r['method']}_seed-{r['seed']}.png"
        path = selection_curve(sel["curve"], folder / name, chosen=sel["step"],
                               title=f"{r['model']} · {r['method']} · seed {r['seed']}: kept step {sel['step']}")
        if path is not None:
            paths.append(path)
    return paths


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


__all__ = ["cell_selection", "selection_coverage", "selection_plots", "selection_problems", "selection_section"]
