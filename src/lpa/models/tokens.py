"""Token ids every batching path needs, decided in one place.

Many chat models ship without a pad token; the value used to fill padded positions must be the
same whether a batch is built for training, generation, activation capture or judging, so that a
padded row never reads differently in two code paths.
"""

from __future__ import annotations

from typing import Any


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, else its end-of-sequence id, else 0.

    Padded positions are always masked out, so the fallback only has to be a valid id; using the
    end-of-sequence token keeps it a real vocabulary entry for every architecture.
    """
    for value in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, int):
            return value
    return 0


__all__ = ["pad_token_id"]
