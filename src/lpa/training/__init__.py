"""Training: methods registry, configs and the one trainer (a ``transformers.Trainer`` subclass) for every method.

Heavy modules (torch) load lazily so ``lpa.training.data`` stays cheap to import.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "METHODS": "lpa.training.base",
    "Method": "lpa.training.base",
    "register_method": "lpa.training.base",
    "config_from_dict": "lpa.training.base",
    "build_train_config": "lpa.training.base",
    "TraitsConfig": "lpa.training.base",
    "TrainConfig": "lpa.training.config",
    "PRESETS": "lpa.training.config",
    "PairExample": "lpa.training.data",
    "train": "lpa.training.trainer",
    "build_trainer": "lpa.training.trainer",
    "LatTrainer": "lpa.training.trainer",
    "Collator": "lpa.training.data",
    "TrainResult": "lpa.training.trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lpa.training' has no attribute {name!r}")
