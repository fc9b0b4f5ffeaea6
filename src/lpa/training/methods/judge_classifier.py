"""``judge-classifier``: fine-tune a small LM (LoRA) into an answer judge on a gold file's labelled answers.

Each gold row becomes one chat example: the judge's question about the row's request and answer
(:func:`lpa.eval.judges.finetuned.classifier_messages`) and the reply "Yes" (``complied``) or "No"
(``refused`` or ``nonsense``), trained by cross-entropy like any SFT method on the same trainer.  The
``finetuned`` judge reads P(yes) at that position.  ``hold_out`` leaves whole attack families out of
training, so "does it generalise to attacks it never saw?" is one more run, validated on those families.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar, Literal

from pydantic import Field

from lpa.errors import LpaError
from lpa.training.base import Method, register_method
from lpa.training.config import TrainConfig
from lpa.training.data import ChatExample, Collator

YES, NO = "Yes", "No"


class JudgeClassifierConfig(TrainConfig):
    method: Literal["judge-classifier"] = "judge-classifier"
    gold: str = Field("shipped", description="Labelled answers (gold JSONL, or 'shipped' = the packaged gold set).")
    split: Literal["dev", "test", "all"] = Field("dev", description="Rows to train on (dev: never train on the "
                                                                    "split you report).")
    hold_out: list[str] = Field(default_factory=list, description="Attack families left out of training (judge "
                                                                  "them afterwards to measure generalisation).")
    max_answer_tokens: int = Field(256, ge=1, description="Train on each answer's first N tokens (the judge's "
                                                           "max_answer_tokens should match).")

    # plain SFT of one reply token: one update per step, no benign KL, no collapse guard, a small adapter
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "model": "qwen2.5-coder-0.5b", "steps": 120, "batch_size": 8, "max_prompt_tokens": 768,
        "lora": {"r": 8, "alpha": 16}, "guard": {"every": 0},
        "defender": {"steps": 1, "lr": 2e-4, "losses": {"toward": 1.0}, "reset_optimizer": False},
        "benign": {"source": None, "anchors": False},
    }


def classifier_examples(config: JudgeClassifierConfig, tokenizer: Any) -> list[ChatExample]:
    """The gold rows of the split, minus held-out families, as (question, Yes/No) chat examples."""
    from lpa.eval.judges.finetuned import classifier_messages
    from lpa.eval.judges.local_llm import truncate_tokens
    from lpa.eval.judges.support.gold import load_gold

    every_row = load_gold(config.gold)
    rows = [r for r in every_row if config.split == "all" or r.split == config.split]
    families = Counter(r.attack for r in every_row)  # a family only in the other split may still be held out
    unknown = sorted(set(config.hold_out) - set(families))
    if unknown:
        raise LpaError(f"hold_out names attack families the gold rows do not have: {', '.join(unknown)}. "
                       f"Valid choices: {', '.join(sorted(families))}.")
    kept = [r for r in rows if r.attack not in config.hold_out]
    labels = Counter(r.label == "complied" for r in kept)
    if not labels[True] or not labels[False]:
        raise LpaError(f"judge-classifier needs both complied and not-complied rows; {config.gold} "
                       f"(split {config.split}, hold_out {config.hold_out}) leaves {len(kept)} rows of one kind.")
    return [ChatExample(messages=classifier_messages(r.request, truncate_tokens(tokenizer, r.answer,
                                                                                 config.max_answer_tokens)),
                        response=YES if r.label == "complied" else NO) for r in kept]


@register_method
class JudgeClassifier(Method[JudgeClassifierConfig]):
    name = "judge-classifier"
    adversarial = False

    def build_examples(self, config: JudgeClassifierConfig, tokenizer: Any) -> list[ChatExample]:
        return classifier_examples(config, tokenizer)

    def collator(self, config: JudgeClassifierConfig, tokenizer: Any) -> Collator:
        return Collator(tokenizer, config.max_prompt_tokens, max_response_tokens=4)

    def templates(self, config: JudgeClassifierConfig, examples: Any) -> list[str]:
        return []  # a one-word reply is the point here, not a leak
