"""The one HTTP client for OpenAI-compatible servers: generation (the ``openai`` backend), LLM judges,
the PAIR attacker and persona trait judges all send their requests through :class:`LLMClient`.

Built on the ``openai`` package (its connection pool, timeouts and error types), with the retry
rules in one place, here: connection errors, timeouts, 408/409/425/429 and 5xx answers are retried
with exponential backoff (the server's ``Retry-After`` wins); any other 4xx can never succeed and is
raised at once.  Every error shows the server's own error text, with the API key and any
``Authorization`` value redacted.  The key is read from an environment variable and is never logged
or written anywhere.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lpa.errors import LpaError
from lpa.records import Message

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_SECRET_PATTERNS = [
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(bearer\s+)?[^\s\"',}]+"),
    re.compile(r"(?i)((?:api[_-]?key|x-api-key)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),
]


class RequestFailed(LpaError):
    """A request that failed for good; ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.status, self.detail = status, detail


def redact(text: str, secrets: tuple[str | None, ...] = ()) -> str:
    """``text`` with the given secrets, Authorization/API-key values and ``sk-...`` keys replaced by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _SECRET_PATTERNS[0].sub(lambda m: m.group(1) + (m.group(2) or "") + "***", text)
    text = _SECRET_PATTERNS[1].sub(lambda m: m.group(1) + "***", text)
    return _SECRET_PATTERNS[2].sub("***", text)


@dataclass
class ChatResult:
    text: str
    # Top logprobs of the first generated token: {token: logprob}; empty if the server gave none.
    first_token_logprobs: dict[str, float] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class LLMClient:
    """``base_url`` like ``http://127.0.0.1:8000/v1``; ``api_key_env`` names the env var holding the key."""

    base_url: str
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout: float = 60.0
    max_retries: int = 3
    backoff: float = 0.5  # first wait in seconds; doubles per retry
    requests: int = 0  # sent, retries included (tests, benches)
    _client: Any = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def _key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if key is None and not _is_local(self.base_url):
            raise LpaError(
                f"No API key: set the environment variable {self.api_key_env} for {self.base_url} "
                "(or point --judge-url at a local OpenAI-compatible server such as vLLM)."
            )
        return key

    def args(self) -> dict[str, Any]:
        """Settings safe to record in results (never the key)."""
        return {"base_url": self.base_url, "model": self.model}

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    import openai
                except ImportError:
                    raise LpaError("OpenAI-compatible servers need the openai package: pip install openai.") from None
                # retries are ours (send), so one rule covers every caller
                self._client = openai.OpenAI(base_url=self.base_url, api_key=self._key() or "EMPTY",
                                             timeout=self.timeout, max_retries=0)
        return self._client

    def send(self, call: Callable[[Any], T], what: str, *, retry_status: frozenset[int] = RETRY_STATUS) -> T:
        """Run ``call(openai_client)`` under the retry rules; a :class:`RequestFailed` with the server's text.

        ``retry_status``: the HTTP statuses worth retrying (dropped connections and timeouts always are)."""
        import openai

        client = self.client()
        url = self.base_url.rstrip("/") + what
        secrets = (os.environ.get(self.api_key_env) if self.api_key_env else None,)
        attempts = self.max_retries + 1
        problem, status, detail = "", None, ""
        for attempt in range(attempts):
            wait_s = self.backoff * 2**attempt * (1 + 0.1 * random.random())
            self.requests += 1
            try:
                return call(client)
            except openai.APIStatusError as exc:
                status, detail = exc.status_code, redact(_server_text(exc), secrets)
                if status in (401, 403):
                    raise RequestFailed(f"{url} rejected the API key (HTTP {status}: {detail}); check "
                                        f"${self.api_key_env}.", status, detail) from None
                if status not in retry_status:
                    raise RequestFailed(f"{url} answered HTTP {status}: {detail}", status, detail) from None
                problem = f"HTTP {status}: {detail}"
                wait_s = _retry_after(exc.response.headers.get("retry-after"), wait_s)
            except openai.APIConnectionError as exc:
                status, detail = None, ""
                problem = redact(f"{type(exc).__name__}: {exc.__cause__ or exc}", secrets)
            if attempt < attempts - 1:
                log.warning("%s: %s; retry %d/%d in %.1fs", url, problem, attempt + 1, attempts - 1, wait_s)
                time.sleep(wait_s)
        raise RequestFailed(f"Request to {url} failed after {attempts} attempts: {problem}", status, detail)

    def post(self, path: str, body: dict[str, Any], *,
             retry_status: frozenset[int] = RETRY_STATUS) -> dict[str, Any]:
        """POST a JSON body to ``base_url + path``; the answer as JSON (``{"text": ...}`` for plain text)."""
        raw = self.send(lambda c: c.post(path, body=body, cast_to=object), path, retry_status=retry_status)
        if isinstance(raw, dict):
            return raw
        try:
            data = json.loads(raw)
        except (TypeError, json.JSONDecodeError):  # vLLM's load_lora_adapter answers plain text
            return {"text": str(raw)}
        return data if isinstance(data, dict) else {"data": data}

    def chat(
        self,
        messages: list[Message],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_logprobs: int = 0,
        **extra: Any,
    ) -> ChatResult:
        body: dict[str, Any] = dict(model=self.model, messages=messages, max_tokens=max_tokens,
                                    temperature=temperature, **extra)
        if top_logprobs:
            body.update(logprobs=True, top_logprobs=top_logprobs)
        data = self.post("/chat/completions", body)
        try:
            choice = data["choices"][0]
            text = (choice.get("message") or {}).get("content") or ""
        except (KeyError, IndexError, TypeError):
            raise LpaError(f"Unexpected response from {self.base_url}: {str(data)[:200]}") from None
        logprobs: dict[str, float] = {}
        content = (choice.get("logprobs") or {}).get("content") or []
        if content:
            for item in content[0].get("top_logprobs") or []:
                logprobs[item["token"]] = float(item["logprob"])
        return ChatResult(text=text, first_token_logprobs=logprobs, raw=data)


def _server_text(exc: Any) -> str:
    """The server's own error message (its JSON ``error.message`` or body), not the SDK's summary."""
    try:
        text = exc.response.text
    except Exception:  # noqa: BLE001 - a response without a readable body
        return str(exc)[:500]
    try:
        data = json.loads(text)
        error = data.get("error", data) if isinstance(data, dict) else data
        message = error.get("message") if isinstance(error, dict) else None
        text = str(message or error or text)
    except (json.JSONDecodeError, AttributeError):
        pass
    return " ".join(text.split())[:500]


def _retry_after(header: str | None, default: float) -> float:
    try:
        return max(0.0, float(header)) if header is not None else default
    except ValueError:
        return default


def _is_local(url: str) -> bool:
    return any(h in url for h in ("://127.", "://localhost", "://[::1]"))


def weighted_number(logprobs: dict[str, float], low: int = 0, high: int = 100, min_mass: float = 0.25) -> float | None:
    """Probability-weighted mean of integer tokens in [low, high]; None if too little mass is on numbers.

    The persona-vectors judge trick: ask for a single number, read the top logprobs.
    """
    total = 0.0
    weighted = 0.0
    for token, logprob in logprobs.items():
        token = token.strip()
        if token.isdigit() and low <= int(token) <= high:
            p = math.exp(logprob)
            total += p
            weighted += p * int(token)
    if total < min_mass:
        return None
    return weighted / total
