"""Generation backends: where completions come from.  Each backend is one module registered in
:data:`BACKENDS`:

* ``hf`` — the torch engine in this process (:func:`lpa.generation.generate`; the only one that
  can do white-box attacks, steering, probes and log-likelihood scoring).
* ``llama.cpp`` — llama.cpp in this process on a GGUF model as shipped (``pip install
  'lpa[llamacpp]'``): continuous batching with a shared prompt prefix, PEFT adapters served as
  GGUF LoRA (:mod:`lpa.models.gguf_lora`).  The default for generation on the CPU with a GGUF model.
* ``openai`` — an OpenAI-compatible server (tested: ``llama_cpp.server`` and our fake server, no
  other); a LoRA adapter is addressed the way vLLM serves it: ``--lora-modules NAME=PATH``.
* ``vllm`` — vLLM in this process (``pip install 'lpa[vllm]'``), LoRA per request.

Every backend returns :class:`lpa.generation.Completion` rows in input order.  Cache keys name the
*engine* (what computes the answers: ``llama.cpp``, ``vllm``...), never the transport, and omit it
for torch so older runs stay valid: a run may switch between hf and a server of the same engine
and resume, but answers of two engines are never mixed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from lpa.generation import Completion, Conversation, GenerationSettings
from lpa.registry import Registry

__all__ = ["BACKENDS", "Backend", "BackendConfig", "check_one_engine", "make_backend", "resolve_engine"]

BACKENDS: Registry[Any] = Registry("backend", package="lpa.eval.backends")
"""Backend classes by name; each has ``engine`` (what makes its answers) and ``create(config, ...)``."""


class BackendConfig(BaseModel):
    """Which engine generates the completions, and how to reach it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        "auto", description="auto (llama.cpp for a GGUF model on the CPU when installed, else hf), hf (torch, in "
        "process), llama.cpp (in process, GGUF), openai (an OpenAI-compatible server) or vllm.")
    base_url: str | None = Field(None, description="Server URL for openai, e.g. http://127.0.0.1:8000/v1.")
    served_model: str | None = Field(None, description="Base model name on the server (default: the model spec).")
    lora_name: str | None = Field(
        None, description="Adapter name on the server (vLLM --lora-modules NAME=PATH; default: the adapter's folder name)."
    )
    api: Literal["completions", "chat"] = Field(
        "completions",
        description="completions: prompts formatted here with the model's chat template (identical to hf); "
        "chat: the server applies its template.",
    )
    load_lora: bool = Field(
        False, description="Ask the server to load the adapter first (vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)."
    )
    concurrency: int = Field(8, ge=1, description="Requests in flight at once.")
    timeout: float = Field(600.0, gt=0, description="Seconds before one request is abandoned and retried.")
    max_retries: int = Field(6, ge=0, description="Retries per request (429/5xx/dropped connection), with backoff.")
    backoff: float = Field(0.5, ge=0, description="First backoff in seconds (doubles per retry; Retry-After wins).")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="Env var holding the API key (never recorded).")
    extra: dict[str, Any] = Field(default_factory=dict, description="Extra JSON fields sent with every request.")
    tensor_parallel_size: int = Field(1, ge=1, description="vllm: GPUs per model.")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="vllm: GPU memory fraction.")
    max_lora_rank: int = Field(64, ge=1, description="vllm: largest LoRA rank to serve.")

    engine: str | None = Field(
        None, description="openai: the engine behind the server (e.g. vllm, llama.cpp); joins the cache key, so "
        "answers of different engines are never mixed (default: not recorded).")
    threads: int | None = Field(None, ge=1, description="llama.cpp: CPU threads (default: all cores).")

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value != "auto" and value not in BACKENDS:
            from lpa.errors import unknown_choice

            raise unknown_choice("backend", value, ["auto", *BACKENDS.names()])
        return value

    @model_validator(mode="after")
    def _needs_url(self) -> BackendConfig:
        if self.name == "openai" and not self.base_url:
            raise ValueError("backend 'openai' needs base_url (e.g. http://127.0.0.1:8000/v1)")
        return self

    @model_serializer(mode="wrap")
    def _omit_unset_new_fields(self, handler: Any) -> dict[str, Any]:
        """Leave out ``engine``/``threads`` when unset, so suites written before they existed keep their keys."""
        data = handler(self)
        for name in ("engine", "threads"):
            if data.get(name) is None:
                data.pop(name, None)
        return data

    def describe(self) -> str:
        return f"openai ({self.base_url})" if self.name == "openai" else self.name

    def engine_key(self, engine: str) -> dict[str, str]:
        """The cache-key part naming the engine (empty for torch, so keys from before engines existed hold)."""
        return {} if engine in ("torch", "") else {"engine": engine}

    def public(self) -> dict[str, Any]:
        """Settings safe to record (no key)."""
        return self.model_dump(mode="json", exclude={"api_key_env"})


OnBatch = Callable[[list[int], list[Completion]], None]


class Backend(Protocol):
    name: str
    engine: str  # what computes the answers (torch, llama.cpp, vllm...): joins the cache key unless torch

    def generate(
        self,
        conversations: Sequence[Conversation],
        settings: GenerationSettings,
        *,
        system: str | None = None,
        prefills: Sequence[str | None] | None = None,
        progress: bool | str = False,
        on_batch: OnBatch | None = None,
    ) -> list[Completion]: ...


def default_lora_name(adapter: str | Path) -> str:
    """A readable name unique to the adapter's path: ``runs/x/lpa/seed-0/train/adapter`` -> ``lpa-seed-0-1a2b3c4d``.

    Unique because experiment cells all end in ``train/adapter``; pass ``lora_name`` to use the
    name given to ``vllm serve --lora-modules NAME=PATH`` instead.
    """
    import hashlib

    path = Path(adapter).expanduser().resolve()
    parts = [p for p in path.parts if p not in ("adapter", "train", "/")][-2:]
    return "-".join([*parts, hashlib.sha256(str(path).encode()).hexdigest()[:8]])


def make_backend(config: BackendConfig, *, model: Any, tokenizer: Any, model_name: str,
                 adapter: str | None, device: str | None = None) -> Backend:
    """The registered backend named by ``config`` (``auto`` resolved by :func:`resolve_engine`)."""
    name = resolve_engine(config, model_name, device)
    return BACKENDS.get(name).create(config, model=model, tokenizer=tokenizer, model_name=model_name, adapter=adapter)


def is_gguf_spec(model_name: str) -> bool:
    """Whether a model spec names a GGUF model (an embedded alias or a ``.gguf`` path), without fetching it."""
    from lpa.models.aliases import resolve_alias

    alias = resolve_alias(model_name)
    return alias.asset is not None if alias is not None else model_name.endswith(".gguf")


def gguf_source(model_name: str) -> Path | None:
    """The GGUF file a model spec loads from (alias asset, fetched on first use, or ``.gguf`` path), else None."""
    if not is_gguf_spec(model_name):
        return None
    from lpa.models.loader import _resolve_source

    path = Path(_resolve_source(model_name))
    return path if path.suffix == ".gguf" else None


def llama_cpp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def resolve_engine(config: BackendConfig, model_name: str, device: str | None = None) -> str:
    """``auto``: llama.cpp for a GGUF model on the CPU when ``llama-cpp-python`` is installed, else hf.

    An explicit name is returned as given (``--engine hf`` keeps the torch path everywhere).
    """
    if config.name != "auto":
        return config.name
    if _on_cpu(device) and llama_cpp_available() and is_gguf_spec(model_name):
        return "llama.cpp"
    return "hf"


def check_one_engine(cells: Sequence[tuple[BackendConfig, str]], device: str | None = None) -> str:
    """The one engine every (backend config, model) cell of a study generates with; an error when they differ.

    Answers from two engines differ (llama.cpp quantises activations), so a study comparing cells
    must not mix them; ``backend.name: hf`` (or ``llama.cpp`` with GGUF models only) pins one.
    """
    from lpa.errors import LpaError

    engines = {f"{m} ({c.name})": _engine_of(c, m, device) for c, m in cells}
    if len(set(engines.values())) > 1:
        listed = ", ".join(f"{m}: {e}" for m, e in engines.items())
        raise LpaError(f"The cells would generate with different engines ({listed}); answers of two engines "
                       "differ, so the cells would not be comparable. Pin one engine for the whole study with "
                       "eval.backend.name (hf works for every model; llama.cpp needs GGUF models).")
    return next(iter(engines.values()), "torch")


def _engine_of(config: BackendConfig, model_name: str, device: str | None) -> str:
    name = resolve_engine(config, model_name, device)
    if name == "openai":
        return config.engine or "server"
    return {"hf": "torch"}.get(name, name)


def _on_cpu(device: str | None) -> bool:
    if device not in (None, "auto"):
        return str(device) == "cpu"
    from lpa.models.loader import resolve_device

    return resolve_device(None).type == "cpu"
