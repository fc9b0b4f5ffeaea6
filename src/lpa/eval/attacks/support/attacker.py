"""An attacker language model for adaptive attacks (PAIR, TAP, Crescendo, LLM past-tense rewriting).

Where the attacker runs is a pluggable *chat engine*: a function ``(conversations, settings) ->
texts``.  Three are built in:

* a local model (any ``lpa.models.load_model`` spec, e.g. ``qwen2.5-coder-1.5b`` or an HF id),
  generated in process, or ``"target"`` to reuse the target model (self-red-teaming on one GPU);
* a local model through any generation backend of :mod:`lpa.eval.backends` by name
  (``attacker_backend=``; the same engines that serve the target, e.g. a llama.cpp backend);
* an OpenAI-compatible endpoint (:class:`lpa.llm_client.LLMClient`; key from an environment
  variable, never recorded).

Tests and other engines plug in a function with :meth:`AttackerLM.from_function`.  With a
:class:`~lpa.eval.attacks.support.query_cache.QueryCache` every reply is cached, so an interrupted search
resumes without asking the attacker again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import Field

from lpa.errors import LpaError
from lpa.eval.attacks.support.util import DEFAULT_TARGET
from lpa.plugins import PluginArgs
from lpa.records import Message

_LOADED: dict[str, Any] = {}  # the last local attacker model loaded, by spec
ChatFunction = Callable[[Sequence[Sequence[Message]], dict[str, Any]], list[str]]


class AttackerArgs(PluginArgs):
    attacker_model: str | None = Field(
        None, description="Local attacker model spec (HF id, dir, .gguf, alias) or 'target' to reuse the target."
    )
    attacker_url: str | None = Field(None, description="OpenAI-compatible endpoint of the attacker, e.g. http://127.0.0.1:8000/v1.")
    attacker_name: str = Field("attacker", description="Model name sent to the attacker endpoint.")
    attacker_key_env: str | None = Field("OPENAI_API_KEY", description="Env var holding the endpoint's API key.")
    attacker_backend: str = Field("auto", description="Generation backend for a local attacker_model (lpa.eval.backends; "
                                                      "auto: llama.cpp for a GGUF model on the CPU when installed, else hf).")
    attacker_max_tokens: int = Field(256, ge=1, description="Maximum tokens per attacker reply.")
    attacker_temperature: float = Field(1.0, ge=0, description="Attacker sampling temperature (0 = greedy).")
    limit: int | None = Field(None, ge=1, description="Attack only the first N requests of each benchmark (a budget; "
                                                       "the same N requests in every run, so comparisons stay paired).")



class SearchArgs(AttackerArgs):
    """The budget and feedback settings every iterative search attack shares (PAIR, TAP)."""

    success_threshold: float = Field(0.5, ge=0, le=1, description="Stop once the judge's score reaches this.")
    history: int = Field(3, ge=1, description="Past rounds kept in the attacker's context.")
    max_seconds: float | None = Field(None, gt=0, description="Wall-clock budget per behaviour.")
    reply_chars: int = Field(600, ge=50, description="Characters of the target's reply shown to the attacker.")
    target: str = Field(DEFAULT_TARGET, description="Goal opening shown to the attacker when the behaviour has none.")
    seed: int = Field(0, description="Seed for the attacker's sampling.")

class AttackerLM:
    """Chat with the attacker; ``chat(conversations, seed)`` returns one reply per conversation."""

    def __init__(self, args: AttackerArgs, target: tuple[Any, Any] | None = None,
                 engine: ChatFunction | None = None, cache: Any = None, role: str = "attacker") -> None:
        if engine is None and not args.attacker_model and not args.attacker_url:
            raise LpaError("This attack needs an attacker: set attacker_model (a model spec or 'target') or attacker_url.")
        self.args = args
        self._target = target
        self._engine = engine
        self.cache = cache
        self.role = role
        self.queries = 0

    @classmethod
    def from_function(cls, function: ChatFunction, args: AttackerArgs | None = None, **kwargs: Any) -> AttackerLM:
        """An attacker backed by any chat function (a scripted fake in tests, another engine)."""
        return cls(args or AttackerArgs(attacker_model="custom"), engine=function, **kwargs)

    def with_cache(self, cache: Any, role: str = "attacker") -> AttackerLM:
        """The same engine, caching its replies under ``role`` (attacker, evaluator) in ``cache``."""
        clone = AttackerLM(self.args, self._target, self._engine_function(), cache, role)
        return clone

    def _engine_function(self) -> ChatFunction:
        if self._engine is None:
            self._engine = self._build_engine()
        return self._engine

    def _build_engine(self) -> ChatFunction:
        if self.args.attacker_url:
            return self._endpoint_engine()
        return self._local_engine()

    def _endpoint_engine(self) -> ChatFunction:
        from lpa.llm_client import LLMClient

        client = LLMClient(str(self.args.attacker_url), self.args.attacker_name, self.args.attacker_key_env)

        def chat(conversations: Sequence[Sequence[Message]], options: dict[str, Any]) -> list[str]:
            return [client.chat(list(c), max_tokens=options["max_tokens"], temperature=options["temperature"],
                                seed=options["seed"]).text for c in conversations]

        return chat

    def _local_engine(self) -> ChatFunction:
        from lpa.generation import GenerationSettings

        backend = self._local_backend()

        def chat(conversations: Sequence[Sequence[Message]], options: dict[str, Any]) -> list[str]:
            temperature = options["temperature"]
            settings = GenerationSettings(max_new_tokens=options["max_tokens"], do_sample=temperature > 0,
                                          temperature=temperature if temperature > 0 else 1.0, seed=options["seed"])
            return [c.text for c in backend.generate([list(c) for c in conversations], settings)]

        return chat

    def _local_backend(self) -> Any:
        from lpa.eval.backends import BackendConfig, make_backend
        from lpa.eval.backends.hf import HFBackend

        spec = str(self.args.attacker_model)
        if spec == "target":
            if self._target is None or self._target[0] is None:
                raise LpaError("attacker_model='target' needs the target's weights in process (the hf backend).")
            return HFBackend(*self._target)
        if self.engine_name() == "hf":
            if spec not in _LOADED:  # search attacks run once per behaviour: load the attacker once per process
                from lpa.models import load_model

                _LOADED.clear()
                _LOADED[spec] = HFBackend(*load_model(spec))
            return _LOADED[spec]
        from lpa.models.loader import load_tokenizer

        config = BackendConfig(name=self.engine_name())
        return make_backend(config, model=None, tokenizer=load_tokenizer(spec), model_name=spec, adapter=None)

    def engine_name(self) -> str:
        """The backend a local attacker model runs on, ``auto`` resolved (the same rule as the target's)."""
        from lpa.eval.backends import BackendConfig, resolve_engine

        try:
            config = BackendConfig(name=self.args.attacker_backend)
        except (ValueError, LpaError) as exc:
            raise LpaError(f"attacker_backend: {exc}") from None
        return resolve_engine(config, str(self.args.attacker_model))

    def options(self, seed: int, temperature: float | None = None, max_tokens: int | None = None) -> dict[str, Any]:
        return {"seed": seed, "temperature": self.args.attacker_temperature if temperature is None else temperature,
                "max_tokens": max_tokens or self.args.attacker_max_tokens}

    def chat(self, conversations: Sequence[Sequence[Message]], seed: int = 0, *, temperature: float | None = None,
             max_tokens: int | None = None) -> list[str]:
        options = self.options(seed, temperature, max_tokens)
        self.queries += len(conversations)
        if self.cache is None:
            return self._engine_function()(conversations, options)
        return self.cache.chat(self.role, self.describe(), conversations, options, self._engine_function())

    def describe(self) -> dict[str, Any]:
        if self.args.attacker_url:
            return {"url": self.args.attacker_url, "model": self.args.attacker_name}
        described: dict[str, Any] = {"model": self.args.attacker_model}
        engine = self.engine_name()
        if engine != "hf":  # hf left out so replies cached before the engine joined the key still match
            described["backend"] = engine
        return described
