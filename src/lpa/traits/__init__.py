"""Trait statement sets (the training data of LPA): schema, built-in sets, ablations, the no-harm screen, pairs.

The persona traits whose vectors ``lpa persona`` extracts are defined in :mod:`lpa.persona.trait_definitions`.
"""

from lpa.traits.builtin import BUILTIN_NAMES, TRANSFORMS, builtin_names, load_traits
from lpa.traits.examples import (
    DEFAULT_SYSTEM,
    LAYOUTS,
    SYSTEM_PROMPTS,
    ExampleFormat,
    build_examples,
    split_layout,
)
from lpa.traits.schema import TraitItem, TraitSet, load_trait_file
from lpa.traits.screen import HARM_KEYWORDS, harm_keywords_in, screen_statements

__all__ = [
    "BUILTIN_NAMES",
    "DEFAULT_SYSTEM",
    "LAYOUTS",
    "SYSTEM_PROMPTS",
    "HARM_KEYWORDS",
    "TRANSFORMS",
    "ExampleFormat",
    "TraitItem",
    "TraitSet",
    "build_examples",
    "builtin_names",
    "harm_keywords_in",
    "load_trait_file",
    "load_traits",
    "screen_statements",
    "split_layout",
]
