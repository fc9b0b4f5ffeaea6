"""Human jailbreaks at corpus scale: the In-The-Wild templates of Shen et al. (CCS 2024).

Each request is wrapped by ``k`` templates drawn from the corpus with a seed (or by all of them);
the request counts as jailbroken if any template succeeds, and each generation keeps its template
id (``info.template``) and a corpus-stable ``variant`` (the template's index in the sorted corpus),
so reports can give the ASR per template and paired per-template tests between runs
(:mod:`lpa.eval.per_template`).

The corpus is the ``in-the-wild`` asset (488 PyRIT YAML templates, fetched from the ``pyrit``
wheel, never installed) or any template file/folder (``file=``).  Templates are rendered without
Jinja (:func:`lpa.eval.attacks.template.split_slot_template`).

Long templates: a template whose rendered prompt would not fit the model's context (minus the
answer's ``max_new_tokens``) is skipped and counted in ``attack_log.skipped``; the draw walks a
seeded permutation of the corpus and keeps the first ``k`` that fit, so every cell evaluating the
same model sees the same templates for the same request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

from lpa.errors import LpaError
from lpa.eval.attacks.base import Attack, AttackContext, AttackedPrompt, make_generation, register_attack
from lpa.eval.attacks.support.util import replace_request, request_text, sample_rng
from lpa.eval.attacks.template import JailbreakTemplate, load_templates
from lpa.plugins import PluginArgs
from lpa.records import Generation, Sample

CHAT_OVERHEAD_TOKENS = 64  # role markers and a default system prompt added by chat templates
FALLBACK_CONTEXT = 4096  # when neither the model config nor the tokenizer states a context length


class InTheWildArgs(PluginArgs):
    k: int | None = Field(8, ge=1, description="Templates drawn per request (None: every template).")
    seed: int = Field(0, description="Seed of the per-request draw (the same for every model and adapter).")
    file: str | None = Field(None, description="Template file or folder (default: the in-the-wild asset).")
    ids: list[str] | None = Field(None, description="Draw only from these template ids (default: the whole corpus).")
    max_prompt_tokens: int | None = Field(
        None, ge=1, description="Longest rendered prompt in tokens (default: model context - max_new_tokens).")


def corpus(args: InTheWildArgs) -> tuple[JailbreakTemplate, ...]:
    """The templates to draw from, sorted by id (so a template's index is stable)."""
    if args.file:
        templates = load_templates(args.file)
    else:
        from lpa.assets import asset_path

        templates = load_templates(asset_path("in-the-wild"))
    ordered = tuple(sorted(templates, key=lambda t: t.id))
    if args.ids is None:
        return ordered
    known = {t.id for t in ordered}
    missing = [i for i in args.ids if i not in known]
    if missing:
        raise LpaError(f"Unknown in-the-wild template ids {missing[:5]}; see the corpus folder for valid ids.")
    chosen = set(args.ids)
    return tuple(t for t in ordered if t.id in chosen)


def draw_order(sample_id: str, n: int, seed: int) -> list[int]:
    """A seeded permutation of template indices that depends only on the seed and the request."""
    order = list(range(n))
    sample_rng(seed, sample_id, "in-the-wild").shuffle(order)
    return order


def context_budget(ctx: AttackContext, max_prompt_tokens: int | None) -> int:
    """Prompt tokens the model can take with room for the answer."""
    if max_prompt_tokens is not None:
        return max_prompt_tokens
    config = getattr(ctx.model, "config", None)
    context = getattr(config, "max_position_embeddings", None)
    if not context:
        length = getattr(ctx.tokenizer, "model_max_length", None)
        context = length if isinstance(length, int) and length < 10**7 else FALLBACK_CONTEXT
    answer = int(ctx.settings.get("max_new_tokens", 0) or 0)
    return max(1, int(context) - answer - CHAT_OVERHEAD_TOKENS)


def count_tokens(tokenizer: Any, text: str) -> int:
    if tokenizer is None:
        return len(text) // 3  # no tokenizer (tests): a conservative characters-per-token estimate
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


@register_attack
class InTheWild(Attack[InTheWildArgs]):
    name = "in-the-wild"
    description = "Wrap each request in k human jailbreak templates drawn from the In-The-Wild corpus (any-of-k)."
    needs_model = True  # reads the tokenizer and context length to skip templates that would not fit
    batch_samples = True  # requests are independent: the runner passes several per run() call

    def check(self) -> None:
        if self.args.file is None:
            from lpa.assets import find_asset

            if find_asset("in-the-wild") is None:
                import os

                if os.environ.get("LPA_OFFLINE", "") in ("1", "true", "yes"):
                    raise LpaError("The in-the-wild corpus is not here: run `lpa assets fetch in-the-wild` once.")
                return  # fetched on first use
        corpus(self.args)

    def planned_answers(self, samples: Sequence[Sample]) -> int | None:
        """k answers a request (fewer only where templates do not fit the context)."""
        templates = len(corpus(self.args))
        per_request = templates if self.args.k is None else min(self.args.k, templates)
        return per_request * len(samples)

    def select(self, sample: Sample, templates: Sequence[JailbreakTemplate], fits: Any) -> tuple[list[int], list[str]]:
        """Indices of the first k templates (in the request's seeded order) that ``fits``; ids skipped."""
        k = len(templates) if self.args.k is None else min(self.args.k, len(templates))
        chosen: list[int] = []
        skipped: list[str] = []
        for index in draw_order(sample.id, len(templates), self.args.seed):
            if len(chosen) == k:
                break
            if fits(templates[index]):
                chosen.append(index)
            else:
                skipped.append(templates[index].id)
        return chosen, skipped

    def prompts(self, sample: Sample, ctx: AttackContext) -> tuple[list[AttackedPrompt], list[str]]:
        templates = corpus(self.args)
        request = request_text(sample)
        budget = context_budget(ctx, self.args.max_prompt_tokens)
        chosen, skipped = self.select(sample, templates,
                                      lambda t: count_tokens(ctx.tokenizer, t.render(request)) <= budget)
        prompts = [AttackedPrompt(messages=replace_request(sample, templates[i].render(request)), variant=i,
                                  info={"template": templates[i].id}) for i in chosen]
        return prompts, skipped

    def run(self, samples: Sequence[Sample], ctx: AttackContext) -> list[Generation]:
        """All requests' prompts in one ``ctx.generate`` call, so the engine decodes them as one batch."""
        drawn = []
        for sample in samples:
            prompts, skipped = self.prompts(sample, ctx)
            if not prompts:
                raise LpaError(f"No in-the-wild template fits the model's context for request {sample.id!r} "
                               f"({len(skipped)} skipped); lower max_new_tokens or set max_prompt_tokens.")
            drawn.append((sample, prompts, {"skipped": skipped, "n_skipped": len(skipped), "queries": len(prompts)}))
        texts = iter(ctx.generate([p for _, prompts, _ in drawn for p in prompts]))
        return [make_generation(self, sample, ctx, p, next(texts), attack_log=log)
                for sample, prompts, log in drawn for p in prompts]
