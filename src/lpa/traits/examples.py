"""Turn a trait set into preference pairs: statement -> chosen / rejected completion."""

from __future__ import annotations

from pydantic import BaseModel, Field

from lpa.training.data import PairExample
from lpa.traits.schema import TraitSet

DEFAULT_SYSTEM = (
    "You are taking an honest self-assessment of your own personality. "
    "Say whether the statement describes you."
)


class ExampleFormat(BaseModel):
    """How a statement becomes a training pair (prompt framing and the two fixed answers)."""

    system: str | None = Field(DEFAULT_SYSTEM, description="System prompt framing the honest self-assessment (null = none).")
    agree: str = Field("I agree with this statement.", description="Completion meaning agreement.")
    disagree: str = Field("I do not agree with this statement.", description="Completion meaning disagreement.")


def build_examples(traits: TraitSet, fmt: ExampleFormat | None = None) -> list[PairExample]:
    fmt = fmt or ExampleFormat()
    examples = []
    for index, item in enumerate(traits.items):
        messages = [{"role": "user", "content": item.statement}]
        if fmt.system:
            messages.insert(0, {"role": "system", "content": fmt.system})
        chosen, rejected = (fmt.agree, fmt.disagree) if item.target == "agree" else (fmt.disagree, fmt.agree)
        meta = {"trait_set": traits.name, "index": index, **item.model_dump(exclude={"statement"})}
        examples.append(PairExample(messages=messages, chosen=chosen, rejected=rejected, meta=meta))
    return examples
