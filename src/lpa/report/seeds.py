"""Seed aggregation of result rows: the one mean ± sd of ``lpa aggregate`` and experiment reports."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

SEED_KEY = ("model", "adapter", "benchmark", "attack", "judge", "metric")


def aggregate_seeds(runs: Sequence[Sequence[dict[str, Any]]], key: Sequence[str] = SEED_KEY,
                    deterministic: Sequence[bool] | None = None) -> list[dict[str, Any]]:
    """Mean and sd over runs that differ by seed (one list of result rows per run), grouped by ``key``.

    The one seed aggregation of ``lpa aggregate`` and experiment reports.  A group measured once
    keeps its bootstrap CI (the only uncertainty there is); a group from a run marked
    ``deterministic`` (greedy decoding of an untrained model, shared by all seeds) gets
    ``n_seeds == "det"``.  Rows are sorted by their key.
    """
    groups: dict[tuple, list[float]] = defaultdict(list)
    intervals: dict[tuple, tuple[Any, Any]] = {}
    fixed: set[tuple] = set()
    flags = list(deterministic) if deterministic is not None else [False] * len(runs)
    for rows, is_fixed in zip(runs, flags, strict=True):
        for row in rows:
            value = row.get("value")
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            group = tuple(row.get(k) for k in key)
            groups[group].append(float(value))
            intervals[group] = (row.get("ci_low"), row.get("ci_high"))
            if is_fixed:
                fixed.add(group)
    out = []
    for group, values in sorted(groups.items(), key=lambda kv: tuple(str(k) for k in kv[0])):
        single = len(values) == 1
        out.append({
            **dict(zip(key, group, strict=True)),
            "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n_seeds": "det" if group in fixed else len(values),
            "ci_low": intervals[group][0] if single else None,
            "ci_high": intervals[group][1] if single else None,
        })
    return out
