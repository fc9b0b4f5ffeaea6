"""Built-in trait sets and the ablations derived from them.

``big-five``, ``negative-only`` and ``irrelevant`` are data files under ``lpa/data/traits``;
``positive-only``, ``inverted`` and ``shuffled`` are transforms of ``big-five`` (the shuffle is
seeded, so a run's config reproduces its data).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from lpa.errors import LpaError
from lpa.traits.schema import TraitItem, TraitSet, load_trait_file

FILE_SETS = ("big-five", "negative-only", "irrelevant")


def _data_path(name: str) -> Path:
    return Path(str(resources.files("lpa") / "data" / "traits" / f"{name}.yaml"))


def _flip(target: str) -> str:
    return "disagree" if target == "agree" else "agree"


def positive_only(base: TraitSet, seed: int = 0) -> TraitSet:
    return TraitSet(name="positive-only", description="Only the desirable statements of big-five (agree).",
                    items=[i for i in base.items if i.polarity == "desirable"])


def inverted(base: TraitSet, seed: int = 0) -> TraitSet:
    items = [i.model_copy(update={"target": _flip(i.target)}) for i in base.items]
    return TraitSet(name="inverted", description="big-five with every target flipped.", items=items)


def shuffled(base: TraitSet, seed: int = 0) -> TraitSet:
    targets = [i.target for i in base.items]
    random.Random(seed).shuffle(targets)
    items = [i.model_copy(update={"target": t}) for i, t in zip(base.items, targets, strict=True)]
    return TraitSet(name="shuffled", description=f"big-five with targets permuted (seed {seed}).", items=items)


TRANSFORMS: dict[str, Callable[[TraitSet, int], TraitSet]] = {
    "positive-only": positive_only,
    "inverted": inverted,
    "shuffled": shuffled,
}
BUILTIN_NAMES = tuple(sorted((*FILE_SETS, *TRANSFORMS)))


def builtin_names() -> list[str]:
    return list(BUILTIN_NAMES)


def load_traits(name_or_path: str | Path, seed: int = 0) -> TraitSet:
    """A built-in set by name, or a user YAML/CSV file by path."""
    text = str(name_or_path)
    if text in FILE_SETS:
        return load_trait_file(_data_path(text))
    if text in TRANSFORMS:
        return TRANSFORMS[text](load_trait_file(_data_path("big-five")), seed)
    path = Path(text).expanduser()
    if path.suffix.lower() in (".yaml", ".yml", ".csv") or path.exists():
        return load_trait_file(path)
    raise LpaError(f"Unknown trait set {text!r}. Valid choices: {', '.join(BUILTIN_NAMES)}, or a .yaml/.csv file.")


__all__ = ["BUILTIN_NAMES", "TRANSFORMS", "TraitItem", "builtin_names", "load_traits"]
