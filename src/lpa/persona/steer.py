"""``steer(model, vector, layer, coef, positions)``: add ``coef * v`` to one layer's output.

Positions, decided per forward call from its sequence length (so no state leaks between
``generate`` calls): HF generation runs the prompt in one multi-token forward and then one
token per KV-cached step.

* ``"response"``: the last position of a multi-token forward (it produces the first response
  token) and every single-token step, i.e. every position that generates a response token.
* ``"prompt"``: every position of multi-token forwards; nothing during cached steps.
* ``"all"``: every position of every forward (also teacher-forced training passes).

A multi-token forward is treated as a new prompt: generation without a KV cache would re-run
the prompt, so use the default cache with "prompt"/"response".  The hook goes through
:func:`lpa.hooks.edit_output`, so it is removed on exit even after an exception.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn

from lpa import hooks
from lpa.errors import LpaError
from lpa.persona.vector import PersonaVector, as_direction

Positions = Literal["response", "prompt", "all"]
POSITIONS = ("response", "prompt", "all")


def _position_mask(seq_len: int, positions: str, device: torch.device) -> torch.Tensor | None:
    """[seq_len] 0/1 mask of steered positions for one forward call; None = all."""
    if positions == "all":
        return None
    mask = torch.zeros(seq_len, device=device)
    if positions == "prompt":
        if seq_len > 1:
            mask[:] = 1.0
    else:  # response
        mask[-1] = 1.0
    return mask


@contextmanager
def steer(
    model: nn.Module,
    vector: PersonaVector | torch.Tensor,
    layer: int | str | None = None,
    coef: float = 1.0,
    positions: Positions = "response",
) -> Iterator[None]:
    """Add ``coef * vector`` at ``layer`` (default: the vector's chosen layer) on the chosen positions."""
    if positions not in POSITIONS:
        raise LpaError(f"Unknown positions {positions!r}. Valid choices: {', '.join(POSITIONS)}.")
    int_layer = int(layer) if isinstance(layer, str) and layer.lstrip("-").isdigit() else layer
    direction, resolved = as_direction(vector, int_layer if not isinstance(int_layer, str) else None)
    target = resolved if resolved is not None else int_layer
    if target is None:
        raise LpaError("steer() needs a layer for a plain tensor direction.")
    if direction.shape[-1] != hooks.hidden_size(model):
        raise LpaError(f"Vector has size {direction.shape[-1]} but the model's hidden size is {hooks.hidden_size(model)}.")
    delta = direction.detach() * float(coef)

    def edit(hidden: torch.Tensor) -> torch.Tensor:
        add = delta.to(dtype=hidden.dtype, device=hidden.device)
        mask = _position_mask(hidden.shape[1], positions, hidden.device)
        if mask is None:
            return hidden + add
        return hidden + mask.to(hidden.dtype)[None, :, None] * add

    with hooks.edit_output(model, target, edit):
        yield


__all__ = ["POSITIONS", "Positions", "steer"]
