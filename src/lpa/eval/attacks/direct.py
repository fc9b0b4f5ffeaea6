"""The request as is: the baseline every other attack is compared with."""

from __future__ import annotations

from lpa.eval.attacks.base import Attack, AttackedPrompt, register_attack
from lpa.plugins import PluginArgs
from lpa.records import Sample


@register_attack
class Direct(Attack[PluginArgs]):
    name = "direct"
    description = "The request exactly as the benchmark gives it."

    def transform(self, sample: Sample) -> list[AttackedPrompt]:
        return [AttackedPrompt(messages=sample.as_messages())]
