"""Generation through an OpenAI-compatible server.

Tested against ``llama_cpp.server`` (llama-cpp-python's server, started by the slow tests) and our
fake server (:mod:`lpa.eval.backends.support.server`, which speaks vLLM's extensions: several prompts per
request, ``return_token_ids``, ``continue_final_message``); no other server is tested here.

Prompts are formatted here with the model's own chat template and sent to ``/completions``
(several per request, ``settings.batch_size`` of them), so the server continues exactly the
text the HF backend would (prefill attacks included); ``api="chat"`` sends messages instead.
A server that rejects a list of prompts (``llama_cpp.server`` asserts one prompt per request) is
detected on the first such request: it is retried prompt by prompt, and if that works the rest of
the run sends one prompt per request.  Requests run ``concurrency`` at a time through the one
HTTP client (:class:`lpa.llm_client.LLMClient`: retries, backoff, Retry-After, key redaction);
each finished request is handed to ``on_batch`` at once, so a killed run loses only requests in flight.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from lpa.eval.backends import BACKENDS, BackendConfig, OnBatch, default_lora_name
from lpa.generation import (
    Completion,
    Conversation,
    GenerationSettings,
    format_chats,
    length_sorted_batches,
    to_messages,
    uses_chat_template,
)
from lpa.llm_client import RETRY_STATUS, LLMClient, RequestFailed

log = logging.getLogger(__name__)
FINISH = {"stop": "eos", "eos": "eos", "length": "length"}


class OpenAIBackend:
    name = "openai"

    @property
    def engine(self) -> str:
        return self.config.engine or ""  # not recorded: the server is trusted to be the same engine

    @classmethod
    def create(cls, config: BackendConfig, *, model: Any, tokenizer: Any, model_name: str,
               adapter: str | None) -> OpenAIBackend:
        return cls(config, tokenizer, model_name, adapter)

    def __init__(self, config: BackendConfig, tokenizer: Any, model_name: str, adapter: str | None) -> None:
        self.config, self.tokenizer = config, tokenizer
        base = config.served_model or model_name
        self.request_model = (config.lora_name or default_lora_name(adapter)) if adapter else base
        self.url = (config.base_url or "").rstrip("/")
        self.client = LLMClient(self.url, self.request_model, config.api_key_env, timeout=config.timeout,
                                max_retries=config.max_retries, backoff=config.backoff)
        self.adapter = adapter
        self._lora_loaded = False
        self.one_prompt_per_request = False  # learnt from the server on the first rejected list
        self._probe = threading.Lock()

    @property
    def requests(self) -> int:
        """Requests sent, retries included (for tests and benches)."""
        return self.client.requests

    def load_lora(self) -> None:
        """vLLM's runtime LoRA loading: adapters trained during an experiment need no server restart."""
        from pathlib import Path

        if self._lora_loaded or not self.adapter or not self.config.load_lora:
            return
        try:
            self.post("/load_lora_adapter", {"lora_name": self.request_model,
                                             "lora_path": str(Path(self.adapter).resolve())})
        except RequestFailed as exc:
            if "already" not in str(exc).lower():
                raise
        self._lora_loaded = True

    # -- public -----------------------------------------------------------------------------
    def generate(self, conversations: Sequence[Conversation], settings: GenerationSettings, *,
                 system: str | None = None, prefills: Sequence[str | None] | None = None,
                 progress: bool | str = False, on_batch: OnBatch | None = None) -> list[Completion]:
        from lpa.progress import progress_bar

        self.load_lora()
        prefills = list(prefills) if prefills is not None else [None] * len(conversations)
        texts = format_chats(self.tokenizer, conversations, system, prefills)
        if self.config.api == "chat":
            payloads: list[Any] = [self._chat_messages(c, system, p) for c, p in zip(conversations, prefills, strict=True)]
            groups = [[i] for i in range(len(texts))]
        else:
            payloads = texts
            size = 1 if self.one_prompt_per_request else settings.batch_size
            groups = length_sorted_batches(self.tokenizer, texts, size)
        results: list[Completion | None] = [None] * len(texts)
        label = progress if isinstance(progress, str) else "generating"
        with progress_bar(f"{label} ({self.url})", len(texts), enabled=None if progress else False) as bar, \
                ThreadPoolExecutor(self.config.concurrency) as pool:
            pending: dict[Future[list[Completion]], list[int]] = {}
            queue = list(reversed(groups))
            try:
                while queue or pending:
                    while queue and len(pending) < self.config.concurrency:
                        group = queue.pop()
                        future = pool.submit(self._request, [payloads[i] for i in group], [texts[i] for i in group],
                                             settings)
                        pending[future] = group
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        group = pending.pop(future)
                        completions = future.result()
                        for index, completion in zip(group, completions, strict=True):
                            results[index] = completion
                        if on_batch is not None:
                            on_batch(group, completions)
                        bar.advance(len(group))
            finally:
                for future in pending:
                    future.cancel()
        return [r for r in results if r is not None]

    # -- one request ------------------------------------------------------------------------
    def _chat_messages(self, conversation: Conversation, system: str | None, prefill: str | None) -> list[Any]:
        messages = to_messages(conversation, system)
        return [*messages, {"role": "assistant", "content": prefill}] if prefill else messages

    def _body(self, payloads: list[Any], settings: GenerationSettings) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.request_model,
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature if settings.do_sample else 0.0,
            "top_p": settings.top_p if settings.do_sample else 1.0,
            "seed": settings.seed,
            "skip_special_tokens": True,
            "return_token_ids": True,  # vLLM: exact per-choice token counts (others ignore it)
        }
        if self.config.api == "chat":
            body["messages"] = payloads[0]
            if payloads[0][-1]["role"] == "assistant":  # prefill: vLLM continues the last turn
                body.update(continue_final_message=True, add_generation_prompt=False)
        else:
            body["prompt"] = payloads
            body["add_special_tokens"] = not uses_chat_template(self.tokenizer)  # the template has the BOS
        return {**body, **self.config.extra}

    def _request(self, payloads: list[Any], texts: list[str], settings: GenerationSettings) -> list[Completion]:
        if len(payloads) > 1 and self.config.api != "chat":
            if self.one_prompt_per_request:
                return [c for p, t in zip(payloads, texts, strict=True) for c in self._request([p], [t], settings)]
            try:
                # a 5xx on a list may be the server refusing lists: probe prompt by prompt instead of retrying
                data = self.post("/completions", self._body(payloads, settings), retry_status=frozenset({429}))
            except RequestFailed as exc:
                if exc.status is None or exc.status in (401, 403, 404, 429):
                    raise
                self._one_prompt_per_request(exc)
                return [c for p, t in zip(payloads, texts, strict=True) for c in self._request([p], [t], settings)]
            return self._completions(data, payloads, texts, "/completions")
        path = "/chat/completions" if self.config.api == "chat" else "/completions"
        return self._completions(self.post(path, self._body(payloads, settings)), payloads, texts, path)

    def _one_prompt_per_request(self, exc: RequestFailed) -> None:
        with self._probe:
            if not self.one_prompt_per_request:
                log.warning("%s rejected %s prompts in one request (HTTP %s: %s); sending one prompt per request "
                            "for the rest of this run (set generation.batch_size: 1 to skip this probe)",
                            self.url, "several", exc.status, exc.detail)
                self.one_prompt_per_request = True

    def _completions(self, data: dict[str, Any], payloads: list[Any], texts: list[str], path: str) -> list[Completion]:
        try:
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            if len(choices) != len(payloads):
                raise KeyError("choices")
            outputs = [(c["message"]["content"] if self.config.api == "chat" else c["text"]) or "" for c in choices]
        except (KeyError, TypeError, IndexError):
            raise RequestFailed(f"Unexpected response from {self.url}{path}: {str(data)[:300]}") from None
        counts = self.tokenizer(outputs + texts, add_special_tokens=False)["input_ids"]
        usage = data.get("usage") or {}
        completions = []
        for i, (text, choice) in enumerate(zip(outputs, choices, strict=True)):
            if isinstance(choice.get("token_ids"), list):
                n = len(choice["token_ids"])
            elif len(choices) == 1 and isinstance(usage.get("completion_tokens"), int):
                n = usage["completion_tokens"]
            else:  # no per-choice count from this server: re-tokenise the text
                n = len(counts[i])
            completions.append(Completion(text=text, prompt_tokens=len(counts[len(outputs) + i]), completion_tokens=n,
                                          finish_reason=FINISH.get(str(choice.get("finish_reason")), "eos")))
        return completions

    def post(self, path: str, body: dict[str, Any], *,
             retry_status: frozenset[int] = RETRY_STATUS) -> dict[str, Any]:
        """POST through the one client (:meth:`lpa.llm_client.LLMClient.send`: retries, redaction)."""
        return self.client.post(path, body, retry_status=retry_status)


BACKENDS.register("openai", OpenAIBackend)
