"""Prefill: the assistant turn already starts with a compliant prefix and the model continues it.

Only possible with open weights (or APIs that allow assistant prefill); it tests whether safety
survives once the first tokens are no longer a refusal.
"""

from __future__ import annotations

from pydantic import Field

from lpa.eval.attacks.base import Attack, AttackedPrompt, register_attack
from lpa.eval.attacks.support.util import DEFAULT_TARGET, target_string
from lpa.plugins import PluginArgs
from lpa.records import Sample


class PrefillArgs(PluginArgs):
    prefix: str = Field(DEFAULT_TARGET, description="Assistant prefix used when the sample has no target string.")
    use_target: bool = Field(True, description="Use the behaviour's own target string (e.g. HarmBench) when present.")


@register_attack
class Prefill(Attack[PrefillArgs]):
    name = "prefill"
    description = "Start the assistant turn with a compliant prefix ('Sure, here is ...') and let the model continue."

    def transform(self, sample: Sample) -> list[AttackedPrompt]:
        prefix = target_string(sample, self.args.prefix) if self.args.use_target else self.args.prefix
        return [AttackedPrompt(messages=sample.as_messages(), prefill=prefix, info={"prefill": prefix})]
