"""Training methods: a registry of classes that turn a config into preference pairs.

All pair-based methods share one trainer loop (:mod:`lpa.training.trainer`); a method only
says where its examples come from and whether the LAT attacker runs.  Adding a method::

    class HarmfulLatConfig(TrainConfig):
        method: Literal["lat-harmful"] = "lat-harmful"
        prompts: str = Field("harmful_train.json", description=...)

    @register_method
    class HarmfulLat(Method[HarmfulLatConfig]):
        name = "lat-harmful"
        adversarial = True
        def build_examples(self, config: HarmfulLatConfig, tokenizer): return [PairExample(...), ...]

in a new module of :mod:`lpa.training.methods`; :data:`METHODS` finds it there.
"""

from __future__ import annotations

import typing
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import Field

from lpa.config import apply_overrides, merge_nested, read_yaml, validate_config
from lpa.errors import LpaError
from lpa.registry import Registry
from lpa.training.config import TrainConfig, preset_defaults
from lpa.training.data import ChatExample, Collator, PairExample
from lpa.traits.examples import ExampleFormat, Layout

ConfigT = TypeVar("ConfigT", bound=TrainConfig)


class Method(Generic[ConfigT]):
    """``class MyMethod(Method[MyConfig])``: ``Config`` is set from the parameter and hooks get a typed config."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[TrainConfig]] = TrainConfig
    adversarial: ClassVar[bool] = True  # run the LAT attacker before each defender update

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "Config" not in cls.__dict__:
            for base in getattr(cls, "__orig_bases__", ()):
                params = [p for p in typing.get_args(base) if isinstance(p, type) and issubclass(p, TrainConfig)]
                if params:
                    cls.Config = params[0]

    def build_examples(self, config: ConfigT, tokenizer: Any) -> list[PairExample] | list[ChatExample]:
        """Training examples: preference pairs, or conversations with a response (SFT-style methods)."""
        raise NotImplementedError

    def collator(self, config: ConfigT, tokenizer: Any) -> Collator:
        """The batches of the training examples (prompts truncated from the left to ``max_prompt_tokens``)."""
        return Collator(tokenizer, config.max_prompt_tokens)

    def train_context(self, config: ConfigT, model: Any) -> AbstractContextManager[Any]:
        """Active around the defender's training forwards and backwards only (e.g. preventative steering)."""
        return nullcontext()

    def anchors(self, config: ConfigT, tokenizer: Any) -> list[ChatExample]:
        """Benign anchor conversations from the method's own data (KL / SFT only, never attacked)."""
        return []

    def templates(self, config: ConfigT, examples: Sequence[PairExample | ChatExample]) -> list[str]:
        """Completions whose verbatim reuse on benign prompts counts as template leak.

        Default: every completion used by at least 10% of the examples (the fixed answers).
        """
        pairs = [e for e in examples if isinstance(e, PairExample)]
        counts = Counter([e.chosen for e in pairs] + [e.rejected for e in pairs])
        return sorted(t for t, c in counts.items() if c >= max(1, len(examples) // 10))


METHODS: Registry[type[Method[Any]]] = Registry("training method", package="lpa.training.methods")
# The class decorator of a method: registers it under its ``name`` (its module is found by :data:`METHODS`).
register_method = METHODS.add


class TraitsConfig(TrainConfig):
    """Shared by methods that train on a trait set."""

    traits: str = Field("big-five", description="Built-in trait set name or a .yaml/.csv trait file.")
    layout: Layout = Field(
        "faithful",
        description="faithful: only 'disagree' statements are trained under attack, 'agree' ones are the KL anchor "
        "(the authors'); mixed: every statement is trained under attack (ablation).",
    )
    format: ExampleFormat = Field(default_factory=ExampleFormat)


def _split(config: TraitsConfig) -> tuple[list[PairExample], list[PairExample]]:
    from lpa.traits import build_examples, load_traits, split_layout

    trained, anchors = split_layout(build_examples(load_traits(config.traits, seed=config.seed), config.format), config.layout)
    if not trained:
        raise LpaError(f"Trait set {config.traits!r} has no 'disagree' statements to train under layout "
                       f"{config.layout!r}; use layout=mixed (valid layouts: faithful, mixed).")
    return trained, anchors


def traits_examples(config: TraitsConfig) -> list[PairExample]:
    """The pairs trained under the layout (faithful: the 'disagree' statements only)."""
    return _split(config)[0]


def traits_anchors(config: TraitsConfig) -> list[ChatExample]:
    """The layout's anchor statements with their answer, as benign conversations."""
    return [ChatExample(messages=e.messages, response=e.chosen) for e in _split(config)[1]]


def config_from_dict(data: dict[str, Any], source: str = "config") -> TrainConfig:
    """Validate a config dict through the class of its ``method`` tag."""
    method = data.get("method")
    if not isinstance(method, str):
        raise LpaError(f"Invalid {source}: 'method' is required. Valid choices: {', '.join(METHODS.names())}.")
    return validate_config(METHODS.get(method).Config, data, source=source)


def build_train_config(
    path: str | Path | None = None, overrides: list[str] | None = None, **fields: Any
) -> TrainConfig:
    """preset defaults <- YAML file <- explicit fields (CLI options) <- ``key=value`` overrides."""
    data: dict[str, Any] = read_yaml(path) if path is not None else {}
    data = merge_nested(data, {k: v for k, v in fields.items() if v is not None})
    data = apply_overrides(data, overrides)
    preset = data.get("preset")
    merged = merge_nested(preset_defaults(preset), data)
    return config_from_dict(merged, source=str(path) if path else "config")
