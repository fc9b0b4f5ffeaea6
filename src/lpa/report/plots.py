"""PNG plots of result rows (Agg backend: works headless)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mean(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None and v == v]
    return sum(values) / len(values) if values else None


def error_bar(row: dict[str, Any]) -> tuple[float, float]:
    """sd over seeds, or the bootstrap CI of a single run (asymmetric)."""
    low, high = row.get("ci_low"), row.get("ci_high")
    if row.get("n_seeds", 1) in ("det", 1) and isinstance(low, float) and isinstance(high, float) and low == low:
        return max(0.0, row["mean"] - low), max(0.0, high - row["mean"])
    return row.get("sd") or 0.0, row.get("sd") or 0.0


def grouped_bars(rows: Sequence[dict[str, Any]], series: Sequence[str], path: Path, *,
                 group: Sequence[str] = ("benchmark", "attack"), ylabel: str, title: str = "") -> Path | None:
    """The one bar chart of the project: groups on the x axis, one bar per series, with error bars.

    ``rows`` carry ``series``, the ``group`` fields, ``mean`` and optionally ``sd`` / ``ci_low`` /
    ``ci_high`` / ``n_seeds`` (a summary row of :func:`lpa.report.seeds.aggregate_seeds`, or a
    single run's result row with ``mean`` = its value).
    """
    groups = sorted({tuple(r[g] for g in group) for r in rows}, key=lambda t: tuple(map(str, t)))
    if not groups:
        return None
    plt = _plt()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(groups) * max(1, len(series)) / 2), 3.6))
    width = 0.8 / max(1, len(series))
    index = {(r["series"], tuple(r[g] for g in group)): r for r in rows}
    for i, name in enumerate(series):
        xs, ys, lows, highs = [], [], [], []
        for g, key in enumerate(groups):
            r = index.get((name, key))
            if r is not None:
                xs.append(g + i * width)
                ys.append(r["mean"])
                low, high = error_bar(r)
                lows.append(low)
                highs.append(high)
        ax.bar(xs, ys, width, yerr=[lows, highs], capsize=3, label=name)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    ax.set_xticklabels(["\n".join(map(str, key)) for key in groups], fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_asr(runs: Mapping[str, Sequence[dict[str, Any]]], path: Path) -> Path | None:
    """ASR by benchmark x attack, one bar per run (first judge of each run), with its bootstrap CI."""
    rows = []
    for label, run_rows in runs.items():
        judge = next((r["judge"] for r in run_rows if r["metric"] == "asr"), None)
        rows += [{**r, "series": label, "mean": r["value"], "n_seeds": 1} for r in run_rows
                 if r["metric"] == "asr" and r["judge"] == judge and r.get("value") is not None]
    return grouped_bars(rows, list(runs), path, ylabel="ASR")


def plot_asr_vs_refusal(runs: Mapping[str, Sequence[dict[str, Any]]], path: Path) -> Path | None:
    """Mean direct-request ASR vs mean over-refusal (benign refusal rate), one point per run x judge."""
    plt = _plt()
    points = []
    for label, rows in runs.items():
        for judge in sorted({r["judge"] for r in rows if r["metric"] == "asr"}):
            asr = _mean([r["value"] for r in rows if r["metric"] == "asr" and r["judge"] == judge and r["attack"] == "direct"])
            ref = _mean([r["value"] for r in rows if r["metric"] == "refusal_rate" and r["judge"] == judge
                         and r["attack"] == "direct"])
            if asr is not None and ref is not None:
                points.append((f"{label} ({judge})", ref, asr))
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for name, x, y in points:
        ax.scatter([x], [y])
        ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("over-refusal (benign refusal rate)")
    ax.set_ylabel("ASR (direct)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_utility(runs: Mapping[str, Sequence[dict[str, Any]]], path: Path) -> Path | None:
    plt = _plt()
    bars = [(f"{label}\n{r['judge']}", r["value"]) for label, rows in runs.items() for r in rows if r["metric"] == "accuracy"]
    if not bars:
        return None
    fig, ax = plt.subplots(figsize=(max(3, 0.9 * len(bars)), 3.5))
    ax.bar(range(len(bars)), [v for _, v in bars])
    ax.set_xticks(range(len(bars)), [name for name, _ in bars], fontsize=7)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.axhline(0.25, color="grey", linestyle=":", linewidth=1)  # chance on 4 options
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_all(runs: Mapping[str, Sequence[dict[str, Any]]], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    made = [
        plot_asr(runs, folder / "asr_by_benchmark.png"),
        plot_asr_vs_refusal(runs, folder / "asr_vs_overrefusal.png"),
        plot_utility(runs, folder / "utility.png"),
    ]
    return [p for p in made if p is not None]


SELECTION_SERIES = {
    "asr": "selection ASR (held-in attacks)",
    "borderline_refusal": "borderline-safe refusal",
    "utility": "utility probe (MMLU by generation)",
    "template_rate_harmful": "template answers, harmful",
    "template_rate_borderline": "template answers, borderline",
    "template_shape_rate_harmful": "template-shaped answers, harmful",
    "template_shape_rate_borderline": "template-shaped answers, borderline",
}


def selection_curve(rows: Sequence[dict[str, Any]], path: Path, *, chosen: int | None = None,
                    title: str = "") -> Path | None:
    """A run's checkpoint-selection curve: each selection metric against the training step, chosen step marked."""
    rows = sorted(rows, key=lambda r: r["step"])
    if not rows:
        return None
    plt = _plt()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    steps = [r["step"] for r in rows]
    for key, label in SELECTION_SERIES.items():
        points = [(s, r[key]) for s, r in zip(steps, rows, strict=True) if r.get(key) is not None]
        if points:
            style = "--" if key.startswith("template") else "-"
            ax.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", label=label)
    if chosen is not None:
        ax.axvline(chosen, color="grey", linestyle=":", label=f"chosen step {chosen}")
    ax.set_xlabel("training step")
    ax.set_ylabel("rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
