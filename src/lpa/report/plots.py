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


def plot_asr(runs: Mapping[str, Sequence[dict[str, Any]]], path: Path) -> Path | None:
    """ASR by benchmark x attack, one bar per run (first judge of each run)."""
    plt = _plt()
    keys: list[str] = []
    values: dict[tuple[str, str], float] = {}
    for label, rows in runs.items():
        judge = next((r["judge"] for r in rows if r["metric"] == "asr"), None)
        for r in rows:
            if r["metric"] == "asr" and r["judge"] == judge:
                key = f"{r['benchmark']}\n{r['attack']}"
                if key not in keys:
                    keys.append(key)
                values[(label, key)] = r["value"]
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(keys) * max(1, len(runs)) ** 0.5), 3.5))
    width = 0.8 / len(runs)
    for i, label in enumerate(runs):
        xs = [k + i * width for k in range(len(keys))]
        ax.bar(xs, [values.get((label, key), 0.0) for key in keys], width, label=label)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(keys))], keys, fontsize=7)
    ax.set_ylabel("ASR")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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
