"""Collapse guard: generate on fixed benign prompts and stop when the model degenerates.

LPA's known failure is generation collapse (answering the training completion to everything,
or looping).  Log-likelihood metrics miss it, so the guard looks at actual generations, with the
same statistics (``lpa.coherence``) the evaluation reports use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lpa.coherence import coherence_stats
from lpa.training.config import GuardSettings


@dataclass
class GuardResult:
    stats: dict[str, float]
    collapsed: bool
    reasons: list[str]
    texts: list[str]


def check(stats: dict[str, float], settings: GuardSettings) -> list[str]:
    """The thresholds that ``stats`` violates (empty list = healthy)."""
    rules = [
        ("template_leak_rate", stats["template_leak_rate"] > settings.max_template_leak),
        ("empty_rate", stats["empty_rate"] > settings.max_empty),
        ("mean_distinct_2", stats["mean_distinct_2"] < settings.min_distinct_2),
        ("refusal_rate", stats["refusal_rate"] > settings.max_refusal),
    ]
    return [name for name, bad in rules if bad]


def run_guard(model: Any, tokenizer: Any, prompts: list[str], templates: list[str], settings: GuardSettings) -> GuardResult:
    from lpa.generation import GenerationSettings, generate

    gen = GenerationSettings(max_new_tokens=settings.max_new_tokens, batch_size=len(prompts))
    was_training = model.training
    model.eval()
    try:
        texts = [c.text for c in generate(model, tokenizer, prompts, gen)]
    finally:
        model.train(was_training)
    stats = coherence_stats(texts, templates).as_dict()
    stats.pop("n", None)
    reasons = check(stats, settings)
    return GuardResult(stats, bool(reasons), reasons, texts)
