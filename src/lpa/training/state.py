"""What ``transformers.Trainer`` checkpoints do not hold, saved beside them as ``lpa_state.pt``.

Trainer's ``checkpoint-N/`` folders hold the adapter, optimiser, scheduler, RNG states and the
step; LAT also needs the measured token norms and epsilons (re-measuring after a resume would
see the trained adapter), the attacker's per-location learning rates, the cost counters and the
last adapter that passed the collapse guard.  The file is written atomically before Trainer's
``trainer_state.json``, so a folder whose ``trainer_state.json`` parses is complete: a kill -9
in the middle of a save leaves the previous checkpoint to resume from.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

NAME = "lpa_state.pt"


@dataclass
class LatState:
    norms: dict[Any, float] = field(default_factory=dict)  # mean token norm per location (relative epsilon)
    eps: dict[Any, float] = field(default_factory=dict)  # L2 radius per location
    lr: dict[Any, float] = field(default_factory=dict)  # attacker Adam lr per location
    passes: int = 0  # forward+backward passes so far (K + M per adversarial step)
    wall: float = 0.0  # seconds spent in training steps (monitors excluded)
    last_good: dict[str, torch.Tensor] | None = None  # LoRA weights at the last healthy guard check
    guard_stats: dict[str, float] | None = None
    guard_warnings: list[str] = field(default_factory=list)  # "step N: reasons" for over-refusal that did not stop


def save(folder: str | Path, state: LatState) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{NAME}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(asdict(state), tmp)
        os.replace(tmp, folder / NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(folder: str | Path) -> LatState:
    return LatState(**torch.load(Path(folder) / NAME, map_location="cpu", weights_only=False))


def _complete(folder: Path) -> bool:
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (folder / NAME).is_file()


def latest_checkpoint(run: str | Path) -> Path | None:
    """The newest complete ``checkpoint-N`` folder of a run (partial ones, from a kill mid-save, are skipped)."""
    found = []
    for path in Path(run).glob("checkpoint-*"):
        suffix = path.name.split("-", 1)[1]
        if path.is_dir() and suffix.isdigit() and _complete(path):
            found.append((int(suffix), path))
    return max(found)[1] if found else None
