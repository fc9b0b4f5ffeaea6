"""Paired statistics for base-vs-method comparisons on the same behaviours.

Two runs evaluated on the same prompts are paired: each behaviour is answered (1) or refused
(0) by both models, so the difference of rates is estimated far more precisely by resampling
*behaviours* (paired bootstrap) than by two independent CIs, and McNemar's exact test asks
whether the discordant behaviours (answered by one model only) split 50/50.

    diff = paired_bootstrap(base, method)         # method - base, with a 95 % CI
    test = mcnemar_exact(base, method)            # exact two-sided p-value
    rows = paired_rows(load_outcomes(run_a), load_outcomes(run_b))   # every benchmark x attack x judge
    holm_adjust([0.01, 0.04, 0.03])               # family-wise adjusted p-values (Holm 1979)

Everything is vectorised with numpy (10,000 resamples of 1,000 behaviours in milliseconds).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lpa.errors import LpaError
from lpa.io import existing_jsonl, read_jsonl

__all__ = [
    "McNemar",
    "PairedDiff",
    "holm_adjust",
    "load_outcomes",
    "mcnemar_exact",
    "min_detectable_difference",
    "paired_bootstrap",
    "paired_rows",
]


@dataclass
class PairedDiff:
    """``b - a`` over paired items: the mean difference, its percentile CI and a bootstrap p-value."""

    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int


@dataclass
class McNemar:
    """Discordant counts (``a_only``: a=1, b=0) and the exact two-sided binomial p-value."""

    a_only: int
    b_only: int
    p_value: float
    n: int


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_boot: int = 10_000, seed: int = 0,
                     alpha: float = 0.05) -> PairedDiff:
    """Resample item indices (the same for both runs) and take the mean of ``b - a`` each time."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired samples need equal 1-D shapes, got {x.shape} and {y.shape}")
    n = len(x)
    if n == 0:
        return PairedDiff(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, 0)
    d = y - x
    rng = np.random.default_rng(seed)
    # chunk the (n_boot, n) index matrix so memory stays bounded for large n
    chunk = max(1, min(n_boot, 2_000_000 // max(n, 1)))
    means = np.concatenate([d[rng.integers(0, n, size=(min(chunk, n_boot - s), n))].mean(axis=1)
                            for s in range(0, n_boot, chunk)])
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    if np.all(d == d[0]):
        p = 1.0 if d[0] == 0 else 0.0
    else:  # two-sided: how often the resampled difference lands on the other side of 0
        p = min(1.0, 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return PairedDiff(float(x.mean()), float(y.mean()), float(d.mean()), float(lo), float(hi), p, n)


def mcnemar_exact(a: Sequence[float], b: Sequence[float]) -> McNemar:
    """McNemar's exact test on paired binary outcomes (two-sided, binomial with p = 1/2)."""
    x, y = np.asarray(a) > 0.5, np.asarray(b) > 0.5
    if x.shape != y.shape:
        raise ValueError(f"paired samples need equal shapes, got {x.shape} and {y.shape}")
    a_only, b_only = int(np.sum(x & ~y)), int(np.sum(~x & y))
    return McNemar(a_only, b_only, _binom_two_sided(min(a_only, b_only), a_only + b_only), len(x))


def _binom_two_sided(k: int, n: int) -> float:
    """P(X <= k) * 2 for X ~ Bin(n, 1/2), capped at 1 (log-space, exact for any n)."""
    if n == 0:
        return 1.0
    ks = np.arange(k + 1)
    log_terms = (math.lgamma(n + 1) - np.array([math.lgamma(i + 1) + math.lgamma(n - i + 1) for i in ks])
                 - n * math.log(2))
    return float(min(1.0, 2 * np.exp(log_terms).sum()))


def min_detectable_difference(n: int, p: float = 0.5, discordant: float | None = None, alpha: float = 0.05,
                              power: float = 0.8) -> float:
    """Smallest paired rate difference detectable with ``n`` behaviours (normal approximation).

    ``discordant`` is the expected share of behaviours whose outcome differs between the runs;
    by default the worst case for two rates near ``p`` (2 p (1 - p)).
    """
    from statistics import NormalDist

    if n <= 0:
        return math.nan
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    share = 2 * p * (1 - p) if discordant is None else discordant
    return z * math.sqrt(share / n)


# -- runs ---------------------------------------------------------------------------------------
METRIC_OF_LABEL = {"harmful": "asr", "benign": "refusal_rate"}


def load_outcomes(run_dir: str | Path) -> dict[tuple[str, str, str, str], float]:
    """``{(benchmark, attack, judge, sample_id): outcome}`` from a run's ``outcomes.jsonl``.

    The outcome is 1 when a harmful behaviour was answered (any variant) or a benign prompt refused,
    so it is the per-item term of ASR and of the over-refusal rate; judge failures are left out.
    """
    from lpa.eval.metrics import JudgedItem, per_sample

    path = existing_jsonl(Path(run_dir) / "outcomes.jsonl")
    if not path.is_file():
        raise LpaError(f"{path} not found: rerun `lpa eval` on {run_dir} (it resumes from its cache) to write it.")
    groups: dict[tuple[str, str, str], list[JudgedItem]] = defaultdict(list)
    for row in read_jsonl(path):
        fields: dict[str, Any] = {k: row[k] for k in JudgedItem.__dataclass_fields__ if k in row}
        item = JudgedItem(**fields)
        groups[(item.benchmark, item.attack, item.judge)].append(item)
    out: dict[tuple[str, str, str, str], float] = {}
    for (bench, attack, judge), items in groups.items():
        for sid, outcome in per_sample(items).items():
            value = outcome.answered if outcome.label == "harmful" else outcome.refused
            if value is not None:
                out[(bench, attack, judge, f"{outcome.label}\t{sid}")] = float(value)
    return out


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: controls the family-wise error rate over ``p_values``, in input order.

    A comparison reports one McNemar test per attack and metric; without an adjustment one of five
    tests at 0.05 comes out "significant" by chance far more often than one time in twenty.
    """
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def cells_of(keys: Iterable[tuple[str, str, str, str]],
             pair_of: Callable[[tuple[str, str, str, str]], tuple[float, float]]
             ) -> dict[tuple[str, str, str, str], list[tuple[float, float]]]:
    """Paired values grouped by (benchmark, attack, judge, metric), behaviours in sorted order."""
    cells: dict[tuple[str, str, str, str], list[tuple[float, float]]] = defaultdict(list)
    for key in sorted(keys):
        bench, attack, judge, labelled = key
        metric = METRIC_OF_LABEL.get(labelled.split("\t", 1)[0], "rate")
        cells[(bench, attack, judge, metric)].append(pair_of(key))
    return cells


def paired_rows(a: dict[tuple[str, str, str, str], float], b: dict[tuple[str, str, str, str], float],
                n_boot: int = 10_000, seed: int = 0) -> list[dict[str, Any]]:
    """One row per benchmark x attack x judge x metric over the behaviours both runs judged.

    ``holm_p`` adjusts each McNemar p-value over every row of the same judge (all attacks and metrics).
    """
    cells = cells_of(a.keys() & b.keys(), lambda key: (a[key], b[key]))
    rows = []
    for (bench, attack, judge, metric), pairs in sorted(cells.items()):
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        diff, test = paired_bootstrap(xs, ys, n_boot, seed), mcnemar_exact(xs, ys)
        rows.append({"benchmark": bench, "attack": attack, "judge": judge, "metric": metric,
                     **asdict(diff), "a_only": test.a_only, "b_only": test.b_only, "mcnemar_p": test.p_value})
    return with_holm_per_judge(rows, "mcnemar_p")


def with_holm_per_judge(rows: list[dict[str, Any]], p_key: str) -> list[dict[str, Any]]:
    """Add ``holm_p`` to each row: ``p_key`` adjusted over every row of the same judge (the family of tests)."""
    for judge in {r["judge"] for r in rows}:
        family = [r for r in rows if r["judge"] == judge]
        for row, adjusted in zip(family, holm_adjust([r[p_key] for r in family]), strict=True):
            row["holm_p"] = adjusted
    return rows


def paired_report(base_dir: str | Path, other_dirs: Sequence[str | Path], n_boot: int = 10_000,
                  seed: int = 0) -> str:
    """Markdown: each run against the first (``base``) on the behaviours both judged."""
    from lpa.report.tables import distinguishing_paths, fmt, markdown_table

    base = load_outcomes(base_dir)
    names = distinguishing_paths([base_dir, *other_dirs])
    parts = []
    for other, name in zip(other_dirs, names[1:], strict=True):
        rows = paired_rows(base, load_outcomes(other), n_boot, seed)
        body = [[r["benchmark"], r["attack"], r["judge"], r["metric"], str(r["n"]), fmt(r["mean_a"]), fmt(r["mean_b"]),
                 f"{r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]", f"{r['a_only']}/{r['b_only']}",
                 f"{r['mcnemar_p']:.3g}", f"{r['holm_p']:.3g}"] for r in rows]
        header = ["benchmark", "attack", "judge", "metric", "n pairs", "base", "other", "diff (95% paired CI)",
                  "base-only/other-only", "McNemar p", "Holm p (per judge)"]
        parts.append(f"### {name} vs {names[0]} (paired on the same behaviours)\n\n"
                     + markdown_table(header, body))
    return "\n\n".join(parts)


def sign_flip_p(differences: Sequence[float], n_perm: int = 10_000, seed: int = 0) -> float:
    """Two-sided permutation p of a mean paired difference: flip the sign of each difference at random.

    Exact (every sign pattern) when at most 16 differences are non-zero, else ``n_perm`` random flips with the
    observed pattern counted among them ((hits + 1) / (n_perm + 1)), so a sampled p is never reported as 0.
    """
    d = np.asarray([x for x in differences if x != 0], dtype=float)
    if len(d) == 0:
        return 1.0
    observed = abs(d.mean()) * len(d)
    if len(d) <= 16:
        signs = 1 - 2 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)
        return float(np.mean(np.abs(signs @ d) >= observed - 1e-9))
    signs = np.random.default_rng(seed).choice((-1.0, 1.0), size=(n_perm, len(d)))
    hits = int(np.sum(np.abs(signs @ d) >= observed - 1e-9))
    return (hits + 1) / (n_perm + 1)


def pooled_paired_rows(base: dict[tuple[str, str, str, str], float],
                       seeds: Sequence[dict[tuple[str, str, str, str], float]], n_boot: int = 10_000,
                       seed: int = 0) -> list[dict[str, Any]]:
    """Seeds of one setting against one baseline, pooled: per behaviour, the seeds' mean outcome minus the base's.

    The seeds share the baseline's answers, so their pairs are not independent and McNemar on the stacked
    pairs would overstate the evidence; the behaviour is the unit instead: a bootstrap CI over behaviours and a
    sign-flip permutation p.  ``holm_p`` adjusts over every row of the same judge.
    """
    if not seeds:
        raise LpaError("A pooled comparison needs at least one seed run besides the baseline.")
    shared = set(base).intersection(*[set(s) for s in seeds])
    cells = cells_of(shared, lambda key: (base[key], float(np.mean([s[key] for s in seeds]))))
    rows = []
    for (bench, attack, judge, metric), pairs in sorted(cells.items()):
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        diff = paired_bootstrap(xs, ys, n_boot, seed)
        rows.append({"benchmark": bench, "attack": attack, "judge": judge, "metric": metric, "seeds": len(seeds),
                     **asdict(diff), "perm_p": sign_flip_p([y - x for x, y in pairs], seed=seed)})
    return with_holm_per_judge(rows, "perm_p")


def pooled_paired_report(base_dir: str | Path, seed_dirs: Sequence[str | Path], n_boot: int = 10_000,
                         seed: int = 0) -> str:
    """Markdown: the mean of ``seed_dirs`` (seeds of one setting) against ``base_dir``, paired by behaviour."""
    from lpa.report.tables import fmt, markdown_table

    rows = pooled_paired_rows(load_outcomes(base_dir), [load_outcomes(d) for d in seed_dirs], n_boot, seed)
    body = [[r["benchmark"], r["attack"], r["judge"], r["metric"], str(r["n"]), str(r["seeds"]), fmt(r["mean_a"]),
             fmt(r["mean_b"]), f"{r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]", f"{r['perm_p']:.3g}",
             f"{r['holm_p']:.3g}"] for r in rows]
    header = ["benchmark", "attack", "judge", "metric", "behaviours", "seeds", "base", "seeds' mean",
              "diff (95% CI over behaviours)", "sign-flip p", "Holm p (per judge)"]
    return (f"### {len(seed_dirs)} seeds pooled vs {base_dir} (per behaviour: the seeds' mean minus the base)\n\n"
            + markdown_table(header, body))
