"""``load_model(spec)`` -> (model, tokenizer) for any causal LM.

``spec`` is a built-in alias, a local checkpoint directory, a ``.gguf`` file, or a Hugging
Face hub id.  GGUF files are de-quantised by transformers (slow, ~30 s for 135M params), so
the first load converts them into a plain safetensors checkpoint under the cache directory
(``$LPA_CACHE_DIR``, default the user cache dir) and later loads read that instead.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lpa.errors import LpaError
from lpa.models.aliases import ALIASES, resolve_alias
from lpa.models.identity import (
    ModelIdentity,
    adapter_hash,
    adapter_name,
    register_identity,
    weights_fingerprint,
)
from lpa.paths import cache_root

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}


def resolve_device(device: str | None = None) -> torch.device:
    """``None``/"auto" picks CUDA, then Apple MPS, then CPU."""
    import torch

    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise LpaError(f"Unknown device {device!r}. Valid choices: auto, cpu, cuda, cuda:N, mps.") from None


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """``None``/"auto": bf16 on CUDA with bf16 support, fp32 elsewhere (CPU half is slow and lossy)."""
    import torch

    if dtype in (None, "auto"):
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    key = _DTYPES.get(str(dtype).lower().replace("torch.", ""))
    if key is None:
        raise LpaError(f"Unknown dtype {dtype!r}. Valid choices: auto, {', '.join(sorted(_DTYPES))}.")
    if key == "bfloat16" and device.type == "cpu" and not cpu_has_native_bf16():
        _warn_emulated_bf16()
    return getattr(torch, key)


@functools.cache
def _warn_emulated_bf16() -> None:
    """Once per process: a spec written on a bf16 CPU (or a GPU) should not silently run slower elsewhere."""
    log.warning("dtype bf16 on a CPU without native bf16 (AVX512-BF16 or AMX): torch emulates it, slower than fp32 "
                "here; set dtype: fp32 (or auto) for speed.")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX): there bf16 training is ~2x faster than fp32
    (a Qwen-0.5B LAT step 26 s vs 52 s on 2 Zen 4 cores); elsewhere torch emulates bf16 and it is slower."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def model_name(spec: str) -> str:
    """A stable, human-readable name for records (alias or id as given; local paths resolved)."""
    if spec in ALIASES:
        return spec
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or spec.endswith(".gguf") or os.sep in spec.strip("/").split("/", 1)[0]


def _resolve_source(spec: str) -> str:
    alias = resolve_alias(spec)
    if alias is not None:
        return alias.resolve()
    path = Path(spec).expanduser()
    if path.exists():
        return str(path)
    if _looks_like_path(spec) or spec.count("/") > 1:
        raise LpaError(
            f"Model path {spec!r} does not exist. Give an existing checkpoint directory or .gguf file, "
            f"a Hugging Face model id (org/name), or an alias: {', '.join(sorted(ALIASES))}."
        )
    _check_hub_reachable(spec)
    return spec  # a hub id


def offline() -> bool:
    """Whether the user said there is no network (``LPA_OFFLINE`` or ``HF_HUB_OFFLINE``)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in ("LPA_OFFLINE", "HF_HUB_OFFLINE"))


def _check_hub_reachable(spec: str) -> None:
    """Fail at once (not after ~30 s of hub retries) for a hub id that is neither cached nor reachable."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(spec, "config.json"), str):
        return
    why = "offline (LPA_OFFLINE / HF_HUB_OFFLINE is set)" if offline() else ""
    if not why:
        try:
            socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname or "huggingface.co", 443)
        except OSError:
            why = "the Hugging Face hub cannot be reached"
    if why:
        raise LpaError(f"Unknown model {spec!r}: not an alias, a local path or a cached hub model, and {why}. "
                       f"Aliases: {', '.join(sorted(ALIASES))}.")


def _gguf_cache_dir(gguf: Path) -> Path:
    """The conversion's folder, named by the GGUF's sha256: a changed source (even with its size and
    mtime restored) is never served from the old conversion."""
    from lpa.assets import verified_sha256

    return cache_root() / "gguf" / f"{gguf.stem}-{verified_sha256(gguf)[0][:16]}"


def _is_complete(checkpoint: Path) -> bool:
    """A finished conversion whose weights still match the digest recorded when it was written."""
    import json

    from lpa.assets import verified_sha256

    if not ((checkpoint / "config.json").is_file() and (checkpoint / ".complete").is_file()):
        return False
    try:
        recorded = json.loads((checkpoint / ".complete").read_text(encoding="utf-8"))["weights"]
    except (OSError, ValueError, KeyError, TypeError):
        return False  # written before conversions recorded their digests: convert again
    actual = {name: verified_sha256(checkpoint / name)[0] for name in recorded if (checkpoint / name).is_file()}
    if actual != recorded:
        log.warning("%s: converted weights do not match their recorded sha256; converting again", checkpoint)
        return False
    return True


def convert_gguf(gguf: Path, out_dir: Path | None = None) -> Path:
    """De-quantise a GGUF file once into a plain safetensors checkpoint and return its directory.

    transformers refuses to ``save_pretrained`` a GGUF-loaded model (it carries a
    non-serialisable quantizer), so we build a clean model from the config and load the
    de-quantised weights into it, then save that.  The directory is written under a temporary
    name and renamed at the end, so a crash never leaves a half-written cache.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out_dir = out_dir or _gguf_cache_dir(gguf)
    if _is_complete(out_dir):
        return out_dir
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
    except ValueError as exc:
        message = str(exc)
        if "not supported" in message.lower() or "architecture" in message.lower():
            raise LpaError(f"Cannot load GGUF file {gguf}: {message}") from None
        raise
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    model_type = config_dict.pop("model_type")
    clean_config = AutoConfig.for_model(model_type, **config_dict)
    clean = AutoModelForCausalLM.from_config(clean_config, dtype=loaded.dtype)
    missing, unexpected = clean.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and clean_config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    if loaded.generation_config is not None:
        clean.generation_config = loaded.generation_config
    import json

    from lpa.assets import content_sha256
    from lpa.io import atomic_path

    with atomic_path(out_dir, directory=True) as tmp:
        clean.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(f"{gguf.resolve()}\n", encoding="utf-8")
        weights = {f.name: content_sha256(f)[0] for f in sorted(tmp.glob("*.safetensors"))}
        (tmp / ".complete").write_text(json.dumps({"source": str(gguf.resolve()), "weights": weights}, indent=1,
                                                  sort_keys=True) + "\n", encoding="utf-8")
    return out_dir


def _checkpoint_for(spec: str) -> str:
    """Resolve aliases and GGUF files to a loadable checkpoint (dir or hub id)."""
    source = _resolve_source(spec)
    if source.endswith(".gguf"):
        return str(convert_gguf(Path(source)))
    return source


def load_tokenizer(spec: str, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_checkpoint_for(spec), trust_remote_code=trust_remote_code)
    prepare_tokenizer(tokenizer)
    return tokenizer


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Left padding (batched generation) and a pad token (many chat models lack one)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "left"
    return tokenizer


@dataclass(frozen=True)
class LoadedModel:
    """What :func:`load` returns: the model, its tokenizer and who the model is."""

    model: Any
    tokenizer: Any
    identity: ModelIdentity


def load(
    spec: str,
    *,
    adapter: str | Path | None = None,
    device: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    merge_adapter: bool = False,
    **kwargs: Any,
) -> LoadedModel:
    """Load a causal LM and its tokenizer, in eval mode, on the chosen device and dtype.

    ``adapter`` is a PEFT adapter directory (e.g. the ``adapter/`` of an ``lpa train`` run);
    the model is then a ``PeftModel`` unless ``merge_adapter`` is set.  The returned
    :class:`ModelIdentity` is what every cache key and result record uses.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    checkpoint = _checkpoint_for(spec)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    try:
        config = AutoConfig.from_pretrained(checkpoint, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise LpaError(
            f"Cannot load model {spec!r}: {str(exc).splitlines()[0]} "
            f"(built-in aliases: {', '.join(sorted(ALIASES))})."
        ) from None
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    is_causal = config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not getattr(config, "is_encoder_decoder", False)
    if not is_causal and not trust_remote_code:
        raise LpaError(
            f"Model {spec!r} is a {config.model_type!r} model, not a causal language model "
            "(lpa needs a decoder-only LM such as Llama, Qwen, Mistral, Gemma, GPT-2, Phi)."
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(
            checkpoint, dtype=torch_dtype, trust_remote_code=trust_remote_code, **kwargs
        )
    except (OSError, ValueError) as exc:
        raise LpaError(f"Cannot load model {spec!r}: {str(exc).splitlines()[0]}") from None
    model.to(torch_device)
    tokenizer = load_tokenizer(spec, trust_remote_code=trust_remote_code)
    identity = ModelIdentity(
        model=spec,
        adapter=adapter_name(adapter),
        adapter_sha=adapter_hash(adapter),
        revision=_revision(spec, checkpoint, config),
        dtype=str(torch_dtype).replace("torch.", ""),
        weights_sha256=_weights_sha256(spec),
    )
    if adapter is not None:
        model = attach_adapter(model, adapter, merge=merge_adapter)
    model.eval()
    contiguous_lm_head_input(model)
    register_identity(model, identity)
    return LoadedModel(model, tokenizer, identity)


def contiguous_lm_head_input(model: Any) -> Any:
    """Make the output layer's input contiguous before its matmul; returns ``model``.

    Why: transformers slices the hidden states it projects (``logits_to_keep``), and a non-contiguous 3-D input
    sends ``nn.Linear`` through a batched matmul that copies the whole vocabulary matrix per row: on a CPU,
    Qwen's 151k x 896 head on 16 x 30 sliced positions took 8.5 s in bf16 and 1.45 s in fp32, 0.36 s and 0.85 s
    contiguous.  Idempotent; a no-op for models without output embeddings.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or getattr(head, "_lpa_contiguous_input", False):
        return model

    def make_contiguous(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0].contiguous(), *args[1:]) if args and hasattr(args[0], "contiguous") else args

    head.register_forward_pre_hook(make_contiguous)
    head._lpa_contiguous_input = True
    return model


def load_model(spec: str, **kwargs: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """:func:`load` returning ``(model, tokenizer)``; the identity stays reachable through
    :func:`lpa.models.identity_of`."""
    loaded = load(spec, **kwargs)
    return loaded.model, loaded.tokenizer


def spec_identity(spec: str, adapter: str | Path | None = None, *, trust_remote_code: bool = False) -> ModelIdentity:
    """The identity of ``spec`` (+ ``adapter``) without loading its weights: for a model served
    elsewhere (an OpenAI-compatible server), whose dtype is not known here."""
    if resolve_alias(spec) is not None:
        return ModelIdentity(model=spec).with_adapter(adapter)
    source = _resolve_source(spec)
    config = None
    if not Path(source).exists():
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        except (OSError, ValueError):
            config = None
    return ModelIdentity(model=spec, revision=_revision(spec, source, config)).with_adapter(adapter)


def _weights_sha256(spec: str) -> str | None:
    """The sha256 of the weights file an alias or ``.gguf`` spec loads (verified; cheap after the first time)."""
    from lpa.assets import verified_sha256

    source = _resolve_source(spec)
    return verified_sha256(source)[0] if source.endswith(".gguf") and Path(source).is_file() else None


def _revision(spec: str, checkpoint: str, config: Any) -> str | None:
    """Hub commit for hub ids, weights fingerprint for local checkpoints, None for pinned aliases."""
    if resolve_alias(spec) is not None:
        return None
    if Path(checkpoint).exists():
        return weights_fingerprint(checkpoint)
    return getattr(config, "_commit_hash", None)


def attach_adapter(model: PreTrainedModel, adapter: str | Path, *, merge: bool = False) -> Any:
    """Wrap ``model`` with a saved PEFT adapter (plain ``peft`` format)."""
    from peft import PeftModel

    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise LpaError(f"Adapter directory {path} has no adapter_config.json (expected a PEFT adapter).")
    peft_model = PeftModel.from_pretrained(model, str(path))
    return peft_model.merge_and_unload() if merge else peft_model
