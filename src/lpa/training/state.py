"""What ``transformers.Trainer`` checkpoints do not hold, saved beside them as ``lpa_state.json``.

Trainer's ``checkpoint-N/`` folders hold the adapter, optimiser, scheduler, RNG states and the
step; LAT also needs the measured token norms and epsilons (re-measuring after a resume would
see the trained adapter), the attacker's per-location learning rates, the cost counters and the
last adapter that passed the collapse guard.  Numbers go to JSON and the adapter weights to
``lpa_state.safetensors``: nothing in a run folder is unpickled, so a planted file cannot run
code on resume.  Both are written atomically before Trainer's ``trainer_state.json``, so a
folder whose ``trainer_state.json`` parses is complete: a kill -9 in the middle of a save leaves
the previous checkpoint to resume from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lpa.errors import LpaError

NAME = "lpa_state.json"
WEIGHTS = "lpa_state.safetensors"
LEGACY = "lpa_state.pt"  # written by lpa before 0.x; read with torch's weights_only unpickler only
FORMAT = 1


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


_PER_LOCATION = ("norms", "eps", "lr")


def save(folder: str | Path, state: LatState) -> None:
    """Write the state as JSON (+ safetensors for the last good adapter); the JSON goes last (it marks completeness)."""
    from safetensors.torch import save_file

    from lpa.io import atomic_path, atomic_write_json

    folder = Path(folder)
    record: dict[str, Any] = {
        "format": FORMAT,
        **{name: [[k, float(v)] for k, v in getattr(state, name).items()] for name in _PER_LOCATION},
        "passes": state.passes, "wall": state.wall,
        "guard_stats": None if state.guard_stats is None else {k: float(v) for k, v in state.guard_stats.items()},
        "guard_warnings": list(state.guard_warnings), "last_good": state.last_good is not None,
    }
    if state.last_good is not None:
        with atomic_path(folder / WEIGHTS) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in state.last_good.items()}, str(tmp))
    atomic_write_json(folder / NAME, record)


def load(folder: str | Path) -> LatState:
    """Read a checkpoint's state; never unpickles (a legacy ``.pt`` goes through ``weights_only=True``)."""
    folder = Path(folder)
    if not (folder / NAME).is_file() and (folder / LEGACY).is_file():
        return _load_legacy(folder / LEGACY)
    try:
        record = json.loads((folder / NAME).read_text(encoding="utf-8"))
        fields = {name: {_key(k): float(v) for k, v in record[name]} for name in _PER_LOCATION}
        last_good = None
        if record.get("last_good"):
            from safetensors.torch import load_file

            last_good = load_file(str(folder / WEIGHTS), device="cpu")
        return LatState(**fields, passes=int(record["passes"]), wall=float(record["wall"]), last_good=last_good,
                        guard_stats=record.get("guard_stats"), guard_warnings=list(record.get("guard_warnings", [])))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LpaError(f"{folder}: unreadable LAT state ({exc}); delete this checkpoint folder to resume "
                       "from the previous one.") from None


def _key(value: Any) -> Any:
    """Locations are layer indices or names ('embed'); JSON keeps which."""
    if isinstance(value, (int, str)):
        return value
    raise TypeError(f"bad location {value!r}")


def _load_legacy(path: Path) -> LatState:
    import pickle

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        return LatState(**data)
    except (pickle.UnpicklingError, RuntimeError, TypeError, ValueError, OSError, EOFError):
        # torch's message suggests weights_only=False, which is exactly what must not be done here
        raise LpaError(f"{path}: refusing to load: it holds objects other than tensors, numbers and text (a "
                       "planted or foreign file). Nothing from it was run; delete this checkpoint folder to "
                       "resume from the previous one.") from None


def _complete(folder: Path) -> bool:
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (folder / NAME).is_file() or (folder / LEGACY).is_file()


def latest_checkpoint(run: str | Path) -> Path | None:
    """The newest complete ``checkpoint-N`` folder of a run (partial ones, from a kill mid-save, are skipped)."""
    found = []
    for path in Path(run).glob("checkpoint-*"):
        suffix = path.name.split("-", 1)[1]
        if path.is_dir() and suffix.isdigit() and _complete(path):
            found.append((int(suffix), path))
    return max(found)[1] if found else None
