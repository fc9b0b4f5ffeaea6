"""``persona-sft``: LoRA fine-tuning on prompt -> response rows, optionally with preventative steering.

The persona "vaccine": with ``preventative``, ``+coef * v`` (a persona vector) is added at the
vector's layer on every position during the training forwards and backwards only
(:meth:`PersonaSft.train_context`), so the optimiser need not move the weights toward the trait;
the steering is a hook, absent at inference and from the saved adapter.  Same trainer as every
other method (no attacker; the loss is cross-entropy on the response tokens);
``lpa persona finetune`` is a thin caller of this method.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from lpa.training.base import Method, register_method
from lpa.training.config import TrainConfig
from lpa.training.data import ChatExample, Collator, resolve_data_file


class PersonaSftConfig(TrainConfig):
    method: Literal["persona-sft"] = "persona-sft"
    data: str = Field(description="JSONL rows with prompt|messages and response (relative to data_dir or absolute).")
    preventative: bool = Field(False, description="Add +coef*v at the vector's layer during the training forwards.")
    vector: str | None = Field(None, description="Persona-vector file used for preventative steering.")
    coef: float = Field(1.0, description="Preventative steering coefficient.")
    layer: int | None = Field(None, description="Steering layer (default: the vector's chosen layer).")
    max_response_tokens: int = Field(256, ge=1, description="Truncate responses to this many tokens.")

    # plain SFT: one update per step on the response tokens, no benign KL, no collapse guard
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "batch_size": 4, "lora": {"r": 8, "alpha": 16}, "guard": {"every": 0},
        "defender": {"steps": 1, "lr": 2e-4, "losses": {"toward": 1.0}, "reset_optimizer": False},
        "benign": {"source": None, "anchors": False},
    }

    @model_validator(mode="after")
    def _needs_vector(self) -> PersonaSftConfig:
        if self.preventative and not self.vector:
            raise ValueError("preventative fine-tuning needs a persona vector: set vector=PATH")
        return self


def sft_examples(rows: list[dict[str, Any]]) -> list[ChatExample]:
    """``{conversation, response}`` rows (``lpa.persona.screen.read_sft_rows``) as chat examples."""
    from lpa.generation import to_messages

    return [ChatExample(messages=to_messages(r["conversation"]), response=r["response"]) for r in rows]


@register_method
class PersonaSft(Method[PersonaSftConfig]):
    name = "persona-sft"
    adversarial = False

    def build_examples(self, config: PersonaSftConfig, tokenizer: Any) -> list[ChatExample]:
        from lpa.persona.screen import read_sft_rows

        return sft_examples(read_sft_rows(resolve_data_file(config.data, config.data_dir, "Fine-tuning data file")))

    def collator(self, config: PersonaSftConfig, tokenizer: Any) -> Collator:
        return Collator(tokenizer, config.max_prompt_tokens, config.max_response_tokens)

    def train_context(self, config: PersonaSftConfig, model: Any) -> AbstractContextManager[Any]:
        if not config.preventative:
            return nullcontext()
        from lpa.persona import load_vector
        from lpa.persona.steer import steer

        if getattr(self, "_vector", None) is None:
            assert config.vector is not None  # PersonaSftConfig requires it when preventative
            self._vector = load_vector(config.vector)
        return steer(model, self._vector, layer=config.layer, coef=config.coef, positions="all")
