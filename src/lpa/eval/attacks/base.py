"""Attack plugin base.

Two kinds of attack share one interface:

* **Transforms** (direct, prefill, templates, encodings, many-shot, best-of-n...) override
  :meth:`Attack.transform`: ``Sample -> list[AttackedPrompt]`` (several variants for best-of-n;
  a sample counts as attacked successfully if any variant succeeds).  The runner generates
  for them in big batches.
* **Optimisers** (embedding-pgd, gcg, pair) override :meth:`Attack.run`, which gets an
  :class:`AttackContext` with the target model, a generate function and (optionally) a judge,
  and returns finished :class:`~lpa.records.Generation` rows, logging its rounds/loss curve in
  each row's ``attack_log``.

Every generation records ``attack`` (name) and ``attack_args`` (settings, budgets, seed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from lpa.plugins import Plugin, PluginArgs
from lpa.records import Generation, Message, Sample
from lpa.registry import Registry

ATTACKS: Registry[type[Attack[Any]]] = Registry("attack", package="lpa.eval.attacks")


# The class decorator of an attack: registers it under its ``name`` (its module is found by :data:`ATTACKS`).
register_attack = ATTACKS.add
AttackArgsT = TypeVar("AttackArgsT", bound=PluginArgs)


class AttackedPrompt(BaseModel):
    """What the target model is given: the conversation and an optional assistant prefill."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Message]
    prefill: str | None = None
    variant: int = 0
    info: dict[str, Any] = Field(default_factory=dict)  # e.g. the encoding used, the template id


@dataclass
class AttackContext:
    """What optimising attacks may use. ``generate`` takes prompts and returns completion texts."""

    model: Any
    tokenizer: Any
    generate: Callable[[Sequence[AttackedPrompt]], list[str]]
    judge: Callable[[Sample, str], float] | None = None  # 0 (safe) .. 1 (jailbroken)
    seed: int = 0
    model_name: str = ""
    adapter: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    cache_dir: Path | None = None  # where search attacks cache every query (lpa.eval.attacks.support.query_cache)


class Attack(Plugin[AttackArgsT]):
    """``class MyAttack(Attack[MyArgs])``: ``self.args`` is a validated ``MyArgs``."""

    kind = "attack"
    needs_model: ClassVar[bool] = False  # True for white-box / adaptive attacks that override run()
    needs_weights: ClassVar[bool] = False  # True when the attack reads gradients/embeddings (always on hf)
    description: ClassVar[str] = ""

    def transform(self, sample: Sample) -> list[AttackedPrompt]:
        raise NotImplementedError(f"attack {self.name!r} does not define transform()")

    def planned_answers(self, samples: Sequence[Sample]) -> int | None:
        """Target answers a run over ``samples`` costs at most, for ``lpa experiment --plan``; None: not known
        before running (a search decides as it goes). Attacks that need the model override it when they can."""
        if self.needs_model:
            return None
        return sum(len(self.transform(sample)) for sample in samples)

    def run(self, samples: Sequence[Sample], ctx: AttackContext) -> list[Generation]:
        """Default: transform, then generate through ``ctx.generate``."""
        prompts = [(sample, p) for sample in samples for p in self.transform(sample)]
        texts = ctx.generate([p for _, p in prompts])
        return [make_generation(self, sample, ctx, prompt, text) for (sample, prompt), text in zip(prompts, texts, strict=True)]


def make_generation(
    attack: Attack[Any], sample: Sample, ctx: AttackContext, prompt: AttackedPrompt, text: str, **extra: Any
) -> Generation:
    """One result row that records the attack name and all its settings (budgets, seed)."""
    if ctx.tokenizer is not None and "completion_tokens" not in extra:
        extra["completion_tokens"] = len(ctx.tokenizer(text, add_special_tokens=False)["input_ids"])
    return Generation(
        sample_id=sample.id,
        benchmark=sample.benchmark,
        attack=attack.name,
        attack_args=attack.args.model_dump(mode="json"),
        model=ctx.model_name,
        adapter=ctx.adapter,
        settings=ctx.settings,
        messages=prompt.messages,
        prefill=prompt.prefill,
        text=text,
        variant=prompt.variant,
        info=prompt.info,
        **extra,
    )
