"""Generation through an OpenAI-compatible server (vLLM, SGLang, llama.cpp's server, TGI).

Prompts are formatted here with the model's own chat template and sent to ``/completions``
(several per request, ``settings.batch_size`` of them), so the server continues exactly the
text the HF backend would (prefill attacks included); ``api="chat"`` sends messages instead.
Requests run ``concurrency`` at a time; 429/5xx answers, timeouts and dropped connections are
retried with exponential backoff (``Retry-After`` wins); each finished request is handed to
``on_batch`` at once, so a killed run loses only requests in flight.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from lpa.errors import LpaError
from lpa.eval.backends import BACKENDS, BackendConfig, OnBatch, default_lora_name
from lpa.generation import (
    Completion,
    Conversation,
    GenerationSettings,
    format_chat,
    length_sorted_batches,
    to_messages,
    uses_chat_template,
)

log = logging.getLogger(__name__)
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
FINISH = {"stop": "eos", "eos": "eos", "length": "length"}


class RequestFailed(LpaError):
    pass


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
        self.requests = 0  # sent, retries included (for tests and benches)
        self.adapter = adapter
        self._lora_loaded = False

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
        texts = [format_chat(self.tokenizer, c, system=system, prefill=p)
                 for c, p in zip(conversations, prefills, strict=True)]
        if self.config.api == "chat":
            payloads = [self._chat_messages(c, system, p) for c, p in zip(conversations, prefills, strict=True)]
            groups = [[i] for i in range(len(texts))]
        else:
            payloads = texts
            groups = length_sorted_batches(self.tokenizer, texts, settings.batch_size)
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
        path = "/chat/completions" if self.config.api == "chat" else "/completions"
        data = self.post(path, self._body(payloads, settings))
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

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON with retries: 429/5xx (honouring Retry-After), timeouts and dropped connections."""
        url = self.url + path
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.config.api_key_env) if self.config.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        payload = json.dumps(body).encode()
        problem = ""
        for attempt in range(self.config.max_retries + 1):
            wait_s = self.config.backoff * 2**attempt * (1 + 0.1 * random.random())
            self.requests += 1
            try:
                request = urllib.request.Request(url, data=payload, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.config.timeout) as response:
                    raw = response.read().decode()
                    try:
                        return json.loads(raw)
                    except json.JSONDecodeError:  # vLLM's load_lora_adapter answers plain text
                        return {"text": raw}
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace")[:300]
                if exc.code not in RETRY_STATUS:
                    raise RequestFailed(f"{url} answered HTTP {exc.code}: {detail}") from None
                problem = f"HTTP {exc.code}"
                wait_s = _retry_after(exc.headers.get("Retry-After"), wait_s)
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError,
                    json.JSONDecodeError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if attempt < self.config.max_retries:
                log.warning("%s: %s; retry %d/%d in %.1fs", url, problem, attempt + 1, self.config.max_retries, wait_s)
                time.sleep(wait_s)
        raise RequestFailed(f"Request to {url} failed after {self.config.max_retries + 1} attempts: {problem}")


def _retry_after(header: str | None, default: float) -> float:
    try:
        return max(0.0, float(header)) if header is not None else default
    except ValueError:
        return default


BACKENDS.register("openai", OpenAIBackend)
