"""Aggregate experiment cells into tables, ratios and plots (mean ± sd over seeds).

The paper's "2.6x" is a ratio of mean misclassification rates, so the report gives, per judge
and benchmark group, each method's mean misclassification and its ratio to the base model and
to the harmful-data baseline (``reference``): ratio = mean(reference) / mean(method), so a value
above 1 means the method misclassifies less.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lpa.experiments.spec import ExperimentSpec
from lpa.io import atomic_write_csv, atomic_write_text, digest
from lpa.report.tables import markdown_table

KEY = ("model", "method", "benchmark", "attack", "judge", "metric")
SAFETY = ("asr", "refusal_rate", "misclassification", "score")
COHERENCE = ("template_leak_rate", "template_shape_rate", "empty_rate", "repetitive_rate", "mean_tokens")


def summarise(spec: ExperimentSpec, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± sd over seeds for every (model, method, benchmark, attack, judge, metric)."""
    from lpa.report.seeds import aggregate_seeds

    return aggregate_seeds([r["rows"] for r in records], KEY, deterministic=[r.get("seed") == "all" for r in records])


def _index(summary: Sequence[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    return {tuple(r[k] for k in KEY): r for r in summary}


def format_cell(row: dict[str, Any] | None, digits: int = 2, ci: bool = True) -> str:
    """mean ± sd over seeds, or a single run's mean with its bootstrap CI (``ci``) or alone."""
    if row is None:
        return "–"
    if row["n_seeds"] == "det" or row["n_seeds"] == 1:
        if not ci:
            return f"{row['mean']:.{digits}f}"
        low, high = row.get("ci_low"), row.get("ci_high")
        if isinstance(low, float) and isinstance(high, float) and not math.isnan(low) and low != high:
            return f"{row['mean']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
        return f"{row['mean']:.{digits}f}"
    return f"{row['mean']:.{digits}f} ± {row['sd']:.{digits}f}"


def metric_table(spec: ExperimentSpec, summary: Sequence[dict[str, Any]], metrics: Sequence[str]) -> str:
    """Rows: model x benchmark x attack x judge x metric; columns: methods (a model column when there are several)."""
    index = _index(summary)
    methods = [m.name for m in spec.methods]
    keys = sorted({(r["model"], r["benchmark"], r["attack"], r["judge"], r["metric"]) for r in summary
                   if r["metric"] in metrics}, key=lambda k: (k[0], k[4], k[1], k[2] != "direct", k[2], k[3]))
    several = len({k[0] for k in keys}) > 1
    body = []
    for model, bench, attack, judge, metric in keys:
        cells = [format_cell(index.get((model, m, bench, attack, judge, metric))) for m in methods]
        body.append([*([model] if several else []), metric, bench, attack, judge, *cells])
    if not body:
        return "_no rows_"
    prefix = [*(["model"] if several else []), "metric", "benchmark", "attack", "judge"]
    return markdown_table(prefix + methods, body)


def glance_table(spec: ExperimentSpec, summary: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]]) -> str:
    """One row per model and method: ASR per attack (first judge), over-refusal, utility, template answers, kept step.

    The cross-scale question ("does the effect grow with size?") is read along this table's model blocks;
    the long table below holds every judge and metric.
    """
    from lpa.experiments.paired import first_judge

    judge = first_judge(spec)
    index = _index(summary)
    asr_keys = sorted({(r["benchmark"], r["attack"]) for r in summary if r["metric"] == "asr" and r["judge"] == judge},
                      key=lambda k: (k[0], k[1] == "any", k[1] != "direct", k[1]))
    refusal_keys = sorted({(r["benchmark"], r["attack"]) for r in summary
                           if r["metric"] == "refusal_rate" and r["judge"] == judge and r["attack"] == "direct"})
    utility_keys = sorted({(r["benchmark"], r["judge"]) for r in summary if r["metric"] == "accuracy"})
    kept = kept_steps(records)
    body = []
    for model in spec.models:
        for entry in spec.methods:
            rows = [r for r in summary if r["model"] == model and r["method"] == entry.name]
            if not rows:
                continue
            leaks = [r["mean"] for r in rows if r["metric"] == "template_leak_rate"]
            cell = (model, entry.name)
            body.append([model, entry.name, kept.get(cell, "–"),
                         *[format_cell(index.get((*cell, b, a, judge, "asr")), ci=False) for b, a in asr_keys],
                         *[format_cell(index.get((*cell, b, a, judge, "refusal_rate")), ci=False)
                           for b, a in refusal_keys],
                         *[format_cell(index.get((*cell, b, "-", how, "accuracy")), ci=False)
                           for b, how in utility_keys],
                         f"{max(leaks):.2f}" if leaks else "–"])
    if not body:
        return "_no finished cells_"
    header = ["model", "method", "kept step",
              *[f"ASR {b} · {a}" for b, a in asr_keys], *[f"refusal {b}" for b, _ in refusal_keys],
              *[f"{b} ({how})" for b, how in utility_keys], "template answers (max)"]
    note = (f"Judge: {judge}; cells: mean over seeds (± sd in the tables below); kept step: the step each seed "
            "reports (checkpoint selection, else the last step trained; '<N (guard)': the collapse guard stopped "
            "at step N and kept its last good check).")
    return note + "\n\n" + markdown_table(header, body)


def kept_steps(records: Sequence[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(model, method) -> the step each seed reports, "/"-joined in seed order: the selected step ("0 (no window)"
    when the rule kept the model before training), else the steps trained, or "<N (guard)" when the collapse guard
    stopped the run at N and rolled back to its last good check."""
    steps: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for r in records:
        cost = r.get("cost") or {}
        selection = r.get("selection") or {}
        step = selection.get("step")
        if step is not None:
            text = str(step) if selection.get("selective_window", True) else f"{step} (no window)"
        elif r.get("seed") == "all" or not cost.get("steps_done"):
            text = "0"
        else:
            # a guard stop rolls back to the last check that passed, before the step that collapsed
            text = f"<{cost['steps_done']} (guard)" if cost.get("stopped") else f"{cost['steps_done']}"
        steps[(r["model"], r["method"])].append((str(r.get("seed")), text))
    return {k: "/".join(s for _, s in sorted(v)) for k, v in steps.items()}


def ratio_rows(spec: ExperimentSpec, summary: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Misclassification per method and its ratios to the baseline and the reference method."""
    index = _index(summary)
    out = []
    for r in summary:
        if r["metric"] != "misclassification":
            continue
        base = index.get((r["model"], spec.baseline, r["benchmark"], r["attack"], r["judge"], "misclassification"))
        ref = index.get((r["model"], spec.reference, r["benchmark"], r["attack"], r["judge"], "misclassification")) \
            if spec.reference else None
        out.append({
            **{k: r[k] for k in KEY if k != "metric"},
            "misclassification": r["mean"],
            "sd": r["sd"],
            "ratio_vs_base": (base["mean"] / r["mean"]) if base and r["mean"] > 0 else None,
            "ratio_vs_reference": (ref["mean"] / r["mean"]) if ref and r["mean"] > 0 else None,
        })
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def cost_table(spec: ExperimentSpec, records: Sequence[dict[str, Any]]) -> str:
    by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_method[record["method"]].append(record["cost"])
    body = []
    for entry in spec.methods:
        costs = by_method.get(entry.name, [])
        if not costs:
            continue
        mean = {k: statistics.fmean(float(c.get(k) or 0) for c in costs)
                for k in ("n_train_examples", "fwd_bwd_passes", "train_wall_s", "eval_wall_s")}
        stopped = sorted({str(c.get("stopped")) for c in costs if c.get("stopped")})
        body.append([entry.name, entry.method, f"{mean['n_train_examples']:.0f}", f"{mean['fwd_bwd_passes']:.0f}",
                     f"{mean['train_wall_s']:.0f}", f"{mean['eval_wall_s']:.0f}", ", ".join(stopped) or "–"])
    return markdown_table(["method", "training", "train examples", "fwd+bwd passes", "train s", "eval s", "early stop"], body)


def adversary_table(records: Sequence[dict[str, Any]]) -> str:
    """What the perturbed model said during training (the method claims no harmful content); from
    each record's ``adversary`` summary (:func:`lpa.experiments.cells.adversary_summary`)."""
    body = []
    for record in records:
        adv = record.get("adversary")
        if not adv:
            continue
        flagged = adv.get("first_flagged")
        body.append([record["method"], str(record["seed"]), str(adv["decoded"]), f"{adv['harm_keyword_rate']:.2f}",
                     f"{adv['refusal_rate']:.2f}", f"{adv['template_rate']:.2f}",
                     (flagged[:60].replace("|", "/").replace("\n", " ") + "…") if flagged else "–"])
    if not body:
        return "_adversary monitoring was off (set `adversary_monitor.every` in a method's `train`)_"
    return markdown_table(["method", "seed", "decoded", "harm-keyword rate", "refusal rate", "template rate",
                   "first flagged (truncated)"], body)


def overlap_section(spec: ExperimentSpec, records: Sequence[dict[str, Any]]) -> str:
    """Cosine overlap of each trained method's training texts (from its records) with each benchmark's prompts."""
    if not spec.analyses.overlap:
        return "_off_"
    texts = training_texts_by_label(spec, records)
    cache = spec.report_root / "overlap.json"
    key = digest({"texts": texts, "benchmarks": spec.eval.model_dump(mode="json")["benchmarks"],
                  "embedder": spec.analyses.embedder})
    cached = json.loads(cache.read_text(encoding="utf-8")) if cache.is_file() else None
    # written before the cache carried a key (computed from every method's config): kept because the committed
    # results/scale/overlap.json is one, and the scale-core report re-reports from it
    if isinstance(cached, list):
        stats = cached
    elif isinstance(cached, dict) and cached.get("key") == key:
        stats = cached["stats"]
    else:
        stats = compute_overlap(spec, texts) if texts else []
        atomic_write_text(cache, json.dumps({"key": key, "stats": stats}, indent=2))
    body = [[s["train"], s["eval_set"], str(s["n_train"]), str(s["n_eval"]), f"{s['mean_max_cosine']:.3f}",
             f"{s['max_cosine']:.3f}", f"{s['mean_cosine']:.3f}"] for s in stats]
    if not body:
        return "_no trained method_"
    table = markdown_table(["training data", "benchmark", "n train", "n eval", "mean max cos", "max cos", "mean cos"], body)
    closest = [s for s in stats if s.get("closest")]
    lines = [table]
    if closest:
        top = max(closest, key=lambda s: s["max_cosine"])
        pair = top["closest"][0]
        lines.append(f"\nClosest pair overall ({top['train']} vs {top['eval_set']}, cos {pair['cosine']:.3f}): "
                     f"training text “{pair['train']}”; benchmark prompt truncated to “{pair['eval'][:60]}…”.")
    return "\n".join(lines)


def training_texts_by_label(spec: ExperimentSpec, records: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """Training data label (trait set or method) -> the texts a finished cell of it recorded."""
    out: dict[str, list[str]] = {}
    for entry in spec.methods:
        label = entry.traits or entry.method
        if not entry.trains or label in out:
            continue
        found = next((r["train_texts"] for r in records if r.get("method") == entry.name and r.get("train_texts")), None)
        if found:
            out[label] = list(found)
    return out


def compute_overlap(spec: ExperimentSpec, texts: dict[str, list[str]]) -> list[dict[str, Any]]:
    from lpa.analysis import SentenceEmbedder, semantic_overlap
    from lpa.eval.benchmarks import BENCHMARKS
    from lpa.plugins import create

    suite = spec.eval
    eval_sets: dict[str, list[str]] = {}
    for bench_spec in suite.benchmarks:
        args = {"data_dir": suite.data_dir or spec.data_dir, "limit": suite.limit}
        bench = create(BENCHMARKS, bench_spec, **{k: v for k, v in args.items() if v is not None})
        samples = bench.load()
        eval_sets[bench.name] = [s.prompt or s.as_messages()[-1]["content"] for s in samples]
    embedder = SentenceEmbedder(spec.analyses.embedder)
    return [{"train": label, **stats.as_dict()}
            for label, train in texts.items() for stats in semantic_overlap(train, eval_sets, embedder=embedder)]


def power_section(spec: ExperimentSpec, records: Sequence[dict[str, Any]]) -> str:
    from lpa.experiments.power import POWER_HEADER, POWER_NOTE, power_rows

    rows = power_rows(records, spec.most_seeds)
    return POWER_NOTE + "\n\n" + (markdown_table(POWER_HEADER, rows) if rows else "_no ASR rows yet_")


def write_outputs(spec: ExperimentSpec, records: Sequence[dict[str, Any]], summary: Sequence[dict[str, Any]]) -> Path:
    root = spec.report_root
    atomic_write_csv(root / "results.csv", [row for record in records for row in record["rows"]])
    atomic_write_csv(root / "summary.csv", summary)
    ratios = ratio_rows(spec, summary)
    atomic_write_csv(root / "ratios.csv", ratios)
    from lpa.experiments.paired import paired_section
    from lpa.experiments.selection import selection_plots, selection_section

    paired_text, paired = paired_section(spec, records)
    atomic_write_csv(root / "paired.csv", paired)
    plots = _plots(spec, summary, root / "plots")
    plots += selection_plots(records, root / "plots")
    ratio_header = ["model", "method", "benchmark", "attack", "judge", "misclassification", f"× vs {spec.baseline}"]
    if spec.reference:
        ratio_header.append(f"× vs {spec.reference}")
    ratio_body = [[r["model"], r["method"], r["benchmark"], r["attack"], r["judge"],
                   f"{r['misclassification']:.3f} ± {r['sd']:.3f}", _fmt(r["ratio_vs_base"]),
                   *([_fmt(r["ratio_vs_reference"])] if spec.reference else [])]
                  for r in ratios if r["attack"] in ("direct", "any")]
    sections = [
        f"# Experiment `{spec.name}`",
        f"Models: {', '.join(spec.models)} · seeds: {spec.seeds_text()} · "
        f"judges: {_judges_with_kappa(spec.eval.judges, records)}. Cells show mean ± sd over seeds; "
        "an untrained model decoded greedily is evaluated once (no sd); single runs show their bootstrap 95% CI.",
    ]
    if spec.compute_note:
        sections.append(f"Expected compute: {spec.compute_note}")
    sections += [
        "## At a glance", glance_table(spec, summary, records),
        "## Attack success and over-refusal", metric_table(spec, summary, SAFETY),
        "## What the design can detect", power_section(spec, records),
        "## Paired against the baseline and the reference", paired_text,
        "## Misclassification and ratios",
        "ratio = mean misclassification of the base (or reference) method / this method's (> 1: fewer mistakes).",
        markdown_table(ratio_header, ratio_body) if ratio_body else "_no benchmark mixes harmful and benign samples_",
        "## Utility", metric_table(spec, summary, ("accuracy", "parse_rate", "mmlu_loglik", "mmlu_generate")),
        "## Output coherence (collapse indicators)", metric_table(spec, summary, COHERENCE),
        "## Checkpoint selection (which step each cell reports)", selection_section(spec, records),
        "## Cost per method", cost_table(spec, records),
        "## Adversary monitoring during training", adversary_table(records),
        "## Semantic overlap of training data with the benchmarks", overlap_section(spec, records),
    ]
    if plots:
        sections.append("## Plots\n" + "\n".join(f"![{p.stem}](plots/{p.name})" for p in plots))
    report = root / "report.md"
    atomic_write_text(report, "\n\n".join(sections) + "\n")
    return report


def _plots(spec: ExperimentSpec, summary: Sequence[dict[str, Any]], folder: Path) -> list[Path]:
    """One bar chart per safety metric and judge: methods side by side, sd over seeds (or a single run's CI)."""
    from lpa.report.plots import grouped_bars

    methods = [m.name for m in spec.methods]
    group = ("model", "benchmark", "attack") if len(spec.models) > 1 else ("benchmark", "attack")
    paths = []
    judges = sorted({r["judge"] for r in summary if r["metric"] in ("asr", "misclassification")})
    for metric, title in (("asr", "Attack success rate"), ("misclassification", "Misclassification rate"),
                          ("refusal_rate", "Benign refusal rate (over-refusal)")):
        for judge in judges:
            rows = [{**r, "series": r["method"]} for r in summary if r["metric"] == metric and r["judge"] == judge]
            path = grouped_bars(rows, methods, folder / f"{metric}_{judge}.png", group=group, ylabel=metric,
                                title=f"{title} — judge: {judge} (bars: sd over seeds, or bootstrap 95% CI of a single run)")
            if path is not None:
                paths.append(path)
    return paths


def _judges_with_kappa(judges: Sequence[Any], records: Sequence[dict[str, Any]] = ()) -> str:
    """Each judge named with its agreement (κ) on the shipped labelled test split, if the cells used that version."""
    from lpa.report.judges import kappa_note

    names = [str(j if isinstance(j, str) else j.get("name", j)) for j in judges]
    return ", ".join(f"{name} ({kappa_note(name.split(':')[0], judge_versions(records, name.split(':')[0]))})"
                     for name in names)


def judge_versions(records: Sequence[dict[str, Any]], judge: str) -> list[dict[str, Any]] | str:
    """The specs of ``judge`` recorded by every cell, or "unrecorded" when a cell predates recording them."""
    from lpa.report.judges import UNRECORDED

    specs = []
    for record in records:
        found = [s for s in record.get("judges") or [] if isinstance(s, dict) and s.get("name") == judge]
        if not found:
            return UNRECORDED
        specs += found
    return specs
