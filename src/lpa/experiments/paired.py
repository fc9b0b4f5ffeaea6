"""Paired tests across a study: every method against the baseline and the reference, per model, seeds pooled.

The tables of means say how large an effect looks; only a paired test on the same behaviours says whether
it is larger than chance.  The seeds of one method share the baseline's answers, so the behaviour is the unit
(:func:`lpa.eval.stats.pooled_paired_rows`: the seeds' mean outcome minus the other side's, bootstrap CI over
behaviours, sign-flip p); when the other side has seeds too (the reference), its seeds' mean is that side's
outcome.  Holm adjusts over every row of one comparison (one model, method and opponent).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lpa.experiments.spec import ExperimentSpec
from lpa.report.tables import markdown_table

Outcomes = dict[tuple[str, str, str, str], float]


def cell_eval_dir(root: Path, record: dict[str, Any]) -> Path:
    """The eval folder of a finished cell's record (the layout of :meth:`lpa.experiments.cells.Cell.folder`)."""
    from lpa.experiments.cells import cell_folder

    return cell_folder(root, record["model"], record["method"], record["seed"]) / "eval"


def mean_outcomes(runs: Sequence[Outcomes]) -> Outcomes:
    """Per behaviour, the mean outcome over ``runs`` (only the behaviours every run judged)."""
    shared = set(runs[0]).intersection(*[set(r) for r in runs[1:]])
    return {key: float(np.mean([r[key] for r in runs])) for key in shared}


def study_paired_rows(spec: ExperimentSpec, records: Sequence[dict[str, Any]], n_boot: int = 2000,
                      ) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows for every (model, method, opponent) under the spec's first judge; problems as readable notes."""
    from lpa.errors import LpaError
    from lpa.eval.stats import load_outcomes, pooled_paired_rows

    judge = first_judge(spec)
    runs: dict[tuple[str, str], list[Outcomes]] = defaultdict(list)
    notes = []
    for record in sorted(records, key=lambda r: (r["model"], r["method"], str(r["seed"]))):
        folder = cell_eval_dir(spec.out_dir, record)
        try:
            outcomes = load_outcomes(folder)
        except LpaError:
            notes.append(f"{record['model']} · {record['method']} · seed {record['seed']}: no outcomes.jsonl "
                         f"under {folder}, left out")
            continue
        runs[(record["model"], record["method"])].append(
            {k: v for k, v in outcomes.items() if judge is None or k[2] == judge})
    opponents = [name for name in (spec.baseline, spec.reference) if name]
    rows: list[dict[str, Any]] = []
    for model in spec.models:
        for entry in spec.methods:
            mine = runs.get((model, entry.name))
            if entry.name == spec.baseline or not mine:
                continue
            if len(mine) > 1 and (partial := _not_in_every_run(mine)):
                notes.append(f"{model} · {entry.name}: {', '.join(partial)} not in every seed, left out of its tests")
            for opponent in opponents:
                theirs = runs.get((model, opponent))
                if entry.name == opponent or not theirs:
                    continue
                for row in pooled_paired_rows(mean_outcomes(theirs), mine, n_boot=n_boot):  # Holm per comparison
                    rows.append({"model": model, "method": entry.name, "vs": opponent, "vs_seeds": len(theirs),
                                 **row})
    return rows, notes


def _not_in_every_run(runs: Sequence[Outcomes]) -> list[str]:
    """The "benchmark · attack" cells some runs judged and others did not (pooling keeps only shared behaviours)."""
    cells = [{(k[0], k[1]) for k in r} for r in runs]
    every = set(cells[0]).intersection(*cells[1:])
    return [f"{b} · {a}" for b, a in sorted(set().union(*cells) - every)]


def paired_section(spec: ExperimentSpec, records: Sequence[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The report's paired table (markdown) and its rows (for ``paired.csv``)."""
    from lpa.report.tables import fmt

    rows, notes = study_paired_rows(spec, records)
    if not rows:
        text = "_no method has finished beside its baseline or reference yet_"
        return "\n\n".join([text, *notes]), rows
    body = [[r["model"], r["method"], f"{r['vs']} ({r['vs_seeds']})", r["benchmark"], r["attack"], r["metric"],
             str(r["n"]), str(r["seeds"]), fmt(r["mean_a"]), fmt(r["mean_b"]),
             f"{r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]", f"{r['perm_p']:.2g}", f"{r['holm_p']:.2g}"]
            for r in rows]
    header = ["model", "method", "vs (runs)", "benchmark", "attack", "metric", "behaviours", "seeds", "vs mean",
              "method mean", "diff (95% CI over behaviours)", "sign-flip p", "Holm p"]
    head = (f"Judge: {first_judge(spec)}. Per behaviour, the method's seeds' mean outcome minus the other side's "
            "(its seeds' mean when it has several); bootstrap CI over behaviours, two-sided sign-flip p, Holm over "
            "the rows of one comparison. Outcome: a harmful behaviour answered (ASR) or a benign prompt refused.")
    parts = [head, markdown_table(header, body)]
    if notes:
        parts.append("Left out: " + "; ".join(notes) + ".")
    return "\n\n".join(parts), rows


def first_judge(spec: ExperimentSpec) -> str | None:
    """The name of the spec's first judge (the one its summary tables lead with), or None without judges."""
    from lpa.plugins import parse_spec

    return parse_spec(spec.eval.judges[0])[0] if spec.eval.judges else None


__all__ = ["cell_eval_dir", "first_judge", "mean_outcomes", "paired_section", "study_paired_rows"]
