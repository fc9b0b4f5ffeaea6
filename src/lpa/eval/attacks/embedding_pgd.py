"""Embedding-space PGD: optimise continuous embeddings of an adversarial suffix so the model's
answer starts with a target string, then generate from the optimised embeddings.

This is the strongest (unrealistic, white-box) threat model; it bounds how much latent
robustness training bought.  Budget: ``steps`` and ``max_seconds``; each step is one forward and
backward pass.  The per-step loss curve is logged in the generation's ``attack_log``.
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
    generate_from_embeds,
    model_device,
    prompt_embeds,
    suffix_prompt,
    target_loss,
)
from lpa.plugins import PluginArgs
from lpa.progress import progress
from lpa.records import Generation, Message, Sample


class EmbeddingPGDArgs(PluginArgs):
    steps: int = Field(100, ge=1, description="Optimisation steps (one forward+backward each).")
    max_seconds: float | None = Field(None, gt=0, description="Wall-clock budget per behaviour (stops early).")
    suffix_length: int = Field(20, ge=1, description="Number of adversarial suffix positions.")
    init: str = Field("!", description="Token string repeated to initialise the suffix.")
    lr: float = Field(0.05, gt=0, description="Adam step size, relative to the mean |coordinate| of the embeddings.")
    epsilon: float | None = Field(
        2.0, gt=0, description="Max L2 norm of each position's perturbation, relative to the mean embedding norm."
    )
    target: str = Field(DEFAULT_TARGET, description="Target prefix when the behaviour has no target string.")
    stop_loss: float | None = Field(None, ge=0, description="Stop once the target loss falls below this.")
    max_new_tokens: int | None = Field(None, ge=1, description="Tokens to generate (default: the run's setting or 64).")
    seed: int = Field(0, description="Seed (the attack is deterministic given it).")


def optimise_suffix(model: Any, tokenizer: Any, messages: list[Message], target: str,
                    args: EmbeddingPGDArgs) -> tuple[Any, Any, dict[str, Any]]:
    """Run PGD for one behaviour; returns (prompt, best suffix embeddings (1, L, D), log dict)."""
    device = model_device(model)
    prompt = suffix_prompt(tokenizer, messages, target, device)
    weights = embedding_matrix(model).detach()
    init_ids = tokenizer(" " + args.init, add_special_tokens=False)["input_ids"][-1:] or [0]
    base = weights[torch.tensor(init_ids * args.suffix_length, device=device)].unsqueeze(0).float()
    coord_scale = float(weights.abs().mean(dtype=torch.float32))
    mean_norm = float(torch.linalg.vector_norm(weights, dim=-1, dtype=torch.float32).mean())
    radius = None if args.epsilon is None else args.epsilon * mean_norm
    torch.manual_seed(args.seed)
    delta = torch.zeros_like(base, requires_grad=True)
    optimiser = torch.optim.Adam([delta], lr=args.lr * coord_scale)
    losses: list[float] = []
    best_loss, best = float("inf"), base.clone()
    start = time.monotonic()

    for _step in progress(range(args.steps), "embedding-pgd steps"):
        loss = target_loss(model, prompt, base + delta)[0]
        (grad,) = torch.autograd.grad(loss, [delta])
        value = float(loss.detach())
        losses.append(value)
        if value < best_loss:
            best_loss, best = value, (base + delta).detach().clone()
        if args.stop_loss is not None and value < args.stop_loss:
            break
        if args.max_seconds is not None and time.monotonic() - start > args.max_seconds:
            break
        delta.grad = grad
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        if radius is not None:
            with torch.no_grad():
                norms = delta.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                delta.mul_(torch.clamp(radius / norms, max=1.0))
    with torch.no_grad():
        final = float(target_loss(model, prompt, best)[0])
    log = {
        "loss_curve": losses,
        "initial_loss": losses[0],
        "best_loss": final,
        "steps": len(losses),
        "seconds": time.monotonic() - start,
        "target": target,
    }
    return prompt, best, log


@register_attack
class EmbeddingPGD(Attack[EmbeddingPGDArgs]):
    name = "embedding-pgd"
    description = "White-box: optimise continuous suffix embeddings toward a target string, generate from them."
    needs_model = True
    needs_weights = True

    def run(self, samples: Sequence[Sample], ctx: AttackContext) -> list[Generation]:
        max_new = self.args.max_new_tokens or int(ctx.settings.get("max_new_tokens", 64))
        rows = []
        for sample in samples:
            start = time.monotonic()
            target = target_string(sample, self.args.target)
            prompt, suffix, log = optimise_suffix(ctx.model, ctx.tokenizer, sample.as_messages(), target, self.args)
            with torch.no_grad():
                inputs = prompt_embeds(ctx.model, prompt, suffix, with_target=False)
            text = generate_from_embeds(ctx.model, ctx.tokenizer, inputs, max_new)
            log["total_seconds"] = time.monotonic() - start
            shown = replace_request(sample, request_text(sample) + " [continuous adversarial suffix]")
            attacked = AttackedPrompt(messages=shown, info={"suffix_length": self.args.suffix_length})
            rows.append(make_generation(self, sample, ctx, attacked, text, attack_log=log))
        return rows
