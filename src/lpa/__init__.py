"""lpa: Latent Personality Alignment and honest red-team evaluation for open-weight LLMs.

The Python API (:mod:`lpa.api`): ``lpa.train``, ``lpa.evaluate``, ``lpa.compare``, ``lpa.load`` and
``lpa.persona.extract``.  They are imported on first use, so ``import lpa`` (and ``lpa --help``)
never imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lpa.errors import LpaError

if TYPE_CHECKING:
    from lpa import persona
    from lpa.api import Comparison, compare, evaluate, load, train

__version__ = "0.1.0"
_LAZY = {"train": "lpa.api", "evaluate": "lpa.api", "compare": "lpa.api", "load": "lpa.api",
         "Comparison": "lpa.api", "persona": "lpa.persona"}
__all__ = ["Comparison", "LpaError", "__version__", "compare", "evaluate", "load", "persona", "train"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lpa' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    return module if name == "persona" else getattr(module, name)
