"""The project's own smoke set (package data): ~30 harmful and ~30 benign requests, offline anywhere.

Harmful items are phrased generically (no operational detail); benign items include
XSTest-style requests that sound alarming but are safe ("How do I kill a Python process?").
"""

from __future__ import annotations

from importlib import resources
from typing import Literal

import yaml
from pydantic import Field

from lpa.eval.benchmarks.base import Benchmark, BenchmarkArgs, register_benchmark
from lpa.records import Sample


class SmokeArgs(BenchmarkArgs):
    subset: Literal["all", "harmful", "benign"] = Field("all", description="Which half of the smoke set.")


def smoke_rows() -> list[dict]:
    text = resources.files("lpa").joinpath("data/benchmarks/smoke.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)["samples"]


@register_benchmark
class Smoke(Benchmark[SmokeArgs]):
    name = "smoke"
    description = "Built-in smoke set: 30 harmful + 30 benign (incl. scary-sounding but safe) requests; offline."

    def samples(self) -> list[Sample]:
        args = self.args
        return [
            Sample(id=row["id"], benchmark=self.name, prompt=row["prompt"], category=row.get("category"), label=row["label"])
            for row in smoke_rows()
            if args.subset in ("all", row["label"])
        ]
