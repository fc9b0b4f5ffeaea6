"""``lpa``: targeted latent adversarial training on personality-trait statements.

Faithful layout (default): the "disagree" statements are trained under attack toward "I do not
agree with this statement."; the "agree" statements are returned by :meth:`Lpa.anchors` and
enter only the defender's benign KL / SFT terms.  See ``docs/method.md``.
"""

from __future__ import annotations

from typing import Any, Literal

from lpa.training.base import Method, TraitsConfig, register_method, traits_anchors, traits_examples
from lpa.training.data import ChatExample, PairExample


class LpaConfig(TraitsConfig):
    method: Literal["lpa"] = "lpa"


@register_method
class Lpa(Method[LpaConfig]):
    name = "lpa"
    adversarial = True

    def build_examples(self, config: LpaConfig, tokenizer: Any) -> list[PairExample]:
        return traits_examples(config)

    def anchors(self, config: LpaConfig, tokenizer: Any) -> list[ChatExample]:
        return traits_anchors(config)
