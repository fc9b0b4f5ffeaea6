"""The persona-vector artefact: one direction per layer plus the metadata that produced it.

Saved as a single ``.safetensors`` file whose header metadata holds a JSON description
(trait, model, layer convention, kept counts, judge), so a vector file describes itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lpa.errors import LpaError

LAYER_CONVENTION = "row l = output of decoder block l (lpa.hooks convention; hidden_states[l + 1])"
FORMAT_VERSION = 1


@dataclass
class PersonaVector:
    """``vectors[l]`` is the mean-difference direction at the output of decoder block ``l``."""

    trait: str
    vectors: torch.Tensor  # [n_layers, hidden], float32
    model: str | None = None
    layer: int | None = None  # the chosen (steering) layer, if selected
    judge: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return int(self.vectors.shape[0])

    def resolve(self, layer: int | None = None) -> int:
        chosen = self.layer if layer is None else layer
        if chosen is None:
            raise LpaError(f"Persona vector {self.trait!r} has no chosen layer; pass layer= explicitly.")
        if not -self.n_layers <= chosen < self.n_layers:
            raise LpaError(f"Layer {chosen} is out of range for a vector with {self.n_layers} layers.")
        return chosen % self.n_layers

    def at(self, layer: int | None = None) -> torch.Tensor:
        return self.vectors[self.resolve(layer)]

    def unit(self, layer: int | None = None) -> torch.Tensor:
        v = self.at(layer)
        return v / v.norm().clamp_min(1e-12)

    def metadata(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "trait": self.trait,
            "model": self.model,
            "layer": self.layer,
            "layer_convention": LAYER_CONVENTION,
            "judge": self.judge,
            "counts": self.counts,
            "extra": self.extra,
        }

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        from lpa.io import atomic_path

        path = Path(path)
        meta = {"lpa_persona": json.dumps(self.metadata(), sort_keys=True, default=str)}
        with atomic_path(path) as tmp:
            save_file({"vectors": self.vectors.detach().float().cpu().contiguous()}, str(tmp), metadata=meta)
        return path


def load_vector(path: str | Path) -> PersonaVector:
    """Read a vector written by :meth:`PersonaVector.save`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise LpaError(f"Persona vector file not found: {path}")
    with safe_open(str(path), framework="pt") as handle:
        meta_raw = (handle.metadata() or {}).get("lpa_persona")
        if meta_raw is None or "vectors" not in handle.keys():
            raise LpaError(f"{path} is not an lpa persona vector (no 'lpa_persona' metadata).")
        vectors = handle.get_tensor("vectors")
    meta = json.loads(meta_raw)
    return PersonaVector(
        trait=meta["trait"],
        vectors=vectors,
        model=meta.get("model"),
        layer=meta.get("layer"),
        judge=meta.get("judge") or {},
        counts=meta.get("counts") or {},
        extra=meta.get("extra") or {},
    )


def as_direction(vector: PersonaVector | torch.Tensor, layer: int | None) -> tuple[torch.Tensor, int | None]:
    """(direction [hidden], layer) from a PersonaVector (layer defaults to its chosen one) or a tensor."""
    if isinstance(vector, PersonaVector):
        return vector.at(layer), vector.resolve(layer)
    if vector.dim() == 2:
        if layer is None:
            raise LpaError("A per-layer tensor needs layer= to pick the row.")
        return vector[layer], layer
    return vector, layer


__all__ = ["LAYER_CONVENTION", "PersonaVector", "as_direction", "load_vector"]
