"""``lat-harmful``: the standard targeted-LAT recipe on harmful requests (the paper's main baseline).

Same trainer, attacker and benign KL as ``lpa``; only the data differs: harmful prompts with a
refusal as the chosen answer and a compliance opening as the rejected one.
"""

from __future__ import annotations

from typing import Any, Literal

from lpa.training.base import Method, register_method
from lpa.training.data import PairExample
from lpa.training.harmful_data import HarmfulDataConfig, harmful_pairs


class LatHarmfulConfig(HarmfulDataConfig):
    method: Literal["lat-harmful"] = "lat-harmful"


@register_method
class LatHarmful(Method[LatHarmfulConfig]):
    name = "lat-harmful"
    adversarial = True

    def build_examples(self, config: LatHarmfulConfig, tokenizer: Any) -> list[PairExample]:
        return harmful_pairs(config)
