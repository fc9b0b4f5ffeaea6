"""The core records that flow between stages, one shape everywhere (see ARCHITECTURE.md).

They are pydantic models so they round-trip through JSONL files unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Message = dict[str, str]  # {"role": "user" | "assistant" | "system", "content": "..."}


class Sample(BaseModel):
    """One evaluation item: a request and what a well-behaved model should do with it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    benchmark: str
    prompt: str | None = None
    messages: list[Message] | None = None
    category: str | None = None
    label: Literal["harmful", "benign"]
    extra: dict[str, Any] = Field(default_factory=dict)

    def as_messages(self) -> list[Message]:
        """The conversation to send: ``messages`` if given, else one user turn with ``prompt``."""
        if self.messages:
            return list(self.messages)
        if self.prompt is None:
            raise ValueError(f"Sample {self.id!r} has neither prompt nor messages.")
        return [{"role": "user", "content": self.prompt}]


class Generation(BaseModel):
    """One completion of one (possibly attacked) sample."""

    model_config = ConfigDict(extra="allow")

    sample_id: str
    benchmark: str | None = None
    attack: str = "direct"
    attack_args: dict[str, Any] = Field(default_factory=dict)
    model: str
    adapter: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    messages: list[Message] = Field(default_factory=list)
    prefill: str | None = None
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: Literal["eos", "length", "stop"] | None = None


class Verdict(BaseModel):
    """A judge's decision on one generation (or, for probes, on the request itself)."""

    model_config = ConfigDict(extra="allow")

    sample_id: str
    attack: str = "direct"
    judge: str
    judge_args: dict[str, Any] = Field(default_factory=dict)
    label: Literal["refused", "complied", "partial", "nonsense"] | None = None
    score: float | None = None
    rationale: str | None = None
    raw: str | None = None
    error: str | None = None


class PairExample(BaseModel):
    """A conversation and two assistant answers: train toward ``chosen``, away from ``rejected``."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Message]
    chosen: str
    rejected: str
    meta: dict[str, Any] = Field(default_factory=dict)
