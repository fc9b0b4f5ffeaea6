"""Persona vectors as a lens on LPA: does LPA training move the ``evil`` projection, and does it predict compliance?

For each harmful prompt, the last-prompt-token projection on the unit vector is read with the
adapter on (LPA) and off (base, via peft's ``disable_adapter``: same weights, one model in
memory), and both models answer; compliance is read from each answer by a response judge (the
CLI uses the project's validated default; without one, the keyword refusal check), named in the report.  The projection shift is tested by a
sign-flip permutation test on the paired differences and compared with the same standardised
shift along random directions; the projection-compliance correlation comes with the random-direction
and shuffled-label baselines of :func:`lpa.persona.monitor.baselines`.
"""

from __future__ import annotations

import contextlib
import math
import random
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch

from lpa.coherence import is_refusal
from lpa.errors import LpaError
from lpa.generation import Conversation, GenerationSettings, generate
from lpa.persona.activations import last_prompt
from lpa.persona.monitor import baselines, projections
from lpa.persona.vector import PersonaVector
from lpa.plugins import create
from lpa.records import Generation


def _adapter_off(model: Any) -> Any:
    off = getattr(model, "disable_adapter", None)
    if off is None:
        raise LpaError("The LPA lens needs a model loaded with --adapter (a PEFT model) to compare with its base.")
    return off()


def sign_flip_p(diffs: Sequence[float], n_perm: int = 2000, seed: int = 0) -> float:
    """Two-sided p-value of mean(diffs) != 0 by random sign flips (paired permutation test)."""
    if not diffs:
        return math.nan
    observed = abs(statistics.fmean(diffs))
    rng = random.Random(seed)
    hits = sum(abs(statistics.fmean([d if rng.random() < 0.5 else -d for d in diffs])) >= observed - 1e-12 for _ in range(n_perm))
    return (hits + 1) / (n_perm + 1)


def standardised_shift(base: torch.Tensor, tuned: torch.Tensor, direction: torch.Tensor) -> float:
    """Mean paired projection difference in units of the base projections' std."""
    pb, pt = projections(base, direction), projections(tuned, direction)
    return float((pt - pb).mean() / pb.std().clamp_min(1e-12))


def lens(
    model: Any, tokenizer: Any, vector: PersonaVector, conversations: Sequence[Conversation], settings: GenerationSettings,
    *, layer: int | None = None, n_random: int = 100, seed: int = 0,
    complied: Callable[[list[str]], list[float]] | None = None, compliance_judge: str = "keyword refusal (lpa.coherence.is_refusal)",
) -> dict[str, Any]:
    """Projection shift base -> adapter and projection-compliance correlation with baselines.

    ``complied`` maps the answers (in prompt order) to 1.0 (complied) / 0.0; default: not a keyword refusal.
    """
    complied = complied or (lambda answers: [0.0 if is_refusal(t) else 1.0 for t in answers])
    key = vector.resolve(layer)
    direction = vector.at(key)
    acts: dict[str, torch.Tensor] = {}
    texts: dict[str, list[str]] = {}
    for name in ("base", "lpa"):
        with _adapter_off(model) if name == "base" else contextlib.nullcontext():
            acts[name] = last_prompt(model, tokenizer, conversations, layers=[key], batch_size=settings.batch_size)[:, 0]
            texts[name] = [c.text for c in generate(model, tokenizer, conversations, settings)]
    proj = {name: projections(a, direction).tolist() for name, a in acts.items()}
    comply = {name: complied(ts) for name, ts in texts.items()}
    diffs = [b - a for a, b in zip(proj["base"], proj["lpa"], strict=True)]
    shift = standardised_shift(acts["base"], acts["lpa"], direction)
    gen = torch.Generator().manual_seed(seed)
    random_shifts = [abs(standardised_shift(acts["base"], acts["lpa"], torch.randn(direction.shape[-1], generator=gen)))
                     for _ in range(n_random)]
    pooled = torch.cat([acts["base"], acts["lpa"]])
    correlation = baselines(pooled, direction, comply["base"] + comply["lpa"], n_random=n_random, seed=seed)
    within = {name: baselines(acts[name], direction, comply[name], n_random=n_random, seed=seed) for name in acts}
    return {
        "trait": vector.trait, "layer": key, "n": len(conversations), "compliance_judge": compliance_judge,
        "mean_projection": {name: statistics.fmean(p) for name, p in proj.items()},
        "mean_shift": statistics.fmean(diffs), "shift_p_sign_flip": sign_flip_p(diffs, seed=seed),
        "standardised_shift": shift,
        "random_direction_abs_shift_mean": statistics.fmean(random_shifts),
        "random_direction_shift_p": (sum(s >= abs(shift) for s in random_shifts) + 1) / (n_random + 1),
        "compliance_rate": {name: statistics.fmean(c) for name, c in comply.items()},
        "projection_vs_compliance_pooled": correlation,
        "projection_vs_compliance_within": within,
        "rows": [{"base_projection": proj["base"][i], "lpa_projection": proj["lpa"][i], "base_complied": comply["base"][i],
                  "lpa_complied": comply["lpa"][i], "base_text": texts["base"][i][:200], "lpa_text": texts["lpa"][i][:200]}
                 for i in range(len(conversations))],
    }


def judge_compliance(judge_name: str, samples: Sequence[Any]) -> Callable[[list[str]], list[float]]:
    """``complied`` for :func:`lens` from a response judge: 1.0 only for a ``complied`` verdict.

    Refusals and nonsense (including the training sentence) count as not complied; a judge error
    raises, so a lens result never silently rests on fewer answers than it reports.
    """
    from lpa.eval.judges import JUDGES

    judge = create(JUDGES, judge_name)

    def complied(answers: list[str]) -> list[float]:
        gens = [Generation(sample_id=s.id, benchmark=s.benchmark, model="lens", messages=s.messages or [], text=a)
                for s, a in zip(samples, answers, strict=True)]
        verdicts = judge.judge(list(samples), gens)
        errors = [v.error for v in verdicts if v.error]
        if errors:
            raise LpaError(f"Judge {judge_name!r} failed on {len(errors)} of {len(verdicts)} lens answers: {errors[0]}")
        return [1.0 if v.label == "complied" else 0.0 for v in verdicts]

    return complied


__all__ = ["judge_compliance", "lens", "sign_flip_p", "standardised_shift"]
