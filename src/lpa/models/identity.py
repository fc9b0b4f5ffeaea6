"""Who produced an answer or an activation: one small frozen record, used in every cache key.

:func:`lpa.models.load` returns it beside the model and tokenizer; :func:`identity_of` finds it
again for a model that was loaded by :func:`lpa.models.load_model` (a weak mapping kept here, never
an attribute set on the HF model), and describes any other model from its own weights, so two
different models never share a cache key by accident.
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin", "adapter_config.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")
_SAMPLE = 1 << 16  # bytes read at each of five offsets of a weight file for its fingerprint


@dataclass(frozen=True)
class ModelIdentity:
    """The model spec, its adapter (path and content hash), the weights' revision and the dtype.

    ``revision`` is the hub commit for hub ids, a content fingerprint of the weight files for
    local checkpoints, and None for built-in aliases (their files are pinned by sha256 in
    :mod:`lpa.assets`).
    """

    model: str
    adapter: str | None = None
    adapter_sha: str | None = None
    revision: str | None = None
    dtype: str | None = None
    weights_sha256: str | None = None  # the weights file's full sha256, where one file holds them (aliases, .gguf)

    def key(self) -> dict[str, str | None]:
        """The fields that go into cache keys.

        ``model`` and ``adapter`` always; the others only when known, and ``dtype`` only when it is
        not float32, so keys written before the record existed (CPU, float32, no adapter) stay valid.
        ``weights_sha256`` is recorded, not keyed: an alias's file is verified against its pinned
        sha256 before use, and a ``.gguf`` path's digest names its conversion.
        """
        out: dict[str, str | None] = {"model": self.model, "adapter": self.adapter}
        if self.adapter_sha is not None:
            out["adapter_sha"] = self.adapter_sha
        if self.revision is not None:
            out["revision"] = self.revision
        if self.dtype not in (None, "float32"):
            out["dtype"] = self.dtype
        return out

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)

    def with_adapter(self, adapter: str | Path | None) -> ModelIdentity:
        return replace(self, adapter=adapter_name(adapter), adapter_sha=adapter_hash(adapter))


def adapter_name(adapter: str | Path | None) -> str | None:
    """The adapter path as cache keys name it: relative to the working directory when inside it.

    So ``runs/x/adapter``, ``./runs/x/adapter`` and ``$PWD/runs/x/adapter`` are one adapter (one set
    of cached answers) instead of three; keys written with relative paths stay valid.  The content
    hash (``adapter_sha``) is what tells two adapters at the same path apart.
    """
    if adapter is None:
        return None
    path = Path(adapter)
    if path.is_absolute():
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)
    return str(path)


_KNOWN: weakref.WeakKeyDictionary[Any, ModelIdentity] = weakref.WeakKeyDictionary()


def register_identity(model: Any, identity: ModelIdentity) -> ModelIdentity:
    """Remember ``identity`` for ``model`` (done by the loaders; tests and custom loaders may call it)."""
    _KNOWN[model] = identity
    return identity


def identity_of(model: Any) -> ModelIdentity:
    """The record of a loaded model; for any other model, one derived from the model itself.

    A PEFT model wrapped after loading (training, persona fine-tuning) keeps its base model's
    record with the live adapter weights' hash, so its answers never reuse the base model's.
    """
    known = _KNOWN.get(model)
    if known is not None:
        return known
    base = model.get_base_model() if hasattr(model, "peft_config") and hasattr(model, "get_base_model") else None
    if base is not None:
        parent = _KNOWN.get(base) or _describe(base)
        return replace(parent, adapter=parent.adapter or "<in-memory adapter>", adapter_sha=_live_adapter_hash(model))
    return _describe(model)


def _describe(model: Any) -> ModelIdentity:
    config = getattr(model, "config", None)
    name = getattr(config, "_name_or_path", "") or ""
    dtype = str(getattr(model, "dtype", "")).replace("torch.", "") or None
    return ModelIdentity(model=f"{type(model).__name__}:{name or 'unsaved'}", revision=_weights_hash(model), dtype=dtype)


def _weights_hash(model: Any) -> str | None:
    """sha256 (16 hex) of a model's parameters; only used for models no loader registered (tests, custom code)."""
    params = getattr(model, "state_dict", None)
    if params is None:
        return None
    digest = hashlib.sha256()
    for name, tensor in sorted(params().items()):
        digest.update(name.encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()[:16]


def _live_adapter_hash(model: Any) -> str:
    """sha256 (16 hex) of the adapter tensors currently in a PEFT model."""
    from peft import get_peft_model_state_dict

    digest = hashlib.sha256()
    for name, tensor in sorted(get_peft_model_state_dict(model).items()):
        digest.update(name.encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()[:16]


def _tensor_bytes(tensor: Any) -> bytes:
    import torch

    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


@lru_cache(maxsize=64)
def _hash_files(folder: str, stats: tuple[tuple[str, float, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in stats:
        digest.update(name.encode())
        with open(Path(folder) / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def adapter_hash(adapter: str | Path | None) -> str | None:
    """sha256 (16 hex) of a saved adapter's weight and config files; None without an adapter."""
    if adapter is None:
        return None
    folder = Path(adapter)
    names: tuple[str, ...]
    if folder.is_file():
        folder, names = folder.parent, (folder.name,)
    else:
        names = ADAPTER_FILES
    present = tuple((n, (folder / n).stat().st_mtime, (folder / n).stat().st_size) for n in names if (folder / n).is_file())
    if not present:
        return f"missing:{adapter}"
    return _hash_files(str(folder.resolve()), present)


def weights_fingerprint(checkpoint: str | Path) -> str | None:
    """A content fingerprint (16 hex) of a local checkpoint's weight files; None if it has none.

    Reads each file's size and five 64 KiB blocks (start, quarters, end) rather than every byte,
    so loading a multi-GB checkpoint costs milliseconds; fine-tuned weights differ in every block.
    """
    folder = Path(checkpoint)
    files = [folder] if folder.is_file() else sorted(p for p in folder.glob("*") if p.suffix in WEIGHT_SUFFIXES)
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}|{size}".encode())
        with path.open("rb") as handle:
            for offset in sorted({0, size // 4, size // 2, 3 * size // 4, max(size - _SAMPLE, 0)}):
                handle.seek(offset)
                digest.update(handle.read(_SAMPLE))
    return digest.hexdigest()[:16]


__all__ = ["ModelIdentity", "adapter_hash", "adapter_name", "identity_of", "register_identity", "weights_fingerprint"]
