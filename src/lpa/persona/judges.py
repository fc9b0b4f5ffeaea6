"""Trait judges: score how strongly an answer expresses a trait, 0-100, each labelled by name.

* ``llm``: an OpenAI-compatible endpoint; the single-number logprob trick
  (:func:`lpa.llm_client.weighted_number`), falling back to parsing the text.
* ``self``: the model under study judges itself with the same trick on its next-token logits.
* ``heuristic``: an offline keyword lexicon from the trait file (for tests and CPU demos; crude).

Every score records the judge's ``spec()`` so results say which judge produced them; a judge
that cannot produce a number returns ``score=None`` with an ``error`` instead of a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lpa.errors import LpaError
from lpa.persona.traits import TraitDefinition

JUDGE_NAMES = ("heuristic", "self", "llm")


@dataclass
class TraitScore:
    score: float | None
    raw: str | None = None
    error: str | None = None


class TraitJudge:
    name = "base"

    def spec(self) -> dict[str, Any]:
        return {"judge": self.name, "args": {}}

    def score_many(self, trait: TraitDefinition, questions: list[str], answers: list[str]) -> list[TraitScore]:
        return [self.score(trait, q, a) for q, a in zip(questions, answers, strict=True)]

    def score(self, trait: TraitDefinition, question: str, answer: str) -> TraitScore:
        raise NotImplementedError


def _count(text: str, words: list[str]) -> int:
    lowered = text.lower()
    return sum(len(re.findall(r"(?<![a-z])" + re.escape(w.lower()), lowered)) for w in words)


class HeuristicJudge(TraitJudge):
    """100 * e / (e + s + 1) with e, s the counts of expressing / suppressing keywords.

    One expressing word and nothing else scores 50 (counts as "expressed"); neutral text scores 0.
    """

    name = "heuristic"

    def score(self, trait: TraitDefinition, question: str, answer: str) -> TraitScore:
        if not trait.keywords.expressing:
            return TraitScore(None, error=f"trait {trait.name!r} defines no keywords for the heuristic judge")
        e = _count(answer, trait.keywords.expressing)
        s = _count(answer, trait.keywords.suppressing)
        return TraitScore(100.0 * e / (e + s + 1), raw=f"expressing={e} suppressing={s}")


def parse_number(text: str) -> float | None:
    match = re.search(r"\b(100|\d{1,2})(?:\.\d+)?\b", text)
    return float(match.group(1)) if match else None


class LLMJudge(TraitJudge):
    name = "llm"

    def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY") -> None:
        from lpa.llm_client import LLMClient

        self.client = LLMClient(base_url=base_url, model=model, api_key_env=api_key_env)

    def spec(self) -> dict[str, Any]:
        return {"judge": self.name, "args": self.client.args()}

    def score(self, trait: TraitDefinition, question: str, answer: str) -> TraitScore:
        from lpa.llm_client import weighted_number

        prompt = trait.render_rubric(question, answer)
        result = self.client.chat([{"role": "user", "content": prompt}], max_tokens=3, top_logprobs=20)
        if result.first_token_logprobs:
            value = weighted_number(result.first_token_logprobs)
            if value is not None:
                return TraitScore(value, raw=result.text)
        parsed = parse_number(result.text)
        if parsed is None:
            return TraitScore(None, raw=result.text, error="no number in judge output (refusal?)")
        return TraitScore(parsed, raw=result.text)


class SelfJudge(TraitJudge):
    """The studied model reads the rubric; score = probability-weighted mean of number tokens."""

    name = "self"

    def __init__(self, model: Any, tokenizer: Any, min_mass: float = 0.1, batch_size: int = 8) -> None:
        self.model, self.tokenizer, self.min_mass, self.batch_size = model, tokenizer, min_mass, batch_size
        vocab = tokenizer.get_vocab()
        self.number_ids: dict[int, int] = {}
        for token, index in vocab.items():
            text = tokenizer.convert_tokens_to_string([token]).strip()
            if text.isascii() and text.isdigit() and 0 <= int(text) <= 100 and index not in self.number_ids:
                self.number_ids[index] = int(text)
        if not self.number_ids:
            raise LpaError("The tokenizer has no number tokens; the self judge cannot be used with this model.")

    def spec(self) -> dict[str, Any]:
        return {"judge": self.name, "args": {"model": getattr(self.model, "lpa_spec", None), "min_mass": self.min_mass}}

    def score_many(self, trait: TraitDefinition, questions: list[str], answers: list[str]) -> list[TraitScore]:
        import torch

        from lpa.generation import format_chat, tokenize_prompts

        ids = torch.tensor(list(self.number_ids))
        values = torch.tensor([float(self.number_ids[i]) for i in self.number_ids])
        device = next(self.model.parameters()).device
        texts = [format_chat(self.tokenizer, trait.render_rubric(q, a)) for q, a in zip(questions, answers, strict=True)]
        scores: list[TraitScore] = []
        for start in range(0, len(texts), self.batch_size):
            batch = tokenize_prompts(self.tokenizer, texts[start : start + self.batch_size], device)
            with torch.no_grad():
                logits = self.model(**batch).logits[:, -1, :].float()
            probs = logits.softmax(-1)[:, ids.to(device)].cpu()
            for row in probs:
                mass = float(row.sum())
                if mass < self.min_mass:
                    scores.append(TraitScore(None, raw=f"number mass {mass:.3f}", error="too little mass on numbers"))
                else:
                    scores.append(TraitScore(float((row * values).sum() / mass), raw=f"number mass {mass:.3f}"))
        return scores

    def score(self, trait: TraitDefinition, question: str, answer: str) -> TraitScore:
        return self.score_many(trait, [question], [answer])[0]


def make_judge(
    name: str,
    *,
    model: Any = None,
    tokenizer: Any = None,
    judge_url: str | None = None,
    judge_model: str | None = None,
    api_key_env: str | None = "OPENAI_API_KEY",
) -> TraitJudge:
    """Create a trait judge by name (``heuristic`` | ``self`` | ``llm``)."""
    if name == "heuristic":
        return HeuristicJudge()
    if name == "self":
        if model is None or tokenizer is None:
            raise LpaError("The self judge needs the model and tokenizer.")
        return SelfJudge(model, tokenizer)
    if name == "llm":
        if not judge_url or not judge_model:
            raise LpaError("The llm judge needs --judge-url (OpenAI-compatible, e.g. http://127.0.0.1:8000/v1) and --judge-model.")
        return LLMJudge(judge_url, judge_model, api_key_env)
    raise LpaError(f"Unknown trait judge {name!r}. Valid choices: {', '.join(JUDGE_NAMES)}.")


__all__ = ["JUDGE_NAMES", "HeuristicJudge", "LLMJudge", "SelfJudge", "TraitJudge", "TraitScore", "make_judge", "parse_number"]
