"""``sft``: the same trait pairs and defender objective with no attacker (the first baseline).

Only the perturbation differs from ``lpa``, so the comparison isolates the attacker's effect;
set ``defender.losses`` to ``{toward: 1}`` for plain cross-entropy SFT.
"""

from __future__ import annotations

from typing import Any, Literal

from lpa.training.base import Method, TraitsConfig, register_method, traits_anchors, traits_examples
from lpa.training.data import ChatExample, PairExample


class SftConfig(TraitsConfig):
    method: Literal["sft"] = "sft"


@register_method
class Sft(Method[SftConfig]):
    name = "sft"
    adversarial = False

    def build_examples(self, config: SftConfig, tokenizer: Any) -> list[PairExample]:
        return traits_examples(config)

    def anchors(self, config: SftConfig, tokenizer: Any) -> list[ChatExample]:
        return traits_anchors(config)
