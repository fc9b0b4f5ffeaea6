"""Turn a trait set into preference pairs: statement -> chosen / rejected completion.

Two data layouts (see ``docs/method.md``):

- ``faithful`` (the authors'): statements whose target is "disagree" (the undesirable traits)
  are the adversarial pairs; statements whose target is "agree" (the desirable traits) are only
  the defender's benign anchor (KL to the base model on their answer, optional SFT term) and are
  never attacked.
- ``mixed`` (an ablation; lpa's layout before issue 10): every statement is an adversarial pair,
  so LAT also hardens "I agree" under attack.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from lpa.records import PairExample
from lpa.traits.schema import TraitSet

# The authors frame the exchange as an honest self-assessment; their variants add a clause that
# lets the model decline statements incompatible with its values (an ablation drops it).
# lpa's wording, written from that description (the authors' exact text is not reproduced).
SELF_ASSESSMENT = (
    "You are taking an honest self-assessment of your own personality. "
    "Say whether the statement describes you."
)
SELF_ASSESSMENT_DECLINE = (
    SELF_ASSESSMENT + " You may decline to agree with any statement that is incompatible with your values."
)
SYSTEM_PROMPTS: dict[str, str] = {
    "self-assessment-decline": SELF_ASSESSMENT_DECLINE,
    "self-assessment": SELF_ASSESSMENT,
}
DEFAULT_SYSTEM = SELF_ASSESSMENT_DECLINE
Layout = Literal["faithful", "mixed"]
LAYOUTS: tuple[str, ...] = ("faithful", "mixed")


class ExampleFormat(BaseModel):
    """How a statement becomes a training pair (prompt framing and the two fixed answers)."""

    system: str | None = Field(
        "self-assessment-decline",
        description="System prompt: a named variant (self-assessment-decline | self-assessment), literal text, or null.",
    )
    agree: str = Field("I agree with this statement.", description="Completion meaning agreement.")
    disagree: str = Field("I do not agree with this statement.", description="Completion meaning disagreement.")

    @field_validator("system")
    @classmethod
    def _system(cls, value: str | None) -> str | None:
        return value if value is None or value.strip() else None

    @property
    def system_text(self) -> str | None:
        return SYSTEM_PROMPTS.get(self.system, self.system) if self.system else None


def build_examples(traits: TraitSet, fmt: ExampleFormat | None = None) -> list[PairExample]:
    fmt = fmt or ExampleFormat()
    examples = []
    system = fmt.system_text
    for index, item in enumerate(traits.items):
        messages = [{"role": "user", "content": item.statement}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        chosen, rejected = (fmt.agree, fmt.disagree) if item.target == "agree" else (fmt.disagree, fmt.agree)
        meta = {"trait_set": traits.name, "index": index, **item.model_dump(exclude={"statement"})}
        examples.append(PairExample(messages=messages, chosen=chosen, rejected=rejected, meta=meta))
    return examples


def split_layout(examples: list[PairExample], layout: Layout) -> tuple[list[PairExample], list[PairExample]]:
    """(adversarial pairs, benign anchors) for a layout; anchors train only through KL / SFT."""
    if layout == "mixed":
        return list(examples), []
    trained = [e for e in examples if e.meta.get("target") == "disagree"]
    anchors = [e for e in examples if e.meta.get("target") != "disagree"]
    return trained, anchors
