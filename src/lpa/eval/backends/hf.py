"""The torch engine in this process: :func:`lpa.generation.generate` on the loaded HF model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lpa.eval.backends import BACKENDS, BackendConfig, OnBatch
from lpa.generation import Completion, Conversation, GenerationSettings


class HFBackend:
    """``model.generate``-equivalent decoding in process (see :func:`lpa.generation.generate`)."""

    name = "hf"
    engine = "torch"

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer

    @classmethod
    def create(cls, config: BackendConfig, *, model: Any, tokenizer: Any, model_name: str,
               adapter: str | None) -> HFBackend:
        if model is None:
            raise ValueError("the hf backend needs a loaded model")
        return cls(model, tokenizer)

    def generate(self, conversations: Sequence[Conversation], settings: GenerationSettings, *,
                 system: str | None = None, prefills: Sequence[str | None] | None = None,
                 progress: bool | str = False, on_batch: OnBatch | None = None) -> list[Completion]:
        from lpa.generation import generate

        return generate(self.model, self.tokenizer, conversations, settings, system=system, prefills=prefills,
                        progress=progress, on_batch=on_batch)


BACKENDS.register("hf", HFBackend)
