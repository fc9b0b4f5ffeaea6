"""A minimal client for OpenAI-compatible chat-completion endpoints (vLLM servers, hosted APIs).

Used by LLM judges, the PAIR attacker and persona trait judges.  Standard library only (the
``openai`` package is not needed); the API key is read from an environment variable and is
never logged or written anywhere.
"""

from __future__ import annotations

import json
import math
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from lpa.errors import LpaError
from lpa.records import Message


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
    max_retries: int = 2

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

    def chat(
        self,
        messages: list[Message],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_logprobs: int = 0,
        **extra: Any,
    ) -> ChatResult:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            **extra,
        }
        if top_logprobs:
            body.update(logprobs=True, top_logprobs=top_logprobs)
        data = self._post("/chat/completions", body)
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise LpaError(f"Unexpected response from {self.base_url}: {str(data)[:200]}") from None
        logprobs: dict[str, float] = {}
        content = (choice.get("logprobs") or {}).get("content") or []
        if content:
            for item in content[0].get("top_logprobs") or []:
                logprobs[item["token"]] = float(item["logprob"])
        return ChatResult(text=text, first_token_logprobs=logprobs, raw=data)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = self.base_url.rstrip("/") + path
        headers = {"Content-Type": "application/json"}
        key = self._key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        last_error: Exception | None = None
        for attempt in range(self.max_retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read().decode())
            except urllib.error.HTTPError as exc:
                if exc.code in (401, 403):
                    raise LpaError(f"{url} rejected the API key (HTTP {exc.code}); check ${self.api_key_env}.") from None
                last_error = exc
                if exc.code < 500 and exc.code != 429:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last_error = exc
            time.sleep(min(2**attempt, 8) * 0.25)
        raise LpaError(f"Request to {url} failed: {last_error}")


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
