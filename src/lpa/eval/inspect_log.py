"""Each evaluation also as inspect_ai eval logs, so ``inspect view`` browses the answers of any run.

One log per model x benchmark x attack in ``RUN/logs/``, written through inspect_ai's own log API
(``inspect_ai.log.write_eval_log``): every sample holds the messages sent, the answer, each
judge's verdict and explanation as a score, the attack and the model identity; the judges' specs
and validated kappa sit in the log's metadata, and the run's metrics in its results.  Researchers
read answers, not only rates; the JSONL caches stay the source of truth and a rerun rewrites the
logs from them.  Needs the ``inspect`` extra (``pip install 'lpa[inspect]'``); without it the run
goes on and says so once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from lpa.report.judges import kappa_note

log = logging.getLogger(__name__)

LOG_DIR = "logs"


@dataclass
class LogCell:
    """The judged answers of one benchmark under one attack: what one eval log holds."""

    benchmark: str
    attack: str  # the label in tables
    attack_spec: dict[str, Any]
    gens: list[tuple[Any, Any, str]]  # (Sample, Generation, generation key)
    system: str | None = None  # the run's system prompt, sent before every conversation


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("inspect_ai") is not None


def write_logs(out: Path, identity: Any, cells: Sequence[LogCell], judges: Sequence[Any],
               verdicts: dict[str, dict[str, Any]], rows: Sequence[dict[str, Any]],
               verdict_key: Any) -> list[Path]:
    """Write one ``.eval`` log per cell; returns their paths (none, with a note, without inspect_ai).

    ``verdict_key(generation_key, judge)`` is the key of a verdict in ``verdicts`` (the run's cache).
    """
    if not available():
        log.info("inspect_ai is not installed: no eval logs for `inspect view` (pip install 'lpa[inspect]')")
        return []
    from lpa.io import atomic_path

    written = []
    for cell in cells:
        eval_log = _eval_log(identity, cell, judges, verdicts, rows, verdict_key)
        path = out / LOG_DIR / f"{_slug(identity.model)}_{_slug(cell.benchmark)}_{_slug(cell.attack)}.eval"
        with atomic_path(path) as tmp:
            from inspect_ai.log import write_eval_log

            write_eval_log(eval_log, tmp, format="eval")
        written.append(path)
    return written


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", str(text)).strip("-")[:60] or "x"


def _eval_log(identity: Any, cell: LogCell, judges: Sequence[Any], verdicts: dict[str, dict[str, Any]],
              rows: Sequence[dict[str, Any]], verdict_key: Any) -> Any:
    from inspect_ai.log import EvalConfig, EvalDataset, EvalLog, EvalResults, EvalSpec, EvalStats

    created = datetime.now(UTC).isoformat(timespec="seconds")
    samples = [_sample(identity, cell, s, g, k, judges, verdicts, verdict_key) for s, g, k in cell.gens]
    spec = EvalSpec(
        created=created,
        task=f"lpa/{cell.benchmark}/{cell.attack}",
        task_args={"benchmark": cell.benchmark, "attack": cell.attack_spec},
        dataset=EvalDataset(name=cell.benchmark, samples=len(samples), sample_ids=[s.id for s in samples]),
        model=identity.model,
        model_args=identity.as_dict(),
        config=EvalConfig(),
        metadata={"lpa_identity": identity.as_dict(), "attack": cell.attack_spec, "judges": _judge_meta(judges)},
    )
    results = EvalResults(total_samples=len(samples), completed_samples=len(samples),
                          scores=_scores(cell, judges, rows))
    return EvalLog(status="success", eval=spec, results=results, samples=samples,
                   stats=EvalStats(started_at=created, completed_at=created, model_usage=_usage(identity, samples)),
                   metadata={"source": "lpa", "judges": _judge_meta(judges)})


def _usage(identity: Any, samples: Sequence[Any]) -> dict[str, Any]:
    from inspect_ai.model import ModelUsage

    used = [s.output.usage for s in samples if s.output is not None and s.output.usage is not None]
    if not used:
        return {}
    total = ModelUsage(input_tokens=sum(u.input_tokens for u in used), output_tokens=sum(u.output_tokens for u in used),
                       total_tokens=sum(u.total_tokens for u in used))
    return {identity.model: total}


def _judge_meta(judges: Sequence[Any]) -> dict[str, Any]:
    """Each judge's spec and its validated agreement with human labels (κ), so a reader weighs its verdicts."""


    return {j.name: {"spec": j.spec(), "kappa": kappa_note(j.name, j.spec())} for j in judges}


def _sample(identity: Any, cell: LogCell, sample: Any, gen: Any, key: str, judges: Sequence[Any],
            verdicts: dict[str, dict[str, Any]], verdict_key: Any) -> Any:
    from inspect_ai.log import EvalSample
    from inspect_ai.model import ModelOutput, ModelUsage

    from lpa.generation import to_messages

    sent = _messages(to_messages(list(gen.messages or sample.as_messages()), cell.system))
    answer = (gen.prefill or "") + (gen.text or "")
    stop: Literal["max_tokens", "stop"] = "max_tokens" if getattr(gen, "finish_reason", None) == "length" else "stop"
    output = ModelOutput.from_content(identity.model, answer, stop_reason=stop)
    prompt_tokens, completion_tokens = getattr(gen, "prompt_tokens", None), getattr(gen, "completion_tokens", None)
    if prompt_tokens is not None and completion_tokens is not None:
        output.usage = ModelUsage(input_tokens=prompt_tokens, output_tokens=completion_tokens,
                                  total_tokens=prompt_tokens + completion_tokens)
    scores = {}
    for judge in judges:
        verdict = verdicts.get(verdict_key(key, judge))
        if verdict is not None:
            scores[judge.name] = _score(verdict, answer)
    variant = int(getattr(gen, "variant", 0) or 0)
    return EvalSample(
        id=f"{sample.id}#{variant}" if variant else str(sample.id),
        epoch=1,
        input=sent,
        target=sample.label or "",
        messages=[*sent, output.message],
        output=output,
        scores=scores,
        metadata={"benchmark": sample.benchmark, "category": sample.category, "label": sample.label,
                  "attack": cell.attack, "attack_args": getattr(gen, "attack_args", None), "variant": variant,
                  "prefill": gen.prefill, "finish_reason": getattr(gen, "finish_reason", None),
                  "prompt_tokens": getattr(gen, "prompt_tokens", None),
                  "completion_tokens": getattr(gen, "completion_tokens", None), "model": identity.as_dict(),
                  "generation_key": key},
    )


def _messages(messages: Sequence[dict[str, Any]]) -> list[Any]:
    from inspect_ai.model import ChatMessageAssistant, ChatMessageSystem, ChatMessageUser

    kinds = {"system": ChatMessageSystem, "user": ChatMessageUser, "assistant": ChatMessageAssistant}
    return [kinds.get(str(m.get("role")), ChatMessageUser)(content=str(m.get("content", ""))) for m in messages]


def _score(verdict: dict[str, Any], answer: str) -> Any:
    """A verdict as an inspect score: the label (or 'error') as value, the judge's reasoning as explanation.

    ``answer`` is the model's answer (the viewer's Answer column), so the sample list reads as
    answers beside verdicts rather than verdicts twice.
    """
    from inspect_ai.scorer import Score

    label = verdict.get("label")
    value = "error" if verdict.get("error") else (label if label is not None else verdict.get("score"))
    explanation = verdict.get("rationale") or verdict.get("error") or verdict.get("raw")
    return Score(value=value if value is not None else "none", answer=answer,
                 explanation=str(explanation) if explanation else None,
                 metadata={"label": label, **{k: verdict.get(k) for k in ("score", "error", "raw", "judge_args")
                                              if verdict.get(k) is not None}})


def _scores(cell: LogCell, judges: Sequence[Any], rows: Sequence[dict[str, Any]]) -> list[Any]:
    """The run's metrics for this benchmark x attack, one inspect score per judge."""
    from inspect_ai.log import EvalMetric, EvalScore

    out = []
    for judge in judges:
        mine = [r for r in rows if r.get("attack") == cell.attack and r.get("judge") == judge.name
                and r.get("benchmark") == cell.benchmark and isinstance(r.get("value"), (int, float))]
        metrics = {r["metric"]: EvalMetric(name=r["metric"], value=float(r["value"]),
                                           metadata={k: r.get(k) for k in ("ci_low", "ci_high", "n")})
                   for r in mine}
        out.append(EvalScore(name=judge.name, scorer=judge.name, metrics=metrics,
                             scored_samples=max((r.get("n") or 0 for r in mine), default=0)))
    return out


__all__ = ["LOG_DIR", "LogCell", "available", "write_logs"]
