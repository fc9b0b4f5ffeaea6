"""One table across scales from finished study folders: ASR per attack, over-refusal, utility and template
answers and the step each trained cell reports, with each method's paired difference against the base model of
the same study, and against a reference method (sft by default) in a second table.

Usage: python studies/cross_scale.py results/scale-1.5b results/redteam results/scale [--judge cascade]
       [--benchmark harmbench] [--methods base,lpa,sft,lat-harmful,lat-harmful-4,refusal-sft] [--out FILE.md]
       python studies/cross_scale.py results/scale-1.5b --methods base,lpa,ablate-irrelevant,ablate-inverted \
       --reference lpa    # which ablations LPA survives: each against LPA's seeds' mean outcome per behaviour

Reads every finished cell (``*/*/seed-*/cell.json`` and its ``eval/outcomes.jsonl(.gz)``) under each folder,
whatever spec ran it (cells run with ``--set eval.attacks=...`` included); no model, no recomputation.
For each model and attack, one study supplies every method: the folder whose base cell has that attack and
that has it for the most methods (the first listed on a tie), so a difference is always paired with the base
model's answers from the same engine and prompts.  Differences: per behaviour the seeds' mean outcome minus the base's, sign-flip p
(:func:`lpa.eval.stats.pooled_paired_rows`).  Footnotes name the study and the seeds behind each cell.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lpa.errors import LpaError
from lpa.eval.stats import load_outcomes, pooled_paired_rows
from lpa.experiments.aggregate import kept_steps
from lpa.experiments.paired import mean_outcomes
from lpa.experiments.power import min_detectable_difference

ATTACKS = ("direct", "prefill", "template", "in-the-wild", "pair", "tap", "crescendo")


def _cells(folder: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(folder.glob("*/*/seed-*/cell.json")):
        record = json.loads(path.read_text())
        record["_eval"], record["_study"] = path.parent / "eval", folder.name
        out.append(record)
    return out


def _values(record: dict[str, Any], bench: str, attack: str, judge: str, metric: str) -> list[float]:
    return [float(r["value"]) for r in record["rows"] if (r["benchmark"], r["attack"], r["judge"], r["metric"])
            == (bench, attack, judge, metric) and r.get("value") is not None]


def _study_for(studies: list[list[dict[str, Any]]], model: str, cell: tuple[str, str, str, str],
               methods: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The records of the study whose base cell of ``model`` measured ``cell`` and that measured it for the most
    of the table's ``methods`` (the first listed on a tie), so one study's base pairs every method; empty when
    none did."""
    best: list[dict[str, Any]] = []
    best_methods = 0
    for records in studies:
        if not any(r["model"] == model and r["method"] == "base" and _values(r, *cell) for r in records):
            continue
        measured = {r["method"] for r in records if r["model"] == model and _values(r, *cell)}
        count = len(measured & set(methods)) if methods else len(measured)
        if count > best_methods:
            best, best_methods = records, count
    return best


def _paired(base: list[dict[str, Any]], seeds: list[dict[str, Any]],
            cell: tuple[str, str, str, str]) -> dict[str, Any] | None:
    """The seeds' pooled paired difference against ``base``: one cell, or several seeds of a reference (their mean
    outcome per behaviour, as the study report pairs against a reference with seeds)."""
    bench, attack, judge, _ = cell
    keep = lambda outcomes: {k: v for k, v in outcomes.items() if k[:3] == (bench, attack, judge)}  # noqa: E731
    try:
        other = mean_outcomes([keep(load_outcomes(r["_eval"])) for r in base])
        rows = pooled_paired_rows(other, [keep(load_outcomes(s["_eval"])) for s in seeds], n_boot=1000)
    except LpaError:  # a cell without outcomes.jsonl: the table shows the mean alone
        return None
    return rows[0] if len(rows) == 1 else None


def _against(studies: list[list[dict[str, Any]]], model: str, method: str, reference: str,
             columns: list[tuple[str, str, str, str]],
             methods: Sequence[str]) -> tuple[list[str], list[dict[str, Any]], set[str]]:
    """Per column: the method's mean over seeds and its paired difference against ``reference`` (one cell of the
    same study); the seed records used, and per column the study and seeds behind it."""
    texts, used, sources = [], [], set()
    for cell in columns:
        records = _study_for(studies, model, cell, methods)
        ref = [r for r in records if r["model"] == model and r["method"] == reference and _values(r, *cell)]
        seeds = [r for r in records if r["model"] == model and r["method"] == method and _values(r, *cell)]
        if not seeds or not ref:
            texts.append("–")
            continue
        used += seeds
        sources.add(f"{cell[1]}: {seeds[0]['_study']} seed(s) {','.join(str(r['seed']) for r in seeds)}")
        text = f"{statistics.mean(v for s in seeds for v in _values(s, *cell)):.2f}"
        if method != reference and (row := _paired(ref, seeds, cell)) is not None:
            text += f" ({row['diff']:+.2f}, p {row['perm_p']:.2g})"
        texts.append(text)
    return texts, used, sources


def _mde_notes(studies: list[list[dict[str, Any]]], models: list[str], benchmark: str, judge: str,
               methods: Sequence[str]) -> list[str]:
    """Per model: n harmful requests of the direct column, and the MDE with one seed and with LPA's seeds pooled."""
    out = []
    cell = (benchmark, "direct", judge, "asr")
    for model in models:
        records = _study_for(studies, model, cell, methods)
        n = next((int(r["n"]) for rec in records if rec["model"] == model and rec["method"] == "base"
                  for r in rec["rows"] if (r["benchmark"], r["attack"], r["judge"], r["metric"]) == cell
                  and r.get("n")), 0)
        seeds = len({rec["seed"] for rec in records if rec["model"] == model and rec["method"] == "lpa"
                     and _values(rec, *cell)})
        if n:
            text = f"{model} n = {n}: {min_detectable_difference(n):.2f} one seed"
            if seeds > 1:
                text += f", {min_detectable_difference(n * seeds):.2f} over LPA's {seeds} seeds"
            out.append(text)
    return out


def cross_scale_table(folders: list[Path], judge: str, benchmark: str, methods: list[str],
                      reference: str | None = "sft") -> str:
    studies = [_cells(f) for f in folders]
    models = list(dict.fromkeys(r["model"] for records in studies for r in records))
    columns = [(benchmark, a, judge, "asr") for a in ATTACKS] + [("xstest", "direct", judge, "refusal_rate")]
    columns = [c for c in columns if any(_study_for(studies, m, c) for m in models)]
    names = [("refusal XSTest-safe" if c[3] == "refusal_rate" else f"ASR {c[1]}") for c in columns]
    header = ["model", "method", "kept step", *names, "MMLU loglik / gen", "template answers (max)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    versus = ["| " + " | ".join(["model", "method", *names]) + " |", "|" + "---|" * (len(names) + 2)]
    sources: dict[str, set[str]] = defaultdict(set)
    for model in models:
        for method in methods:
            texts, used, cell_sources = _against(studies, model, method, "base", columns, methods)
            if not used:
                continue
            sources[f"{model} · {method}"] |= cell_sources
            unique = list({id(r): r for r in used}.values())
            mmlu = []
            for how in ("loglik", "generate"):
                values = [v for s in unique for v in _values(s, "mmlu", "-", how, "accuracy")]
                mmlu.append(f"{statistics.mean(values):.2f}" if values else "–")
            leaks = [float(r["value"]) for s in used for r in s["rows"] if r["metric"] == "template_leak_rate"
                     and r.get("value") is not None]
            # one step per seed: the same seed may come from two studies, and the first study listed wins
            per_seed: dict[str, dict] = {}
            for record in unique:
                per_seed.setdefault(str(record.get("seed")), record)
            step = "–" if method == "base" else kept_steps(list(per_seed.values())).get((model, method), "–")
            lines.append("| " + " | ".join([model, method, step, *texts, " / ".join(mmlu),
                                            f"{max(leaks):.2f}" if leaks else "–"]) + " |")
            if reference and method not in ("base", reference):
                ref_texts, ref_used, _ = _against(studies, model, method, reference, columns, methods)
                if ref_used:
                    versus.append("| " + " | ".join([model, f"{method} vs {reference}", *ref_texts]) + " |")
    notes = [f"Judge {judge}; harmful attacks on {benchmark}, over-refusal on XSTest-safe; a cell is the mean over "
             "seeds, with (difference vs the same study's base, seeds pooled by behaviour; sign-flip p). Kept step: "
             "the checkpoint-selection choice ('no window': the rule kept the model before training), else the steps "
             "trained ('<N (guard)': the collapse guard stopped at step N and kept its last good check); seeds "
             "'/'-joined."]
    notes += ["", "Smallest detectable ASR difference on the direct column (alpha 0.05, power 0.8, two proportions; "
              "conservative for these paired tests): " + "; ".join(_mde_notes(studies, models, benchmark, judge, methods))]
    if reference and len(versus) > 2:
        what = {"sft": " (the same statements without the attacker)", "lpa": " (several seeds: their mean outcome per "
                "behaviour)"}.get(reference, "")
        notes += ["", f"Against {reference}{what}, paired the same way:", "", *versus]
    notes += ["", "Sources:", *(f"- {k}: {'; '.join(sorted(v))}" for k, v in sources.items())]
    return "\n".join(lines) + "\n\n" + "\n".join(notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--judge", default="cascade")
    parser.add_argument("--benchmark", default="harmbench")
    parser.add_argument("--methods", default="base,lpa,sft,lat-harmful,lat-harmful-4,refusal-sft")
    parser.add_argument("--reference", default="sft", help="Second comparison (empty: none).")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    empty = [str(f) for f in args.folders if not any(f.glob("*/*/seed-*/cell.json"))]
    if empty:
        parser.error(f"no finished cell (*/*/seed-*/cell.json) under {', '.join(empty)}")
    text = cross_scale_table(args.folders, args.judge, args.benchmark, args.methods.split(","), args.reference or None)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
