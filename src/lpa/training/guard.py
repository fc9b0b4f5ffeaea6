"""Collapse guard: generate on fixed prompts and stop when the model degenerates.

LPA's known failure is generation collapse: answering the training completion to everything
("I do not agree with this statement.", also inside a sentence), or looping.  Log-likelihood
metrics miss it, and everyday prompts can miss it too (a first run on Qwen answered them normally
while 97% of harmful and borderline-safe answers were the training sentence), so the guard
generates on three groups shaped like the evaluated prompts -- everyday, borderline-safe
(XSTest-style) and harmful-looking -- and applies the template threshold to each group.  The
statistics are the ones the evaluation reports use (``lpa.coherence``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lpa.coherence import coherence_stats
from lpa.training.config import GuardSettings


@dataclass
class GuardResult:
    stats: dict[str, float]  # overall, plus "<group>/<stat>" per group
    collapsed: bool
    reasons: list[str]
    texts: list[str]
    warnings: list[str] = field(default_factory=list)  # over-refusal, when it does not stop the run


def check(stats: dict[str, float], settings: GuardSettings, groups: list[str] | None = None) -> list[str]:
    """The thresholds that ``stats`` violates (empty list = healthy), over-refusal included."""
    collapse, over_refusal = _violations(stats, settings, groups or [])
    return collapse + over_refusal


def _violations(stats: dict[str, float], settings: GuardSettings, groups: list[str]) -> tuple[list[str], list[str]]:
    """(collapse reasons, over-refusal reasons).  Over-refusal is kept apart because a model that
    refuses too much can still be evaluated (that cost is what XSTest measures), a collapsed one cannot."""
    rules = [
        ("template_leak_rate", stats["template_leak_rate"] > settings.max_template_leak),
        ("empty_rate", stats["empty_rate"] > settings.max_empty),
        ("mean_distinct_2", stats["mean_distinct_2"] < settings.min_distinct_2),
    ]
    rules += [(f"{g}/template_leak_rate", stats[f"{g}/template_leak_rate"] > settings.max_template_leak) for g in groups]
    # refusals are expected on harmful-looking prompts; on the others they mean over-refusal
    refusal = [(f"{g}/refusal_rate", stats[f"{g}/refusal_rate"] > settings.max_refusal) for g in groups if g != "harmful"]
    if not groups:
        refusal.append(("refusal_rate", stats["refusal_rate"] > settings.max_refusal))
    return [name for name, bad in rules if bad], [name for name, bad in refusal if bad]


def run_guard(
    model: Any, tokenizer: Any, prompts: dict[str, list[str]] | list[str], templates: list[str], settings: GuardSettings
) -> GuardResult:
    """Generate greedily on ``prompts`` (a list, or prompts by group) and check the statistics."""
    from lpa.generation import GenerationSettings, generate

    grouped = prompts if isinstance(prompts, dict) else {}
    flat = [p for group in grouped.values() for p in group] if grouped else list(prompts)
    gen = GenerationSettings(max_new_tokens=settings.max_new_tokens, batch_size=len(flat))
    was_training = model.training
    model.eval()
    try:
        texts = [c.text for c in generate(model, tokenizer, flat, gen)]
    finally:
        model.train(was_training)
    stats = _stats(texts, templates)
    start = 0
    for group, items in grouped.items():
        stats |= _stats(texts[start : start + len(items)], templates, prefix=f"{group}/")
        start += len(items)
    collapse, over_refusal = _violations(stats, settings, list(grouped))
    if settings.stop_on_over_refusal:
        collapse, over_refusal = collapse + over_refusal, []
    return GuardResult(stats, bool(collapse), collapse, texts, over_refusal)


def _stats(texts: list[str], templates: list[str], prefix: str = "") -> dict[str, float]:
    stats = coherence_stats(texts, templates).as_dict(prefix)
    stats.pop(f"{prefix}n", None)
    return stats
