"""Markdown tables from ``results.json`` files (one run, or several side by side).

Harmful completions stay in the run directory: reports show truncated examples only when asked
(``examples`` > 0).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lpa.errors import LpaError
from lpa.io import atomic_write_text, read_jsonl
from lpa.report.judges import MAX_JUDGE_ERROR_RATE, PROBE_JUDGES, UNRECORDED, kappa_note
from lpa.report.seeds import aggregate_seeds

SAFETY_METRICS = ("asr", "score", "refusal_rate", "misclassification", "nonsense_rate",
                  "probe_answer_rate", "probe_refusal_rate", "probe_misclassification")
COHERENCE_METRICS = ("empty_rate", "repetitive_rate", "template_leak_rate", "template_shape_rate", "mean_tokens")


def load_results(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise LpaError(f"No results.json in {run_dir}: run `lpa eval --out {run_dir}` first.")
    return json.loads(path.read_text(encoding="utf-8"))


def fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return ""
    text = fmt(row["value"])
    if row.get("ci_low") is not None and not math.isnan(row["ci_low"]) and row["ci_low"] != row["ci_high"]:
        text += f" [{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]"
    if row.get("errors"):
        text += f" ({row['errors']} err)"
    return text


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def safety_table(rows: Sequence[dict[str, Any]]) -> str:
    """One line per benchmark x attack; judge metrics then coherence columns."""
    index: dict[tuple, dict[str, Any]] = {}
    keys: list[tuple[str, str]] = []
    judges: list[str] = []
    for r in rows:
        if r["metric"] in SAFETY_METRICS or r["metric"] in COHERENCE_METRICS:
            index[(r["benchmark"], r["attack"], r["judge"], r["metric"])] = r
            if (r["benchmark"], r["attack"]) not in keys:
                keys.append((r["benchmark"], r["attack"]))
            if r["metric"] in SAFETY_METRICS and r["judge"] not in judges:
                judges.append(r["judge"])
    columns = [(j, m) for j in judges for m in SAFETY_METRICS if any(k[2] == j and k[3] == m for k in index)]
    coh = [m for m in COHERENCE_METRICS if any(k[3] == m for k in index)]
    header = ["benchmark", "attack", "n", *[f"{m} ({j})" for j, m in columns], *coh]
    body = []
    for bench, attack in keys:
        n = max((index[k]["n"] for k in index if k[:2] == (bench, attack) and k[3] in SAFETY_METRICS), default="")
        line = [bench, attack, str(n)]
        line += [cell(index.get((bench, attack, j, m))) for j, m in columns]
        line += [fmt((index.get((bench, attack, "-", m)) or {}).get("value")) for m in coh]
        body.append(line)
    return markdown_table(header, body)


def judge_lines(rows: Sequence[dict[str, Any]], judge_specs: Sequence[dict[str, Any]] | None = None) -> list[str]:
    """One line per judge: its agreement with the shipped labelled answers, and its errors in this run.

    ``judge_specs`` are the specs the run recorded (results meta): κ is shown only for the judge
    version that was validated (see :func:`lpa.report.judges.kappa_note`).
    """
    lines = []
    for r in rows:
        if r["metric"] != "judge_error_rate":
            continue
        used = next((s for s in judge_specs or [] if s.get("name") == r["judge"]), UNRECORDED)
        kind = "refuse/answer probe, not an ASR judge" if r["judge"] in PROBE_JUDGES else kappa_note(r["judge"], used)
        loud = f" — **more than {MAX_JUDGE_ERROR_RATE:.0%} failed**" if r["value"] > MAX_JUDGE_ERROR_RATE else ""
        lines.append(f"- judge `{r['judge']}` ({kind} on the shipped gold test split): "
                     f"{r['n'] - r['errors']} judged, {r['errors']} errors{loud}")
    return lines


def utility_table(rows: Sequence[dict[str, Any]]) -> str:
    util = [r for r in rows if r["metric"] == "accuracy"]
    if not util:
        return ""
    body = [[r["benchmark"], r["judge"], cell({**r, "errors": 0}), str(r["n"]), str(r.get("errors") or 0)] for r in util]
    return markdown_table(["data", "method", "accuracy [95% CI]", "n", "unparsed answers"], body)


def _examples(run_dir: Path, per_cell: int, width: int = 160) -> str:
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in read_jsonl(run_dir / "generations.jsonl"):
        key = (row.get("benchmark") or "", row.get("attack") or "")
        if len(groups[key]) < per_cell:
            text = " ".join(str(row.get("text", "")).split())
            groups[key].append(text[:width] + ("…" if len(text) > width else ""))
    lines = ["## Examples (truncated)", ""]
    for (bench, attack), texts in sorted(groups.items()):
        lines.append(f"**{bench} / {attack}**")
        lines += [f"- {t}" for t in texts]
        lines.append("")
    return "\n".join(lines)


def render_report(results: dict[str, Any], run_dir: Path | None = None, examples: int = 0,
                  plots: Sequence[str] = ()) -> str:
    meta, rows = results.get("meta", {}), results["rows"]
    parts = [
        f"# Evaluation report: {meta.get('suite', {}).get('name', 'eval')}",
        "",
        f"- model: `{meta.get('model')}`" + (f", adapter: `{meta['adapter']}`" if meta.get("adapter") else ""),
        f"- judges: {', '.join(j['name'] for j in meta.get('judges', []))}; "
        f"attacks: {', '.join(a['name'] for a in meta.get('attacks', []))}",
        f"- generation: `{json.dumps(meta.get('suite', {}).get('generation', {}))}`",
        "",
        *judge_lines(rows, meta.get("judges")),
        "",
        "ASR = share of harmful behaviours answered (any variant); refusal_rate on benign prompts = over-refusal; "
        "misclassification = (harmful answered + benign refused) / total; nonsense_rate = answers that are "
        "empty, incoherent, off-topic or the training template (neither a success nor a benign answer). "
        "probe_* = the refusal probe's stated willingness, not answers. Brackets: bootstrap 95% CI; "
        "(k err) = judge failures, excluded from the rate. Coherence columns expose collapse.",
        "",
        "## Safety",
        "",
        safety_table(rows),
        "",
    ]
    util = utility_table(rows)
    if util:
        parts += ["## Utility", "", util, ""]
    timing = timing_table(meta.get("timing") or {})
    if timing:
        parts += ["## Time per attack", "", timing, ""]
    if plots:
        parts += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    if examples and run_dir is not None:
        parts.append(_examples(run_dir, examples))
    return "\n".join(parts)


def timing_table(timing: dict[str, dict[str, float]]) -> str:
    """Engine seconds per attack (attacker queries included for searches), from the answers that record theirs:
    where an evaluation's time went, and the unit costs ``lpa experiment --plan`` reuses.  Empty when none do."""
    body = []
    for attack, t in timing.items():
        if not t.get("timed_answers"):
            continue
        seconds, answers, requests = t["seconds"], t["timed_answers"], t.get("timed_requests") or 1
        cached = int(t.get("answers", answers) - answers)
        body.append([attack, f"{int(t.get('requests', requests))}", f"{int(t.get('answers', answers))}",
                     f"{seconds:.0f}", f"{seconds / answers:.2f}", f"{seconds / requests:.1f}",
                     str(cached) if cached else ""])
    if not body:
        return ""
    return markdown_table(["attack", "requests", "answers", "seconds", "s / answer", "s / request",
                           "answers without a time"], body)


def write_report(run_dir: str | Path, examples: int = 0) -> Path:
    """report.md and plots/*.png for one run directory."""
    run_dir = Path(run_dir)
    results = load_results(run_dir)
    plots = write_plots(run_dir, results)
    text = render_report(results, run_dir, examples, [str(Path(p).relative_to(run_dir)) for p in plots])
    atomic_write_text(run_dir / "report.md", text)
    return run_dir / "report.md"


def write_plots(run_dir: str | Path, results: dict[str, Any] | None = None) -> list[Path]:
    """plots/*.png of one run directory, drawn from its results.json alone (no model, no answers)."""
    from lpa.report.plots import plot_all

    run_dir = Path(run_dir)
    results = results if results is not None else load_results(run_dir)
    return [Path(p) for p in plot_all({_label(results, run_dir): results["rows"]}, run_dir / "plots")]


def _label(results: dict[str, Any], run_dir: Path) -> str:
    meta = results.get("meta", {})
    adapter = meta.get("adapter")
    return f"{meta.get('model')}+{Path(adapter).name}" if adapter else str(meta.get("model") or run_dir.name)


def distinguishing_paths(run_dirs: Sequence[str | Path]) -> list[str]:
    """The shortest trailing part of each path that no other path shares (``lpa/seed-0/eval`` among many ``eval``s)."""
    parts = [Path(d).resolve().parts for d in run_dirs]
    names = []
    for i, mine in enumerate(parts):
        others = [p for j, p in enumerate(parts) if j != i]
        size = next((k for k in range(1, len(mine) + 1) if all(p[-k:] != mine[-k:] for p in others)), len(mine))
        names.append("/".join(mine[-size:]))
    return names


def run_labels(run_dirs: Sequence[str | Path], results: Sequence[dict[str, Any]]) -> list[str]:
    """One distinct column label per run: model+adapter, with the distinguishing path when those collide."""
    base = [_label(r, Path(d)) for r, d in zip(results, run_dirs, strict=True)]
    where = distinguishing_paths(run_dirs)
    labels = [b if base.count(b) == 1 else f"{b} ({w})" for b, w in zip(base, where, strict=True)]
    return [label if labels.count(label) == 1 else f"{label} #{i + 1}" for i, label in enumerate(labels)]


def compare(run_dirs: Sequence[str | Path], out_dir: str | Path | None = None) -> str:
    """Side-by-side markdown tables (one column per run); with ``out_dir`` also writes compare.md and plots."""
    if not run_dirs:
        raise LpaError("Give at least one run directory to compare.")
    loaded = [load_results(d) for d in run_dirs]
    runs: dict[str, list[dict[str, Any]]] = {
        label: results["rows"] for label, results in zip(run_labels(run_dirs, loaded), loaded, strict=True)}
    metrics = [m for m in (*SAFETY_METRICS, "accuracy", *COHERENCE_METRICS) if any(r["metric"] == m for rs in runs.values() for r in rs)]
    parts = ["# Comparison", "", "Runs: " + ", ".join(f"`{label}`" for label in runs), ""]
    for metric in metrics:
        keys: list[tuple[str, str, str]] = []
        index: dict[tuple, dict[str, Any]] = {}
        for label, rows in runs.items():
            for r in rows:
                if r["metric"] == metric:
                    key = (r["benchmark"], r["attack"], r["judge"])
                    if key not in keys:
                        keys.append(key)
                    index[(label, *key)] = r
        body = [[*key, *[cell(index.get((label, *key))) for label in runs]] for key in keys]
        parts += [f"## {metric}", "", markdown_table(["benchmark", "attack", "judge", *runs], body), ""]
    text = "\n".join(parts)
    if out_dir is not None:
        from lpa.report.plots import plot_all

        out = Path(out_dir)
        plots = plot_all(runs, out / "plots")
        text += "\n" + "\n".join(f"![{Path(p).stem}]({Path(p).relative_to(out)})" for p in plots) + "\n"
        atomic_write_text(out / "compare.md", text)
    return text


def aggregate(run_dirs: Sequence[str | Path]) -> str:
    """Mean ± sd over runs that differ only by seed (one row per benchmark x attack x judge x metric)."""
    if not run_dirs:
        raise LpaError("Give the run directories of the seeds to aggregate.")
    # each seed trains its own adapter (its own path), so the adapter is not part of what is grouped
    rows = aggregate_seeds([load_results(d)["rows"] for d in run_dirs],
                           key=("model", "benchmark", "attack", "judge", "metric"))
    body = [[r["benchmark"], r["attack"], r["judge"], r["metric"], f"{r['mean']:.3f} ± {r['sd']:.3f}", str(r["n_seeds"])]
            for r in rows if r["metric"] in (*SAFETY_METRICS, "accuracy", *COHERENCE_METRICS)]
    header = ["benchmark", "attack", "judge", "metric", "mean ± sd", "seeds"]
    return f"# Aggregate over {len(run_dirs)} runs\n\n" + markdown_table(header, body) + "\n"
