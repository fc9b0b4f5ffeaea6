"""Greedy Coordinate Gradient (GCG): a discrete adversarial suffix found by gradient-guided token
swaps, so the final prompt is ordinary text (transferable, usable through any API).

Each step: the gradient of the target loss w.r.t. the suffix's one-hot tokens ranks the top-k
replacement tokens per position; ``candidates`` random single-token swaps are scored exactly in
batches and the best one is kept.  Budget: ``steps``, ``candidates`` and ``max_seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import Field

from lpa.eval.attacks.base import Attack, AttackContext, AttackedPrompt, make_generation, register_attack
from lpa.eval.attacks.support.util import (
    DEFAULT_TARGET,
    replace_request,
    request_text,
    target_string,
)
from lpa.eval.attacks.support.whitebox import (
    embedding_matrix,
    model_device,
    prefix_cache,
    suffix_prompt,
    target_loss,
)
from lpa.plugins import PluginArgs
from lpa.progress import progress
from lpa.records import Generation, Sample


class GCGArgs(PluginArgs):
    steps: int = Field(50, ge=1, description="Optimisation steps (one gradient + one candidate sweep each).")
    candidates: int = Field(128, ge=1, description="Candidate suffixes scored per step (search width).")
    topk: int = Field(64, ge=1, description="Top-k replacement tokens per position from the gradient.")
    batch_size: int = Field(64, ge=1, description="Candidates per forward pass.")
    max_seconds: float | None = Field(None, gt=0, description="Wall-clock budget per behaviour (stops early).")
    suffix_length: int = Field(20, ge=1, description="Suffix length in tokens.")
    init: str = Field("!", description="Token string repeated to initialise the suffix.")
    ascii_only: bool = Field(True, description="Only use tokens that decode to printable ASCII.")
    target: str = Field(DEFAULT_TARGET, description="Target prefix when the behaviour has no target string.")
    stop_loss: float | None = Field(None, ge=0, description="Stop once the target loss falls below this.")
    seed: int = Field(0, description="Seed for candidate sampling.")
    prefix_cache: bool = Field(True, description="Reuse the KV cache of the fixed prompt prefix (same losses, faster).")


_ALLOWED_CACHE: dict[tuple[int, int, bool], torch.Tensor] = {}


def allowed_tokens(tokenizer: Any, vocab_size: int, ascii_only: bool) -> torch.Tensor:
    """Boolean mask of tokens a suffix may use: no special tokens; optionally printable ASCII only."""
    key = (id(tokenizer), vocab_size, ascii_only)
    if key not in _ALLOWED_CACHE:
        mask = torch.ones(vocab_size, dtype=torch.bool)
        mask[[i for i in tokenizer.all_special_ids if i < vocab_size]] = False
        for token_id in range(min(vocab_size, len(tokenizer))):
            if not mask[token_id]:
                continue
            text = tokenizer.decode([token_id])
            if not text or (ascii_only and not (text.isascii() and text.isprintable())):
                mask[token_id] = False
        mask[len(tokenizer):] = False  # padded embedding rows have no token
        _ALLOWED_CACHE[key] = mask
    return _ALLOWED_CACHE[key]


def _round_trips(tokenizer: Any, ids: list[int]) -> bool:
    """The decoded suffix re-tokenises to the same ids (else the text prompt differs from the optimised one)."""
    return tokenizer(tokenizer.decode(ids), add_special_tokens=False)["input_ids"] == ids


def _round_trip_mask(tokenizer: Any, rows: list[list[int]]) -> list[bool]:
    """:func:`_round_trips` for many candidates in one batched decode + encode."""
    if not rows:
        return []
    encoded = tokenizer(tokenizer.batch_decode(rows), add_special_tokens=False)["input_ids"]
    return [list(e) == r for e, r in zip(encoded, rows, strict=True)]


def optimise_suffix(model: Any, tokenizer: Any, messages: list, target: str, args: GCGArgs) -> tuple[str, dict[str, Any]]:
    """GCG for one behaviour; returns (suffix text, log dict)."""
    device = model_device(model)
    prompt = suffix_prompt(tokenizer, messages, target, device)
    weights = embedding_matrix(model).detach()
    vocab = weights.shape[0]
    allowed = allowed_tokens(tokenizer, vocab, args.ascii_only).to(device)
    init_ids = tokenizer(" " + args.init, add_special_tokens=False)["input_ids"][-1:]
    current = torch.tensor(init_ids * args.suffix_length, device=device)
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    cache = prefix_cache(model, prompt) if args.prefix_cache else None
    with torch.no_grad():
        current_loss = float(target_loss(model, prompt, weights[current].unsqueeze(0), cache)[0])
    losses = [current_loss]
    best_ids, best_loss = current.clone(), current_loss
    scored = 0
    start = time.monotonic()

    for _step in progress(range(args.steps), "gcg steps"):
        if args.stop_loss is not None and best_loss < args.stop_loss:
            break
        if args.max_seconds is not None and time.monotonic() - start > args.max_seconds:
            break
        one_hot = torch.zeros(args.suffix_length, vocab, dtype=weights.dtype, device=device)
        one_hot[torch.arange(args.suffix_length), current] = 1.0
        one_hot.requires_grad_(True)
        loss = target_loss(model, prompt, (one_hot @ weights).unsqueeze(0), cache)[0]
        (grad,) = torch.autograd.grad(loss, [one_hot])
        grad = grad.float().masked_fill(~allowed, float("inf"))
        top = (-grad).topk(min(args.topk, int(allowed.sum())), dim=1).indices.cpu()
        positions = torch.randint(0, args.suffix_length, (args.candidates,), generator=generator)
        picks = torch.randint(0, top.shape[1], (args.candidates,), generator=generator)
        batch = current.cpu().repeat(args.candidates, 1)
        batch[torch.arange(args.candidates), positions] = top[positions, picks]
        current_list = current.tolist()
        unique = [list(row) for row in dict.fromkeys(tuple(row) for row in batch.tolist()) if list(row) != current_list]
        kept = [row for row, ok in zip(unique, _round_trip_mask(tokenizer, unique), strict=True) if ok]
        if not kept:
            losses.append(current_loss)
            continue
        candidate_ids = torch.tensor(kept, device=device)
        with torch.no_grad():
            scores = torch.cat(
                [
                    target_loss(model, prompt, weights[candidate_ids[i : i + args.batch_size]], cache)
                    for i in range(0, len(kept), args.batch_size)
                ]
            )
        scored += len(kept)
        index = int(scores.argmin())
        current, current_loss = candidate_ids[index], float(scores[index])
        losses.append(current_loss)
        if current_loss < best_loss:
            best_ids, best_loss = current.clone(), current_loss
    suffix = tokenizer.decode(best_ids.tolist())  # starts with the init's leading space
    log = {
        "loss_curve": losses,
        "initial_loss": losses[0],
        "best_loss": best_loss,
        "steps": len(losses) - 1,
        "candidates_scored": scored,
        "seconds": time.monotonic() - start,
        "target": target,
        "suffix": suffix,
        "prefix_cache": cache is not None,
    }
    return suffix, log


@register_attack
class GCG(Attack[GCGArgs]):
    name = "gcg"
    description = "White-box discrete suffix search (Greedy Coordinate Gradient) toward a target string."
    needs_model = True
    needs_weights = True

    def run(self, samples: Sequence[Sample], ctx: AttackContext) -> list[Generation]:
        prompts, logs = [], []
        for sample in samples:
            target = target_string(sample, self.args.target)
            suffix, log = optimise_suffix(ctx.model, ctx.tokenizer, sample.as_messages(), target, self.args)
            messages = replace_request(sample, f"{request_text(sample)}{suffix}")
            prompts.append(AttackedPrompt(messages=messages, info={"suffix": suffix}))
            logs.append(log)
        texts = ctx.generate(prompts)
        return [
            make_generation(self, sample, ctx, prompt, text, attack_log=log)
            for sample, prompt, text, log in zip(samples, prompts, texts, logs, strict=True)
        ]
