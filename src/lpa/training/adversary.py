"""The targeted LAT attacker: a pure function ``(model, batch, settings, eps) -> perturbations``.

Zero-initialised per-token perturbations at each location are optimised with Adam to make the
model give the *rejected* completion, and projected onto an L2 ball of radius epsilon per token
after every step.  Only the perturbations receive gradients (``torch.autograd.grad``), so the
attack never touches, nor spends time on, weight gradients.  Hooks live only inside
:func:`lpa.hooks.add_many` and are gone when this returns.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from lpa import hooks
from lpa.hooks import LayerKey
from lpa.training.config import AttackSettings
from lpa.training.data import PairBatch, ResponseBatch
from lpa.training.losses import AWAY_MIN_LOGPROB, LOSSES


@dataclass
class AttackResult:
    deltas: dict[LayerKey, torch.Tensor]  # [B, P + C, H], zero outside the mask
    mask: torch.Tensor  # [B, P + C] where the perturbation applies
    losses: list[float] = field(default_factory=list)  # attacker loss at each step (no extra pass to score the final delta)
    reach: dict[LayerKey, float] = field(default_factory=dict)  # mean per-token L2 of delta over the mask


def reach(delta: torch.Tensor, mask: torch.Tensor) -> float:
    """The attacker's real reach: mean per-token L2 norm of ``delta`` over the perturbed tokens."""
    norms = delta.detach().float().norm(dim=-1)
    m = mask.to(norms.device).bool()
    return float(norms[m].mean()) if m.any() else 0.0


def perturbation_mask(batch: PairBatch, on_completion: bool = False) -> torch.Tensor:
    """Where delta applies: real prompt tokens, plus (``on_completion``) the completion columns that
    hold a real token in the chosen or the rejected row (padding is excluded, so the reach is not
    diluted by columns no gradient reaches)."""
    mask = batch.prompt_mask.clone()
    if on_completion:
        b = batch.n_examples
        comp = batch.completion_mask
        mask[:, batch.prompt_len :] = (comp[:b].bool() | comp[b:].bool()).to(mask.dtype)
    return mask


def project_(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """In place: scale each token's vector into the L2 ball of radius ``eps``."""
    norms = delta.norm(dim=-1, keepdim=True)
    delta.mul_(torch.clamp(eps / norms.clamp(min=1e-12), max=1.0))
    return delta


@contextmanager
def perturbed(model: Any, batch: PairBatch, deltas: dict[LayerKey, torch.Tensor] | None, mask: torch.Tensor | None) -> Iterator[None]:
    """Apply per-example perturbations to both the chosen and rejected rows of ``batch``."""
    if not deltas:
        with nullcontext():
            yield
        return
    assert mask is not None
    doubled = {k: torch.cat([d, d]) for k, d in deltas.items()}
    with hooks.add_many(model, doubled, mask=torch.cat([mask, mask])):
        yield


def completion_logits(model: Any, batch: PairBatch | ResponseBatch) -> torch.Tensor:
    """Logits predicting each completion token, [2B, C, V]; the lm_head runs on C + 1 positions only."""
    c = batch.n_completion
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        logits_to_keep=c + 1,
        use_cache=False,
    )
    return out.logits[:, :c]


def pair_losses(
    logits: torch.Tensor,
    batch: PairBatch,
    weights: dict[str, float],
    toward: str = "chosen",
    away_min_logprob: float | None = AWAY_MIN_LOGPROB,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted ``toward``/``away`` losses; ``toward='rejected'`` is the attacker's objective."""
    b = batch.n_examples
    rows = {"chosen": slice(0, b), "rejected": slice(b, 2 * b)}
    good, bad = (rows["chosen"], rows["rejected"]) if toward == "chosen" else (rows["rejected"], rows["chosen"])
    total = logits.new_zeros((), dtype=torch.float32)
    parts: dict[str, float] = {}
    for name, weight in weights.items():
        if name not in ("toward", "away") or weight == 0:
            continue
        sel = good if name == "toward" else bad
        args = (logits[sel], batch.completion_ids[sel], batch.completion_mask[sel])
        value = LOSSES[name](*args) if name == "toward" else LOSSES[name](*args, min_logprob=away_min_logprob)
        parts[name] = float(value.detach())
        total = total + weight * value
    return total, parts


def attack(
    model: Any,
    batch: PairBatch,
    settings: AttackSettings,
    eps: dict[LayerKey, float],
    lr: dict[LayerKey, float] | None = None,
    autocast: Any = None,
) -> AttackResult:
    """Optimise perturbations at ``eps``'s locations toward the rejected completion.

    ``lr`` gives a per-location Adam step (default ``settings.lr`` everywhere); ``autocast``
    is an optional context-manager factory (bf16 on GPU).
    """
    device = batch.input_ids.device
    size = hooks.hidden_size(model)
    mask = perturbation_mask(batch, settings.on_completion).to(device)
    deltas = {
        k: torch.zeros((batch.n_examples, batch.input_ids.shape[1], size), device=device, requires_grad=True)
        for k in eps
    }
    lr = lr or {k: settings.lr for k in eps}
    optimiser = torch.optim.Adam([{"params": [deltas[k]], "lr": lr[k]} for k in deltas])
    keep = mask.unsqueeze(-1).float()
    losses: list[float] = []
    for _ in range(settings.steps):
        # backward inside the hook context: gradient checkpointing re-runs the hooked forward
        with perturbed(model, batch, deltas, mask):
            with autocast() if autocast else nullcontext():
                logits = completion_logits(model, batch)
            loss, _ = pair_losses(logits, batch, settings.losses, toward="rejected",
                                  away_min_logprob=settings.away_min_logprob)
            losses.append(float(loss.detach()))
            grads = torch.autograd.grad(loss, list(deltas.values()))
        for delta, grad in zip(deltas.values(), grads, strict=True):
            delta.grad = grad
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        with torch.no_grad():
            for key, delta in deltas.items():
                delta.mul_(keep)
                project_(delta, eps[key])
    final = {k: d.detach() for k, d in deltas.items()}
    return AttackResult(final, mask, losses, {k: reach(d, mask) for k, d in final.items()})


def measure_token_norms(model: Any, batches: Sequence[PairBatch], layers: list[LayerKey]) -> dict[LayerKey, float]:
    """Mean per-token L2 norm of the residual stream at ``layers`` over real prompt tokens.

    The first real token of each prompt is excluded: it acts as an attention sink whose norm
    is often orders of magnitude larger (SmolLM2), and would dominate a plain mean.
    """
    sums = {k: 0.0 for k in layers}
    count = 0
    for batch in batches:
        b = batch.n_examples
        mask = batch.prompt_mask.clone()
        first = mask.float().argmax(dim=-1)
        mask[torch.arange(b), first] = 0
        with torch.no_grad(), hooks.record(model, layers) as store:
            model(
                input_ids=batch.input_ids[:b],
                attention_mask=batch.attention_mask[:b],
                position_ids=batch.position_ids[:b],
                logits_to_keep=1,
                use_cache=False,
            )
        m = mask.to(batch.input_ids.device).bool()
        for key in layers:
            sums[key] += float(store[key].float().norm(dim=-1)[m].sum())
        count += int(m.sum())
    return {k: v / max(count, 1) for k, v in sums.items()}
