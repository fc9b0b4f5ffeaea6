"""Model loading: one entry point for HF ids, local checkpoints, .gguf files and built-in aliases."""

from lpa.models.aliases import ALIASES, ModelAlias, resolve_alias
from lpa.models.loader import (
    cache_root,
    load_model,
    load_tokenizer,
    model_name,
    resolve_device,
    resolve_dtype,
)

__all__ = [
    "ALIASES",
    "ModelAlias",
    "cache_root",
    "load_model",
    "load_tokenizer",
    "model_name",
    "resolve_alias",
    "resolve_device",
    "resolve_dtype",
]
