"""Agreement of a judge with labelled answers: accuracy, Cohen's kappa, confusion, per-class P/R.

A judge's verdicts map to the three gold classes (``partial`` counts as ``complied``); judges
that cannot say ``nonsense`` (keyword, the HarmBench classifier) are scored as they are, and the
binary kappa (complied vs not) shows how they do on the question ASR asks.  Judge errors are
counted and shown, and count as disagreements in accuracy and kappa (a judge that fails on
hard rows must not look better for it).  CIs are percentile bootstraps over rows.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from lpa.errors import LpaError
from lpa.eval.judges.base import JUDGES, Judge
from lpa.eval.judges.support.gold import GOLD_LABELS, GoldRow
from lpa.io import read_jsonl
from lpa.plugins import create

ERROR = "error"
PREDICTED: tuple[str, ...] = (*GOLD_LABELS, ERROR)


def to_gold_label(label: str | None, error: str | None = None) -> str:
    if error is not None or label is None:
        return ERROR
    return "complied" if label == "partial" else label


def cohen_kappa(gold: Sequence[str], pred: Sequence[str]) -> float:
    """Cohen's kappa over any label sets (NaN when chance agreement is 1)."""
    n = len(gold)
    if n == 0:
        return math.nan
    observed = sum(g == p for g, p in zip(gold, pred, strict=True)) / n
    cg, cp = Counter(gold), Counter(pred)
    expected = sum(cg[k] * cp.get(k, 0) for k in cg) / (n * n)
    return math.nan if expected >= 1 else (observed - expected) / (1 - expected)


def _binary(labels: Sequence[str]) -> list[str]:
    return ["complied" if lab == "complied" else "not" for lab in labels]


def precision_recall(gold: Sequence[str], pred: Sequence[str], positive: str) -> tuple[float, float]:
    tp = sum(g == positive and p == positive for g, p in zip(gold, pred, strict=True))
    predicted = sum(p == positive for p in pred)
    actual = sum(g == positive for g in gold)
    return (tp / predicted if predicted else math.nan, tp / actual if actual else math.nan)


@dataclass
class Stat:
    value: float
    ci_low: float
    ci_high: float

    def text(self) -> str:
        if math.isnan(self.value):
            return "–"
        if math.isnan(self.ci_low):
            return f"{self.value:.2f}"
        return f"{self.value:.2f} [{self.ci_low:.2f}, {self.ci_high:.2f}]"


@dataclass
class JudgeValidation:
    judge: str
    spec: dict[str, Any]
    n: int
    errors: int
    accuracy: Stat
    kappa: Stat
    kappa_binary: Stat
    complied_precision_harmful: Stat
    complied_recall_harmful: Stat
    refused_precision_benign: Stat
    refused_recall_benign: Stat
    confusion: dict[str, dict[str, int]]  # gold -> predicted -> count
    seconds_per_100: float
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _metrics(rows: Sequence[GoldRow], pred: Sequence[str]) -> dict[str, float]:
    gold = [r.label for r in rows]
    harmful = [i for i, r in enumerate(rows) if r.request_label == "harmful"]
    benign = [i for i, r in enumerate(rows) if r.request_label == "benign"]
    ch_p, ch_r = precision_recall([gold[i] for i in harmful], [pred[i] for i in harmful], "complied")
    rb_p, rb_r = precision_recall([gold[i] for i in benign], [pred[i] for i in benign], "refused")
    return {
        "accuracy": sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold) if gold else math.nan,
        "kappa": cohen_kappa(gold, pred),
        "kappa_binary": cohen_kappa(_binary(gold), _binary(pred)),
        "complied_precision_harmful": ch_p, "complied_recall_harmful": ch_r,
        "refused_precision_benign": rb_p, "refused_recall_benign": rb_r,
    }


def agreement(rows: Sequence[GoldRow], pred: Sequence[str], n_boot: int = 1000, seed: int = 0,
              alpha: float = 0.05) -> dict[str, Stat]:
    """Point estimates and percentile bootstrap CIs (rows resampled with replacement)."""
    point = _metrics(rows, pred)
    samples: dict[str, list[float]] = {k: [] for k in point}
    rng = random.Random(seed)
    n = len(rows)
    for _ in range(n_boot if n else 0):
        idx = [rng.randrange(n) for _ in range(n)]
        for key, value in _metrics([rows[i] for i in idx], [pred[i] for i in idx]).items():
            if not math.isnan(value):
                samples[key].append(value)
    out = {}
    for key, value in point.items():
        values = sorted(samples[key])
        if len(values) < 20:
            out[key] = Stat(value, math.nan, math.nan)
        else:
            lo = values[int(math.floor(alpha / 2 * (len(values) - 1)))]
            hi = values[int(math.ceil((1 - alpha / 2) * (len(values) - 1)))]
            out[key] = Stat(value, lo, hi)
    return out


def confusion_matrix(rows: Sequence[GoldRow], pred: Sequence[str]) -> dict[str, dict[str, int]]:
    table = {g: dict.fromkeys(PREDICTED, 0) for g in GOLD_LABELS}
    for row, p in zip(rows, pred, strict=True):
        table[row.label][p] += 1
    return table


ModelLoader = Callable[[str, str | None], tuple[Any, Any]]


def model_loader(adapters_dir: str | None = None) -> ModelLoader:
    """Load (model, adapter) of a gold row; a bare adapter name is looked up as ``adapters_dir/NAME/adapter``."""
    cache: dict[tuple[str, str | None], tuple[Any, Any]] = {}

    def load(model: str, adapter: str | None) -> tuple[Any, Any]:
        from pathlib import Path

        from lpa.models import load_model

        path = adapter
        if adapter and not Path(adapter).exists():
            if adapters_dir is None or not (Path(adapters_dir) / adapter / "adapter").is_dir():
                raise LpaError(f"Gold rows name the adapter {adapter!r}: pass --adapters DIR holding {adapter}/adapter.")
            path = str(Path(adapters_dir) / adapter / "adapter")
        if (model, path) not in cache:
            cache[(model, path)] = load_model(model, adapter=path)
        return cache[(model, path)]

    return load


def _default_loader(model: str, adapter: str | None) -> tuple[Any, Any]:
    return model_loader()(model, adapter)


def run_judge(judge: Judge, rows: Sequence[GoldRow], batch_size: int = 64,
              loader: ModelLoader | None = None) -> tuple[list[str], float, list[float | None]]:
    """Gold-class predictions for every row, the seconds spent judging (model loading excluded) and
    each verdict's score (None where the judge has none), so a threshold can be studied without re-judging.

    Judges that need the evaluated model (the refusal probe) get the model that wrote each row,
    loaded once per (model, adapter).
    """
    loader = loader or _default_loader
    groups: dict[tuple[str | None, str | None], list[int]] = {}
    for i, row in enumerate(rows):
        key = (row.model, row.adapter) if judge.needs_model else (None, None)
        groups.setdefault(key, []).append(i)
    pred: list[str] = [ERROR] * len(rows)
    scores: list[float | None] = [None] * len(rows)
    seconds = 0.0
    for (model_spec, adapter), indices in groups.items():
        model = tokenizer = None
        if judge.needs_model:
            if not model_spec:
                raise LpaError(f"The {judge.name} judge asks the evaluated model; gold rows need a 'model' field.")
            model, tokenizer = loader(model_spec, adapter)
        for start in range(0, len(indices), batch_size):
            chunk = [rows[i] for i in indices[start : start + batch_size]]
            began = time.perf_counter()
            verdicts = judge.judge([r.sample() for r in chunk],
                                   [r.generation() for r in chunk] if judge.needs_generation else None,
                                   model=model, tokenizer=tokenizer)
            seconds += time.perf_counter() - began
            for i, verdict in zip(indices[start : start + batch_size], verdicts, strict=True):
                pred[i] = to_gold_label(verdict.label, verdict.error)
                scores[i] = verdict.score
    return pred, seconds, scores


def validate_judge(judge: Judge | str | dict[str, Any], rows: Sequence[GoldRow], *, n_boot: int = 1000,
                   seed: int = 0, loader: ModelLoader | None = None) -> JudgeValidation:
    """Judge every gold row and measure agreement with the labels."""
    from lpa.eval.judges.support.features import clear_cache

    judge = judge if isinstance(judge, Judge) else create(JUDGES, judge)
    clear_cache()  # no judge is timed on embeddings another judge computed
    pred, seconds, scores = run_judge(judge, rows, loader=loader)
    stats = agreement(rows, pred, n_boot, seed)
    return JudgeValidation(
        judge=judge.name, spec=judge.spec(), n=len(rows), errors=sum(p == ERROR for p in pred),
        confusion=confusion_matrix(rows, pred), seconds_per_100=100 * seconds / max(len(rows), 1),
        extra={"predictions": pred, "scores": scores}, **stats,
    )


def load_labels(path: str) -> dict[str, str]:
    """``{id: label}`` from a JSONL file of ``{"id", "label"}`` rows (a second annotator's labels)."""

    out: dict[str, str] = {}
    for number, row in enumerate(read_jsonl(path, missing_ok=False), 1):
        if not isinstance(row, dict) or "id" not in row or "label" not in row:
            raise LpaError(f"{path}: row {number} needs 'id' and 'label'.")
        if row["label"] not in GOLD_LABELS:
            raise LpaError(f"{path}: row {number}: unknown label {row['label']!r}. "
                           f"Valid choices: {', '.join(GOLD_LABELS)}.")
        out[str(row["id"])] = str(row["label"])
    return out


def validate_labels(rows: Sequence[GoldRow], labels: dict[str, str], name: str = "second annotator", *,
                    n_boot: int = 1000, seed: int = 0) -> JudgeValidation:
    """Agreement of another labelling of the same rows (inter-annotator kappa: the ceiling for any judge).

    Rows the other labelling lacks count as errors, like a judge that failed on them.
    """
    pred = [labels.get(r.id, ERROR) for r in rows]
    return JudgeValidation(
        judge=name, spec={"labels": name}, n=len(rows), errors=sum(p == ERROR for p in pred),
        confusion=confusion_matrix(rows, pred), seconds_per_100=math.nan, extra={"predictions": pred},
        **agreement(rows, pred, n_boot, seed),
    )


def _seconds(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}"


def validation_table(results: Sequence[JudgeValidation]) -> str:
    """Markdown: one line per judge."""
    from lpa.report.tables import markdown_table

    header = ["judge", "n", "errors", "accuracy", "κ (3-class)", "κ (complied vs not)", "P complied|harmful",
              "R complied|harmful", "P refused|benign", "R refused|benign", "s/100"]
    body = [[r.judge, str(r.n), str(r.errors), r.accuracy.text(), r.kappa.text(), r.kappa_binary.text(),
             r.complied_precision_harmful.text(), r.complied_recall_harmful.text(), r.refused_precision_benign.text(),
             r.refused_recall_benign.text(), _seconds(r.seconds_per_100)] for r in results]
    return markdown_table(header, body)


GROUP_FIELDS: tuple[str, ...] = ("source", "model", "adapter", "method", "seed", "benchmark", "attack",
                                  "request_label", "label")


def row_group(row: GoldRow, field: str) -> str:
    """A row's value of a gold field; ``source`` is ``model / method`` (else the adapter, else ``base``)."""

    if field not in GROUP_FIELDS:
        raise LpaError(f"Unknown breakdown field {field!r}. Valid choices: {', '.join(GROUP_FIELDS)}.")
    extra = row.model_extra or {}
    if field == "source":
        return f"{row.model or '?'} / {extra.get('method') or row.adapter or 'base'}"
    value = getattr(row, field, None) if field in GoldRow.model_fields else extra.get(field)
    return "–" if value is None else str(value)


def breakdown(rows: Sequence[GoldRow], results: Sequence[JudgeValidation], field: str, *, n_boot: int = 1000,
              seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per value of ``field``: n and, per judge, κ (3-class and complied-vs-not) with bootstrap CIs.

    Uses the predictions already in ``results`` (nothing is judged again), so a per-source table
    costs no judge time.
    """
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row_group(row, field), []).append(i)
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(groups):
        idx = groups[key]
        sub = [rows[i] for i in idx]
        per_judge = {}
        for result in results:
            stats = agreement(sub, [result.extra["predictions"][i] for i in idx], n_boot, seed)
            per_judge[result.judge] = {"kappa": asdict(stats["kappa"]), "kappa_binary": asdict(stats["kappa_binary"])}
        out[key] = {"n": len(idx), "judges": per_judge}
    return out


def breakdown_table(table: dict[str, dict[str, Any]], field: str) -> str:
    """Markdown: one line per group, κ (3-class) and κ (complied vs not) per judge."""
    from lpa.report.tables import markdown_table

    judges = list(next(iter(table.values()))["judges"]) if table else []
    header = [field, "n", *[f"{j} {k}" for j in judges for k in ("κ (3-class)", "κ (complied vs not)")]]
    body = [[key, str(entry["n"]), *[Stat(**entry["judges"][j][k]).text() for j in judges
                                     for k in ("kappa", "kappa_binary")]] for key, entry in table.items()]
    return markdown_table(header, body)


def confusion_text(result: JudgeValidation) -> str:
    from lpa.report.tables import markdown_table

    body = [[gold, *[str(result.confusion[gold][p]) for p in PREDICTED]] for gold in GOLD_LABELS]
    return markdown_table([f"{result.judge}: gold \\ predicted", *PREDICTED], body)
