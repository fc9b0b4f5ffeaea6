"""``refusal-sft``: plain fine-tuning on the harmful-request -> refusal pairs (no attacker).

Set ``defender.losses`` to ``{toward: 1}`` for pure cross-entropy SFT; the default keeps the
shared defender objective so that only the attacker differs from ``lat-harmful``.
"""

from __future__ import annotations

from typing import Any, Literal

from lpa.training.base import Method, register_method
from lpa.training.data import PairExample
from lpa.training.harmful_data import HarmfulDataConfig, harmful_pairs


class RefusalSftConfig(HarmfulDataConfig):
    method: Literal["refusal-sft"] = "refusal-sft"


@register_method
class RefusalSft(Method[RefusalSftConfig]):
    name = "refusal-sft"
    adversarial = False

    def build_examples(self, config: RefusalSftConfig, tokenizer: Any) -> list[PairExample]:
        return harmful_pairs(config)
