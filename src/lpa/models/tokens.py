"""Token ids every batching path needs, decided in one place.

Many chat models ship without a pad token; the value used to fill padded positions must be the
same whether a batch is built for training, generation, activation capture or judging, so that a
padded row never reads differently in two code paths.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def position_ids(attention_mask: Any) -> Any:
    """Positions that skip left padding, so a padded row sees the positions it has unpadded."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def left_pad(rows: Sequence[Sequence[int]], tokenizer: Any, device: Any = None, *, positions: bool = True) -> dict[str, Any]:
    """The one batch collator outside training: token-id rows -> left-padded ``input_ids``,
    ``attention_mask`` and (unless ``positions=False``) ``position_ids``.

    Left padding keeps every row's last token at the end, where generation and next-token
    readouts look.
    """
    import torch

    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad_token_id(tokenizer), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
            mask[i, width - len(row) :] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if positions:
        batch["position_ids"] = position_ids(mask)
    return {k: v.to(device) for k, v in batch.items()} if device is not None else batch


__all__ = ["left_pad", "pad_token_id", "position_ids"]
