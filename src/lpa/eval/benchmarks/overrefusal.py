"""Over-refusal and harmless sets: XSTest, OR-Bench, Alpaca-style harmless instructions."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lpa.eval.benchmarks.base import Benchmark, BenchmarkArgs, Source, column, register_benchmark
from lpa.io import read_table
from lpa.records import Sample

_ORB = "https://huggingface.co/datasets/bench-llm/or-bench/resolve/main"


class XSTestArgs(BenchmarkArgs):
    subset: Literal["all", "safe", "unsafe"] = Field(
        "all", description="safe (250 scary-sounding but safe), unsafe (200 contrast prompts) or all."
    )


@register_benchmark
class XSTest(Benchmark[XSTestArgs]):
    name = "xstest"
    description = "XSTest: 250 safe prompts that look unsafe + 200 unsafe contrasts (over-refusal)."
    sources = (
        Source("xstest_prompts.csv", "https://raw.githubusercontent.com/paul-rottger/exaggerated-safety/main/xstest_prompts.csv"),
    )

    def samples(self) -> list[Sample]:
        args = self.args
        path = self.fetch(self.sources[0])
        out = []
        for row in read_table(path):
            label = (row.get("label") or "").strip()
            if args.subset != "all" and label != args.subset:
                continue
            out.append(
                Sample(
                    id=f"xstest_{row.get('id')}",
                    benchmark=self.name,
                    prompt=column(row, ["prompt"], path),
                    category=row.get("type") or None,
                    label="benign" if label == "safe" else "harmful",
                )
            )
        return out


class ORBenchArgs(BenchmarkArgs):
    subset: Literal["80k", "hard-1k", "toxic"] = Field(
        "hard-1k", description="80k / hard-1k (seemingly toxic but benign) or toxic (truly harmful)."
    )


@register_benchmark
class ORBench(Benchmark[ORBenchArgs]):
    name = "orbench"
    description = "OR-Bench over-refusal prompts (80k, hard-1k) and toxic controls."

    def samples(self) -> list[Sample]:
        args = self.args
        filename = f"or-bench-{args.subset}.csv"
        path = self.fetch(Source(filename, f"{_ORB}/{filename}"))
        label = "harmful" if args.subset == "toxic" else "benign"
        return [
            Sample(
                id=f"orbench_{args.subset}_{i}", benchmark=self.name, prompt=column(row, ["prompt"], path),
                category=row.get("category") or None, label=label,
            )
            for i, row in enumerate(read_table(path))
        ]


class AlpacaArgs(BenchmarkArgs):
    split: Literal["val", "train", "full"] = Field(
        "val", description="refusal-direction harmless val/train split, or the full Alpaca data."
    )


@register_benchmark
class Alpaca(Benchmark[AlpacaArgs]):
    name = "alpaca"
    description = "Alpaca harmless instructions (refusal-direction splits or full alpaca_data.json)."

    def samples(self) -> list[Sample]:
        args = self.args
        if args.split == "full":
            source = Source("alpaca_data.json", "https://raw.githubusercontent.com/tatsu-lab/stanford_alpaca/main/alpaca_data.json")
        else:
            filename = f"harmless_{args.split}.json"
            source = Source(filename, f"https://raw.githubusercontent.com/andyrdt/refusal_direction/main/dataset/splits/{filename}")
        path = self.fetch(source)
        out = []
        for i, row in enumerate(read_table(path)):
            instruction = column(row, ["instruction"], path)
            extra_input = (row.get("input") or "").strip()
            prompt = f"{instruction}\n\n{extra_input}" if extra_input else instruction
            out.append(Sample(id=f"alpaca_{args.split}_{i}", benchmark=self.name, prompt=prompt, label="benign"))
        return out
