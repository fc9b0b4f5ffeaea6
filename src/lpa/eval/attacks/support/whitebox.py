"""Shared pieces of white-box attacks: split a chat prompt around an adversarial suffix, and the
target-string loss for a batch of suffixes given as input embeddings.

Everything goes through ``model.get_input_embeddings()`` and ``model(inputs_embeds=...)``, the
same entry points training uses, so any causal LM works (models that scale embeddings
internally, like Gemma, do so on ``inputs_embeds`` too); the prompt comes from the tokenizer's
own chat template via :func:`lpa.generation.format_chat`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lpa.generation import format_chat, stop_token_ids, uses_chat_template
from lpa.records import Message

SUFFIX_MARKER = "<<LPA-ADVERSARIAL-SUFFIX>>"


@dataclass
class SuffixPrompt:
    """Token ids around the suffix slot: ``before + [suffix] + after`` is the prompt, ``target`` the goal."""

    before: torch.Tensor  # (1, Lb)
    after: torch.Tensor  # (1, La)
    target: torch.Tensor  # (1, Lt)


def suffix_prompt(tokenizer: Any, messages: list[Message], target: str, device: Any = None, separator: str = "") -> SuffixPrompt:
    """Split the formatted chat prompt at a suffix slot appended to the last user turn.

    With the default empty ``separator`` the suffix's own first token carries the space, so
    ``request + decode(suffix_ids)`` tokenises like the optimised prompt.
    """
    messages = [dict(m) for m in messages]
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    messages[last_user]["content"] = messages[last_user]["content"] + separator + SUFFIX_MARKER
    before_text, after_text = format_chat(tokenizer, messages).split(SUFFIX_MARKER)

    def ids(text: str, special: bool = False) -> torch.Tensor:
        return torch.tensor([tokenizer(text, add_special_tokens=special)["input_ids"]], dtype=torch.long, device=device)

    return SuffixPrompt(
        before=ids(before_text, special=not uses_chat_template(tokenizer)),
        after=ids(after_text),
        target=ids(target),
    )


def embedding_matrix(model: Any) -> torch.Tensor:
    return model.get_input_embeddings().weight


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


@dataclass
class PrefixCache:
    """Keys/values of the fixed tokens before the suffix, computed once per behaviour (batch 1)."""

    pairs: list[tuple[torch.Tensor, torch.Tensor]]
    config: Any

    def expand(self, batch: int) -> Any:
        """A fresh cache for ``batch`` rows; the stored prefix is never mutated (updates concatenate)."""
        from transformers import DynamicCache

        return DynamicCache(ddp_cache_data=[(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1))
                                            for k, v in self.pairs], config=self.config)


def prefix_cache(model: Any, prompt: SuffixPrompt) -> PrefixCache | None:
    """The KV cache of ``prompt.before`` (None when the model's cache is not a plain per-layer K/V list)."""
    with torch.no_grad():
        cache = model(input_ids=prompt.before, use_cache=True).past_key_values
    layers = getattr(cache, "layers", None)
    if not layers or not all(hasattr(layer, "keys") and hasattr(layer, "values") for layer in layers):
        return None
    if any(type(layer).__name__ != "DynamicLayer" for layer in layers):  # sliding windows etc.: recompute
        return None
    return PrefixCache([(layer.keys.detach(), layer.values.detach()) for layer in layers], model.config)


def prompt_embeds(model: Any, prompt: SuffixPrompt, suffix_embeds: torch.Tensor, with_target: bool = True,
                  with_before: bool = True) -> torch.Tensor:
    """``(B, L, D)`` input embeddings: before + suffix + after (+ target)."""
    embed = model.get_input_embeddings()
    batch = suffix_embeds.shape[0]
    parts = ([prompt.before] if with_before else []) + [None, prompt.after] + ([prompt.target] if with_target else [])
    pieces = [
        suffix_embeds.to(embed.weight.dtype) if p is None else embed(p).expand(batch, -1, -1) for p in parts
    ]
    return torch.cat(pieces, dim=1)


def target_loss(model: Any, prompt: SuffixPrompt, suffix_embeds: torch.Tensor,
                cache: PrefixCache | None = None) -> torch.Tensor:
    """Mean cross-entropy of the target tokens after each suffix in the batch: shape ``(B,)``.

    With ``cache`` (see :func:`prefix_cache`) only suffix + after + target are run through the
    model; the prefix's keys/values are reused.
    """
    inputs = prompt_embeds(model, prompt, suffix_embeds, with_before=cache is None)
    if cache is None:
        logits = model(inputs_embeds=inputs).logits
    else:
        logits = model(inputs_embeds=inputs, past_key_values=cache.expand(inputs.shape[0]), use_cache=True).logits
    length = prompt.target.shape[1]
    predicted = logits[:, -length - 1 : -1, :].float()
    labels = prompt.target.expand(inputs.shape[0], -1)
    return F.cross_entropy(predicted.transpose(1, 2), labels, reduction="none").mean(dim=1)


def generate_from_embeds(model: Any, tokenizer: Any, inputs_embeds: torch.Tensor, max_new_tokens: int) -> str:
    """Greedy continuation of a prompt given as embeddings (one row); stops at end-of-turn tokens."""
    stops = stop_token_ids(model, tokenizer)
    from lpa.models.tokens import pad_token_id

    pad_id = pad_token_id(tokenizer)
    mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
    with torch.no_grad():
        output = model.generate(
            inputs_embeds=inputs_embeds,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=pad_id,
            eos_token_id=stops or None,
        )
    tokens = output[0].tolist()
    if len(tokens) > max_new_tokens:  # some versions return the (dummy) prompt ids too
        tokens = tokens[-max_new_tokens:]
    end = next((k for k, t in enumerate(tokens) if t in stops), None)
    return tokenizer.decode(tokens if end is None else tokens[:end], skip_special_tokens=True)
