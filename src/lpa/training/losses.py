"""Loss functions by name (pure functions on completion logits); configs validate against the keys."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def toward(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy toward ``targets`` (mean over real completion tokens)."""
    return _masked_mean(-_token_logprobs(logits, targets), mask)


def away(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """-mean log(1 - p(y_t)): pushes probability off ``targets`` without an unbounded objective."""
    logp = _token_logprobs(logits, targets).clamp(max=-1e-6)
    return _masked_mean(-torch.log(-torch.expm1(logp)), mask)


def kl(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(reference || model) per position, averaged over ``mask``."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    ref = torch.log_softmax(ref_logits.float(), dim=-1)
    per_pos = F.kl_div(logp, ref, log_target=True, reduction="none").sum(-1)
    return _masked_mean(per_pos, mask)


PairLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: dict[str, PairLoss] = {"toward": toward, "away": away, "kl": kl}
PAIR_LOSSES = ("toward", "away")
