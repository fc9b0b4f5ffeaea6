"""A seeded, grouped split of any benchmark into a *selection* part and a *test* part.

Checkpoint selection (:mod:`lpa.training.selection`) must never see the behaviours a study reports
on, or the chosen step is tuned on the test set.  ``heldout`` wraps another benchmark and keeps one
part of its behaviours: samples are grouped by behaviour (the same request under different ids or
contexts lands on one side), groups are shuffled with ``seed``, and the first ``selection`` groups
form the selection part; the rest is the test part.  Both parts of one split are disjoint by
construction, and the part's name is in every sample's benchmark name (``advbench-selection``), so
the results say which split chose a step and which measured it.
"""

from __future__ import annotations

import random
import re
from typing import Any, Literal

from pydantic import Field

from lpa.errors import LpaError
from lpa.eval.benchmarks.base import BENCHMARKS, Benchmark, BenchmarkArgs, register_benchmark
from lpa.records import Sample

Part = Literal["selection", "test"]


class HeldoutArgs(BenchmarkArgs):
    of: str | dict[str, Any] = Field(description="The benchmark to split (name, 'name:k=v' or {name, args}).")
    part: Part = Field(description="Which part to keep: selection (chooses steps) or test (measures).")
    selection: int | float = Field(
        0.25, gt=0, description="Selection part size: a number of behaviour groups, or a fraction (< 1) of them.")
    seed: int = Field(0, description="Seed of the split (the same seed gives the same two parts everywhere).")
    skip: int = Field(0, ge=0, description="Leave the wrapped benchmark's first N samples out of both parts (e.g. "
                      "the prompts a study tests on as `limit: N` of the plain benchmark).")
    stratify: bool = Field(False, description="Split within each category (XSTest's prompt types, HarmBench's "
                           "semantic categories) so both parts hold every category in proportion; an over-refusal "
                           "bound chosen on some prompt types need not hold on others.")


def behaviour_group(sample: Sample) -> str:
    """The behaviour a sample asks for: variants of one request (contexts, ids) share it."""
    text = str(sample.extra.get("behavior") or sample.prompt)
    return re.sub(r"\W+", " ", text.lower()).strip()


def split_groups(samples: list[Sample], selection: int | float, seed: int,
                 stratify: bool = False) -> tuple[set[str], set[str]]:
    """(selection groups, test groups): a seeded shuffle of the sorted behaviour groups, within each category
    when ``stratify`` (each category's share of the selection part follows its share of the groups)."""
    groups = sorted({behaviour_group(s) for s in samples})
    n = int(selection) if selection >= 1 else round(selection * len(groups))
    if not 0 < n < len(groups):
        raise LpaError(f"heldout: a selection part of {selection} leaves no {'selection' if n <= 0 else 'test'} "
                       f"behaviours out of {len(groups)}; give a count between 1 and {len(groups) - 1} or a fraction.")
    if not stratify:
        random.Random(seed).shuffle(groups)
        return set(groups[:n]), set(groups[n:])
    category_of: dict[str, str] = {}
    for sample in samples:  # a group's category is its first sample's (variants of one request share it)
        category_of.setdefault(behaviour_group(sample), str(sample.category or ""))
    strata: dict[str, list[str]] = {}
    for group in groups:
        strata.setdefault(category_of[group], []).append(group)
    chosen: set[str] = set()
    quotas = _quotas([len(m) for m in strata.values()], n)
    for (category, members), quota in zip(strata.items(), quotas, strict=True):
        random.Random(f"{seed}/{category}").shuffle(members)
        chosen |= set(members[:quota])
    return chosen, set(groups) - chosen


def _quotas(sizes: list[int], n: int) -> list[int]:
    """``n`` split over strata in proportion to their sizes (largest remainder, ties to the earlier stratum)."""
    total = sum(sizes)
    exact = [n * size / total for size in sizes]
    quotas = [int(x) for x in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - quotas[i]), i))
    for i in by_remainder[: n - sum(quotas)]:
        quotas[i] += 1
    return quotas


@register_benchmark
class Heldout(Benchmark[HeldoutArgs]):
    name = "heldout"
    description = "One part (selection | test) of a seeded split of another benchmark by behaviour (disjoint parts)."

    def inner(self) -> Benchmark:
        from lpa.plugins import create

        args = self.args
        spec = args.of
        given = spec.get("args", {}) if isinstance(spec, dict) else {}
        extra = {"data_dir": args.data_dir} if args.data_dir and "data_dir" not in given else {}
        if (spec["name"] if isinstance(spec, dict) else spec.partition(":")[0]) == self.name:
            raise LpaError("heldout cannot split a heldout benchmark; split the original one.")
        return create(BENCHMARKS, spec, **extra)

    def samples(self) -> list[Sample]:
        args = self.args
        inner = self.inner()
        everything = inner.load()[args.skip:]
        self.data_files.extend(inner.data_files)
        chosen, rest = split_groups(everything, args.selection, args.seed, args.stratify)
        keep = chosen if args.part == "selection" else rest
        return [s.model_copy(update={"benchmark": f"{s.benchmark}-{args.part}"})
                for s in everything if behaviour_group(s) in keep]
