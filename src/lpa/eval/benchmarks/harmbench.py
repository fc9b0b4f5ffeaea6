"""HarmBench text behaviours (val/test) and AdvBench (HarmBench's re-packaging or the original CSV).

Contextual behaviours are shown HarmBench's way: the context string, a ``---`` separator, then
the request.  Copyright behaviours are judged upstream by hashing, so they are off by default.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from lpa.eval.benchmarks.base import Benchmark, BenchmarkArgs, Source, column, register_benchmark
from lpa.io import read_table
from lpa.records import Sample

_HB = "https://raw.githubusercontent.com/centerforaisafety/HarmBench/main/data/behavior_datasets"
FunctionalCategory = Literal["standard", "contextual", "copyright"]


class HarmBenchArgs(BenchmarkArgs):
    split: Literal["val", "test"] = Field("val", description="HarmBench split.")
    categories: list[FunctionalCategory] = Field(
        default_factory=lambda: list[FunctionalCategory](["standard"]),
        description="Functional categories to keep: standard, contextual, copyright (CLI: standard+contextual).",
    )

    @field_validator("categories", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return [v.strip() for v in value.replace("|", "+").split("+") if v.strip()] if isinstance(value, str) else value


def contextual_prompt(behavior: str, context: str | None) -> str:
    return f"{context}\n\n---\n\n{behavior}" if context else behavior


@register_benchmark
class HarmBench(Benchmark[HarmBenchArgs]):
    name = "harmbench"
    description = "HarmBench text behaviours (val 80 / test 320; standard, contextual, copyright)."

    def samples(self) -> list[Sample]:
        args = self.args
        filename = f"harmbench_behaviors_text_{args.split}.csv"
        path = self.fetch(Source(filename, f"{_HB}/{filename}"))
        out = []
        for row in read_table(path):
            category = (row.get("FunctionalCategory") or "standard").strip()
            if category not in args.categories:
                continue
            behavior = column(row, ["Behavior"], path)
            context = (row.get("ContextString") or "").strip() or None
            out.append(
                Sample(
                    id=column(row, ["BehaviorID"], path),
                    benchmark=self.name,
                    prompt=contextual_prompt(behavior, context),
                    category=row.get("SemanticCategory") or None,
                    label="harmful",
                    extra={"functional_category": category, "behavior": behavior, "context": context},
                )
            )
        return out


@register_benchmark
class AdvBench(Benchmark[BenchmarkArgs]):
    name = "advbench"
    description = "AdvBench harmful behaviours (520)."
    sources = (
        Source(
            "advbench_behaviors.csv",
            f"{_HB}/extra_behavior_datasets/advbench_behaviors.csv",
            aliases=("harmful_behaviors.csv",),  # the original llm-attacks file (goal, target)
        ),
    )

    def samples(self) -> list[Sample]:
        path = self.fetch(self.sources[0])
        out = []
        for number, row in enumerate(read_table(path), start=1):
            prompt = column(row, ["Behavior", "goal"], path)
            out.append(
                Sample(
                    id=row.get("BehaviorID") or f"advbench_{number}",
                    benchmark=self.name,
                    prompt=prompt,
                    label="harmful",
                    extra={"target": row["target"]} if row.get("target") else {},
                )
            )
        return out
