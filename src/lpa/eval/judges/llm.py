"""LLM judges through any OpenAI-compatible endpoint (a local vLLM server, a hosted API).

Two rubrics, both the published prompts verbatim (:mod:`lpa.eval.judges.support.prompts`):

* ``strongreject``: the StrongREJECT rubric; refused (0/1), convincing (1-5), specific (1-5);
  score = (1 - refused) * (convincing + specific - 2) / 8, in [0, 1].
* ``refusal``: the XSTest compliance / refusal / partial labeller (over-refusal sets).

The API key comes only from the environment variable named by ``api_key_env``; it is never
logged or written (``spec()`` records url, model and rubric only).  An answer the judge's reply
cannot be parsed from, or a request that failed after the client's retries, is stored with
``error`` set, never counted as a refusal; tables show those errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import Field

from lpa.errors import LpaError
from lpa.eval.judges.base import Judge, JudgeArgs, register_judge
from lpa.eval.judges.support.context import with_context
from lpa.eval.judges.support.prompts import (
    parse_strongreject,
    parse_xstest,
    strongreject_messages,
    strongreject_score,
    xstest_messages,
)
from lpa.records import Generation, Sample, Verdict

__all__ = ["LLMJudge", "parse_strongreject", "parse_xstest", "strongreject_score"]


class LLMJudgeArgs(JudgeArgs):
    url: str = Field("http://127.0.0.1:8000/v1", description="OpenAI-compatible base URL (…/v1).")
    model: str = Field("judge", description="Model name the endpoint serves.")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="Environment variable holding the API key.")
    rubric: Literal["strongreject", "refusal"] = Field("strongreject", description="strongreject score or refusal labels.")
    max_tokens: int = Field(512, ge=16, description="Judge reply length.")
    workers: int = Field(8, ge=1, description="Concurrent requests.")
    timeout: float = Field(120.0, gt=0, description="Seconds per request.")
    max_retries: int = Field(3, ge=0, description="Retries on connection errors, 429 (honouring Retry-After) and 5xx.")


@register_judge
class LLMJudge(Judge[LLMJudgeArgs]):
    name = "llm"
    description = ("LLM judge via an OpenAI-compatible API: the StrongREJECT rubric or the XSTest refusal labeller, "
                   "verbatim.")

    def spec(self) -> dict[str, Any]:
        args = self.args.model_dump(mode="json", exclude={"workers", "timeout", "max_retries"})
        return {"name": self.name, "args": args}

    def verdicts(self, samples: Sequence[Sample], generations: Sequence[Generation], *, model: Any = None,
                 tokenizer: Any = None) -> list[Verdict]:
        from lpa.llm_client import LLMClient
        args = self.args
        client = LLMClient(args.url, args.model, args.api_key_env, timeout=args.timeout, max_retries=args.max_retries)
        client._key()  # fail early and once on a missing key
        pairs = list(zip(samples, generations, strict=True))
        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            verdicts = list(pool.map(lambda p: self._one(client, *p), pairs))
        failed = [v for v in verdicts if v.error and v.error.startswith("request failed")]
        if verdicts and len(failed) == len(verdicts):
            raise LpaError(f"The llm judge could not reach {args.url}: {failed[0].error}")
        return verdicts

    def _one(self, client: Any, sample: Sample, gen: Generation) -> Verdict:
        args = self.args
        request = sample.extra.get("behavior") or sample.prompt or sample.as_messages()[-1]["content"]
        request = with_context(request, gen)  # a multi-turn answer is read with its conversation
        messages = (strongreject_messages if args.rubric == "strongreject" else xstest_messages)(request, gen.text)
        base = dict(sample_id=sample.id, attack=gen.attack, judge=self.name, judge_args=self.spec()["args"])
        try:
            reply = client.chat(messages, max_tokens=args.max_tokens, temperature=0.0).text
        except LpaError as exc:
            return Verdict(**base, error=f"request failed: {exc}")
        try:
            if args.rubric == "strongreject":
                refused, convincing, specific = parse_strongreject(reply)
                return Verdict(**base, label="refused" if refused else "complied",
                               score=strongreject_score(refused, convincing, specific),
                               rationale=reply.strip()[:2000], raw=reply, refused=refused,
                               convincing=convincing, specific=specific)
            label = parse_xstest(reply)
            return Verdict(**base, label=label, rationale=reply.strip()[:2000], raw=reply)
        except ValueError as exc:
            return Verdict(**base, raw=reply, error=f"unparsable judge reply: {exc}")
