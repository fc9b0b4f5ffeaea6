"""Check a trait judge against hand-labelled answers before trusting its scores.

Label files are JSONL rows ``{"question", "answer", "score"}`` (0-100, scored by reading);
built-in ones live in ``lpa/data/persona/labels/<trait>.jsonl``.  Agreement is reported the
way the safety judges report theirs: Pearson and Spearman r, mean absolute error, and
agreement on the >= threshold / < threshold split that extraction uses to keep pairs.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any

from lpa.errors import LpaError
from lpa.io import read_table
from lpa.persona.judges import TraitJudge, judge_key
from lpa.persona.monitor import pearson
from lpa.persona.trait_definitions import TraitDefinition


def builtin_labels_path(trait: str) -> Path:
    return Path(str(resources.files("lpa") / "data" / "persona" / "labels" / f"{trait}.jsonl"))


def load_labels(trait: TraitDefinition, path: str | Path | None = None) -> list[dict[str, Any]]:
    """Labelled answers for ``trait`` (the built-in file unless ``path`` is given)."""
    source = Path(path) if path else builtin_labels_path(trait.name)
    if not source.is_file():
        available = sorted(p.stem for p in builtin_labels_path(trait.name).parent.glob("*.jsonl"))
        raise LpaError(f"No labelled answers for trait {trait.name!r} at {source}. Built-in label sets: "
                       f"{', '.join(available)}; or pass --labels FILE (JSONL with question, answer, score).")
    rows = read_table(source)
    for number, row in enumerate(rows, start=1):
        if not {"question", "answer", "score"} <= set(row) or not 0 <= float(row["score"]) <= 100:
            raise LpaError(f"{source}: row {number} needs question, answer and a score in 0-100.")
    return rows


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def agreement(labels: list[float], scores: list[float], threshold: float = 50.0) -> dict[str, float]:
    """Pearson, Spearman, MAE and >= threshold split agreement of ``scores`` against ``labels``."""
    n = len(labels)
    if n == 0:
        return {"n": 0, "pearson_r": math.nan, "spearman_r": math.nan, "mae": math.nan, "split_agreement": math.nan}
    split = sum((a >= threshold) == (b >= threshold) for a, b in zip(labels, scores, strict=True)) / n
    return {"n": n, "pearson_r": pearson(labels, scores), "spearman_r": pearson(_ranks(labels), _ranks(scores)),
            "mae": sum(abs(a - b) for a, b in zip(labels, scores, strict=True)) / n, "split_agreement": split}


def validate_judge(judge: TraitJudge, trait: TraitDefinition, rows: list[dict[str, Any]], threshold: float = 50.0) -> dict[str, Any]:
    """Score the labelled answers with ``judge``; agreement over the answers it could score."""
    scores = judge.score_many(trait, [r["question"] for r in rows], [r["answer"] for r in rows])
    pairs = [(float(r["score"]), s.score) for r, s in zip(rows, scores, strict=True) if s.score is not None]
    stats = agreement([p[0] for p in pairs], [p[1] for p in pairs], threshold)
    return {"trait": trait.name, "judge": judge_key(judge, trait), "threshold": threshold, "failures": len(rows) - len(pairs), **stats,
            "rows": [{"label": r["score"], "score": s.score, "error": s.error, "answer": r["answer"][:120]}
                     for r, s in zip(rows, scores, strict=True)]}


__all__ = ["agreement", "builtin_labels_path", "load_labels", "validate_judge"]
