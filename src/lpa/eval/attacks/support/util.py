"""Helpers shared by attack modules: per-sample seeding, request rewriting, result rows.

Seeding is derived from ``(seed, sample.id)`` with a stable hash (not Python's salted ``hash``),
so an attack's output for one sample does not depend on which other samples are in the run.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import TYPE_CHECKING

from lpa.coherence import is_refusal
from lpa.records import Message, Sample

if TYPE_CHECKING:
    from lpa.eval.attacks.base import AttackContext

DEFAULT_TARGET = "Sure, here is"
DATA_DIR = Path(__file__).resolve().parents[3] / "data" / "attacks"


def stable_seed(*parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def sample_rng(seed: int, sample_id: str, *extra: object) -> random.Random:
    """A random generator that depends only on the seed and the sample (and optional extras)."""
    return random.Random(stable_seed(seed, sample_id, *extra))


def request_text(sample: Sample) -> str:
    """The request to attack: the last user turn's content."""
    messages = sample.as_messages()
    for message in reversed(messages):
        if message["role"] == "user":
            return message["content"]
    raise ValueError(f"Sample {sample.id!r} has no user turn to attack.")


def replace_request(sample: Sample, text: str) -> list[Message]:
    """The sample's conversation with its last user turn replaced by ``text`` (earlier turns kept)."""
    messages = [dict(m) for m in sample.as_messages()]
    for message in reversed(messages):
        if message["role"] == "user":
            message["content"] = text
            return messages
    raise ValueError(f"Sample {sample.id!r} has no user turn to attack.")


def target_string(sample: Sample, default: str = DEFAULT_TARGET) -> str:
    """The per-behaviour target (HarmBench/AdvBench ``target``) if the benchmark gives one."""
    target = sample.extra.get("target")
    return target if isinstance(target, str) and target.strip() else default


def judge_score(ctx: AttackContext, sample: Sample, text: str) -> float:
    """The context's judge, or ``1 - is_refusal`` when no judge is configured."""
    if ctx.judge is not None:
        return float(ctx.judge(sample, text))

    return 0.0 if is_refusal(text) else 1.0


