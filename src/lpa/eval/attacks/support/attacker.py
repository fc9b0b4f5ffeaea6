"""An attacker language model for adaptive attacks (PAIR, LLM past-tense rewriting).

Either a local model (any ``lpa.models.load_model`` spec, or ``"target"`` to reuse the target
model, e.g. for a self-red-teaming run on one GPU) or an OpenAI-compatible endpoint through
:class:`lpa.llm_client.LLMClient` (key from an environment variable, never recorded).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

from lpa.errors import LpaError
from lpa.plugins import PluginArgs
from lpa.records import Message


class AttackerArgs(PluginArgs):
    attacker_model: str | None = Field(
        None, description="Local attacker model spec (HF id, dir, .gguf, alias) or 'target' to reuse the target."
    )
    attacker_url: str | None = Field(None, description="OpenAI-compatible endpoint of the attacker, e.g. http://127.0.0.1:8000/v1.")
    attacker_name: str = Field("attacker", description="Model name sent to the attacker endpoint.")
    attacker_key_env: str | None = Field("OPENAI_API_KEY", description="Env var holding the endpoint's API key.")
    attacker_max_tokens: int = Field(256, ge=1, description="Maximum tokens per attacker reply.")
    attacker_temperature: float = Field(1.0, ge=0, description="Attacker sampling temperature (0 = greedy).")


class AttackerLM:
    """Chat with the attacker; ``chat(conversations, seed)`` returns one reply per conversation."""

    def __init__(self, args: AttackerArgs, target: tuple[Any, Any] | None = None) -> None:
        if not args.attacker_model and not args.attacker_url:
            raise LpaError("This attack needs an attacker: set attacker_model (a model spec or 'target') or attacker_url.")
        self.args = args
        self._target = target
        self._local: tuple[Any, Any] | None = None
        self._client: Any = None

    def _model(self) -> tuple[Any, Any]:
        if self._local is None:
            if self.args.attacker_model == "target":
                if self._target is None:
                    raise LpaError("attacker_model='target' is only possible inside a run with a target model.")
                self._local = self._target
            else:
                from lpa.models import load_model

                self._local = load_model(str(self.args.attacker_model))
        return self._local

    def chat(self, conversations: Sequence[Sequence[Message]], seed: int = 0) -> list[str]:
        if self.args.attacker_url:
            from lpa.llm_client import LLMClient

            if self._client is None:
                self._client = LLMClient(self.args.attacker_url, self.args.attacker_name, self.args.attacker_key_env)
            return [
                self._client.chat(
                    list(c), max_tokens=self.args.attacker_max_tokens, temperature=self.args.attacker_temperature, seed=seed
                ).text
                for c in conversations
            ]
        from lpa.generation import GenerationSettings, generate

        model, tokenizer = self._model()
        temperature = self.args.attacker_temperature
        settings = GenerationSettings(
            max_new_tokens=self.args.attacker_max_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else 1.0,
            seed=seed,
        )
        return [c.text for c in generate(model, tokenizer, [list(c) for c in conversations], settings)]

    def describe(self) -> dict[str, Any]:
        return {"model": self.args.attacker_model} if not self.args.attacker_url else {
            "url": self.args.attacker_url, "model": self.args.attacker_name}
