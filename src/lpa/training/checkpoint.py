"""Resumable state: one ``checkpoint.pt`` written atomically (a kill -9 leaves the previous one).

It holds the step reached, LoRA weights, optimiser state, RNG states, cost counters, measured
epsilons and the last adapter that passed the collapse guard.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import torch

NAME = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(run_path: Path, state: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=run_path, prefix=f".{NAME}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, run_path / NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(run_path: Path) -> dict[str, Any] | None:
    path = run_path / NAME
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)
