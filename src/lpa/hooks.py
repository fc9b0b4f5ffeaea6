"""Residual-stream access for any causal LM: layer discovery and hook context managers.

Layer convention (used everywhere in lpa):

* ``"embed"`` is the output of the token-embedding module, i.e. the residual stream entering
  decoder block 0 (before any model-specific scaling such as Gemma's sqrt(hidden)).
* Layer ``l`` (0-based) is the **output of decoder block l**: the residual stream after block
  ``l`` has added its attention and MLP updates.  This equals ``hidden_states[l + 1]`` of a
  transformers forward with ``output_hidden_states=True`` except for the last block, where
  transformers applies the final norm.
* Layers can be given as an int (negative counts from the end), a float in [0, 1] for relative
  depth (``round(f * (n_layers - 1))``), a numeric string, or ``"embed"``.

Decoder blocks are found without a per-architecture table: the ``ModuleList`` whose length is
the config's layer count (the most frequent ``prefix.{num}`` template as a fallback), so it
works for Llama, Qwen, Mistral, Gemma, GPT-2, GPT-NeoX, Phi and through PEFT wrappers.

Hooks only live inside context managers, which acquire handles before ``try`` and remove
them in ``finally``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from lpa.errors import LpaError

LayerSpec = int | float | str
EMBED = "embed"
LayerKey = int | str  # a resolved layer: int index or "embed"

_NUM_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model")


def _text_config(model: nn.Module) -> Any:
    config = getattr(model, "config", None)
    if config is None:
        raise LpaError("Model has no .config; lpa needs a transformers model.")
    get_text = getattr(config, "get_text_config", None)
    return get_text() if callable(get_text) else config


def num_layers(model: nn.Module) -> int:
    config = _text_config(model)
    for key in _NUM_LAYER_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return len(decoder_layers(model))


def hidden_size(model: nn.Module) -> int:
    config = _text_config(model)
    for key in _HIDDEN_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return int(model.get_input_embeddings().weight.shape[-1])


_INDEXED = re.compile(r"^(.*)\.(\d+)$")


def layers_template(model: nn.Module) -> str:
    """The module-name template of the decoder blocks, e.g. ``model.layers.{num}``."""
    config = _text_config(model)
    expected = next((getattr(config, k) for k in _NUM_LAYER_KEYS if isinstance(getattr(config, k, None), int)), None)
    counts: Counter[str] = Counter()
    modules = dict(model.named_modules())
    for name in modules:
        match = _INDEXED.match(name)
        if match and isinstance(modules.get(match.group(1)), nn.ModuleList):
            counts[match.group(1) + ".{num}"] += 1
    if not counts:
        raise LpaError(f"Could not find decoder layers in {type(model).__name__} (no indexed ModuleList).")
    exact = [t for t, c in counts.items() if c == expected]
    if exact:
        return min(exact, key=len)  # the outermost list of the right length
    return counts.most_common(1)[0][0]


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    template = layers_template(model)
    modules = dict(model.named_modules())
    layers = []
    index = 0
    while (name := template.format(num=index)) in modules:
        layers.append(modules[name])
        index += 1
    return layers


def embedding_module(model: nn.Module) -> nn.Module:
    return model.get_input_embeddings()


def resolve_layer(model: nn.Module, spec: LayerSpec) -> LayerKey:
    """Turn a user layer spec into an int index in [0, n_layers) or ``"embed"``."""
    n = len(decoder_layers(model))
    valid = f"'embed', an int in [-{n}, {n - 1}], or a relative depth in [0.0, 1.0]"
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text in ("embed", "embedding", "embeddings", "emb"):
            return EMBED
        try:
            spec = float(text) if "." in text else int(text)
        except ValueError:
            raise LpaError(f"Invalid layer {spec!r}: use {valid}.") from None
    if isinstance(spec, bool):
        raise LpaError(f"Invalid layer {spec!r}: use {valid}.")
    if isinstance(spec, float):
        if not 0.0 <= spec <= 1.0:
            raise LpaError(f"Relative layer depth {spec} is out of range: use {valid}.")
        return int(round(spec * (n - 1)))
    if isinstance(spec, int):
        if not -n <= spec < n:
            raise LpaError(f"Layer {spec} is out of range for a model with {n} layers: use {valid}.")
        return spec % n
    raise LpaError(f"Invalid layer {spec!r}: use {valid}.")


def resolve_layers(model: nn.Module, specs: Sequence[LayerSpec] | LayerSpec) -> list[LayerKey]:
    if isinstance(specs, (int, float, str)):
        specs = [specs]
    keys: list[LayerKey] = []
    for spec in specs:
        key = resolve_layer(model, spec)
        if key not in keys:
            keys.append(key)
    return keys


def layer_module(model: nn.Module, key: LayerKey) -> nn.Module:
    if key == EMBED:
        return embedding_module(model)
    return decoder_layers(model)[int(key)]


def _hidden_of(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output: Any, hidden: torch.Tensor) -> Any:
    if isinstance(output, tuple):
        return (hidden, *output[1:])
    return hidden


EditFn = Callable[[torch.Tensor], torch.Tensor]


@contextmanager
def edit_output(model: nn.Module, layer: LayerSpec, fn: EditFn) -> Iterator[None]:
    """Replace the residual stream at ``layer`` by ``fn(hidden)`` on every forward call."""
    module = layer_module(model, resolve_layer(model, layer))

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        return _replace_hidden(output, fn(_hidden_of(output)))

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def record(
    model: nn.Module, layers: Sequence[LayerSpec] | LayerSpec, *, detach: bool = True, keep_all: bool = False
) -> Iterator[dict[LayerKey, Any]]:
    """Record the residual stream at ``layers``.

    Yields a dict filled during forward passes: ``{layer_key: tensor[batch, tokens, hidden]}``
    (the last call), or a list of tensors per call with ``keep_all`` (e.g. during generation).
    """
    keys = resolve_layers(model, layers)
    store: dict[LayerKey, Any] = {}

    def make_hook(key: LayerKey) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            hidden = _hidden_of(output)
            hidden = hidden.detach() if detach else hidden
            if keep_all:
                store.setdefault(key, []).append(hidden)
            else:
                store[key] = hidden

        return hook

    handles = [layer_module(model, key).register_forward_hook(make_hook(key)) for key in keys]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def _apply_delta(hidden: torch.Tensor, delta: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    delta = delta.to(dtype=hidden.dtype, device=hidden.device)
    if delta.dim() == 3 and delta.shape[:2] != hidden.shape[:2]:
        return hidden  # a per-token tensor applies only to the pass it was built for (not KV-cached steps)
    if mask is None:
        return hidden + delta
    mask = mask.to(hidden.device)
    if mask.shape != hidden.shape[:2]:
        return hidden
    return hidden + delta * mask.unsqueeze(-1).to(hidden.dtype)


@contextmanager
def add(
    model: nn.Module,
    layer: LayerSpec,
    delta: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    coef: float = 1.0,
) -> Iterator[None]:
    """Add ``coef * delta`` to the residual stream at ``layer``.

    ``delta`` is a vector ``[hidden]`` (added at every position, also in KV-cached generation
    steps) or a tensor ``[batch, tokens, hidden]`` (added only on forward passes of exactly that
    shape).  ``mask`` ``[batch, tokens]`` restricts the addition to selected tokens.
    """
    expected = hidden_size(model)
    if delta.shape[-1] != expected:
        raise LpaError(f"Delta has size {delta.shape[-1]} in its last dim but the model's hidden size is {expected}.")
    scaled = delta * coef
    with edit_output(model, layer, lambda hidden: _apply_delta(hidden, scaled, mask)):
        yield


@contextmanager
def add_many(
    model: nn.Module, deltas: dict[LayerKey, torch.Tensor], *, mask: torch.Tensor | None = None
) -> Iterator[None]:
    """:func:`add` at several layers at once (e.g. LAT perturbations at every attacked location)."""
    with ExitStack() as stack:
        for key, delta in deltas.items():
            stack.enter_context(add(model, key, delta, mask=mask))
        yield


__all__ = [
    "EMBED",
    "LayerKey",
    "LayerSpec",
    "add",
    "add_many",
    "decoder_layers",
    "edit_output",
    "embedding_module",
    "hidden_size",
    "layer_module",
    "layers_template",
    "num_layers",
    "record",
    "resolve_layer",
    "resolve_layers",
]
