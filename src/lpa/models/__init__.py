"""Model loading: one entry point for HF ids, local checkpoints, .gguf files and built-in aliases."""

from lpa.models.aliases import ALIASES, ModelAlias, resolve_alias
from lpa.models.identity import ModelIdentity, adapter_hash, identity_of, register_identity
from lpa.models.loader import (
    LoadedModel,
    cache_root,
    load,
    load_model,
    load_tokenizer,
    model_name,
    resolve_device,
    resolve_dtype,
)

__all__ = [
    "ALIASES",
    "LoadedModel",
    "ModelAlias",
    "ModelIdentity",
    "adapter_hash",
    "cache_root",
    "identity_of",
    "load",
    "load_model",
    "load_tokenizer",
    "model_name",
    "register_identity",
    "resolve_alias",
    "resolve_device",
    "resolve_dtype",
]
