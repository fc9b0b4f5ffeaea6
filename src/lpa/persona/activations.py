"""Residual-stream readouts shared by extraction, monitoring and screening.

``response_means``: per layer, the hidden state averaged over the response tokens of
(prompt, response) pairs; ``last_prompt``: the hidden state of the last prompt token (the
position that produces the first response token).  Batches are left-padded with explicit
position ids, so padding does not shift positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lpa import hooks
from lpa.generation import Conversation, format_chat, uses_chat_template
from lpa.models.tokens import left_pad


def _encode(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=not uses_chat_template(tokenizer))["input_ids"]


def response_means(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Conversation],
    responses: Sequence[str],
    *,
    systems: Sequence[str | None] | None = None,
    layers: Sequence[int] | None = None,
    batch_size: int = 8,
) -> torch.Tensor:
    """[n, len(layers), hidden] response-token means (all decoder layers by default).

    An empty response falls back to the last prompt token, so every row is defined.
    """
    layer_keys = list(range(hooks.num_layers(model))) if layers is None else list(layers)
    systems = list(systems) if systems is not None else [None] * len(conversations)
    device = next(model.parameters()).device
    rows: list[tuple[list[int], int]] = []
    for conv, response, system in zip(conversations, responses, systems, strict=True):
        prompt = format_chat(tokenizer, conv, system=system)
        prompt_ids = _encode(tokenizer, prompt)
        full_ids = _encode(tokenizer, prompt + response)
        n_response = max(len(full_ids) - len(prompt_ids), 0)
        rows.append((full_ids, n_response))
    out = torch.zeros(len(rows), len(layer_keys), hooks.hidden_size(model))
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        batch = left_pad([r[0] for r in chunk], tokenizer, device)
        with hooks.record(model, layer_keys) as store, torch.no_grad():
            model(**batch)
        width = batch["input_ids"].shape[1]
        for i, (_, n_response) in enumerate(chunk):
            lo = width - max(n_response, 1)
            for j, key in enumerate(layer_keys):
                out[start + i, j] = store[key][i, lo:].float().mean(0).cpu()
    return out


def producing_states(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Conversation],
    responses: Sequence[str],
    layer: int,
    *,
    systems: Sequence[str | None] | None = None,
    batch_size: int = 8,
) -> list[torch.Tensor]:
    """Per answer, [n_tokens, hidden] states at ``layer`` of the positions that produced each response token.

    Position t-1 produces token t, so the rows run from the last prompt token to the second-to-last
    response token: what a hook sees during generation, recomputed in one teacher-forced batch.
    """
    systems = list(systems) if systems is not None else [None] * len(conversations)
    device = next(model.parameters()).device
    rows: list[tuple[list[int], int]] = []
    for conv, response, system in zip(conversations, responses, systems, strict=True):
        prompt = format_chat(tokenizer, conv, system=system)
        prompt_ids = _encode(tokenizer, prompt)
        full_ids = _encode(tokenizer, prompt + response)
        rows.append((full_ids, max(len(full_ids) - len(prompt_ids), 0)))
    out: list[torch.Tensor] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        batch = left_pad([r[0] for r in chunk], tokenizer, device)
        with hooks.record(model, [layer]) as store, torch.no_grad():
            model(**batch)
        width = batch["input_ids"].shape[1]
        for i, (_, n_response) in enumerate(chunk):
            lo = width - 1 - max(n_response, 1)
            out.append(store[layer][i, lo : width - 1].float().cpu())
    return out


def last_prompt(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Conversation],
    *,
    systems: Sequence[str | None] | None = None,
    layers: Sequence[int] | None = None,
    batch_size: int = 8,
) -> torch.Tensor:
    """[n, len(layers), hidden] activations of the last prompt token (generation prompt included)."""
    return response_means(
        model, tokenizer, conversations, [""] * len(conversations), systems=systems, layers=layers, batch_size=batch_size
    )


__all__ = ["last_prompt", "producing_states", "response_means"]
