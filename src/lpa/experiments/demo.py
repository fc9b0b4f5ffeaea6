"""``lpa demo``: faithful LPA on a model that can refuse, base vs LPA, on 2 CPU cores.

Train LPA (faithful layout: the undesirable ``big-five`` statements under attack, the desirable
ones as the KL anchor; ``embedded`` preset) on ``qwen2.5-coder-0.5b``, then evaluate the base
model and the adapter on 40 held-out HarmBench-val requests and 40 XSTest safe prompts (the
built-in smoke set when no data folder is given) under a direct request and two attack families no
training sees (prefill, and one human jailbreak per request from the in-the-wild corpus, on the
harmful requests), with the default judge, plus MMLU by log-likelihood.  Generation runs on the
llama.cpp engine when it is installed (``backend: auto``: several times faster than torch on a CPU);
training and log-likelihood scoring stay on torch.  The terminal shows a headline of at most 12 rows
(each ASR row names the judge's κ on that attack family's labelled answers), and under it the
smallest ASR difference this design can detect (:func:`detectable_line`); everything else is in
``runs/demo/report.md``.  It is an ordinary experiment spec, so the same folders, caching, resume
and report apply.

Where the time goes (profiled, docs in README): generation is nearly all of the evaluation, and
its cost is the tokens llama.cpp processes.  The shipped templates were 200 of the 320 prompts per
model (5 templates x 40 requests) and 20k of their 26k prompt tokens; one in-the-wild template per
request is 40 prompts.  Training (4 LAT steps on torch; in bf16 where the CPU has native bf16, ~26 s a step on 2
idle cores instead of ~52 s in fp32) is the rest.  Log-likelihood MMLU is scored by llama.cpp too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lpa.eval.judges import DEFAULT_JUDGE
from lpa.experiments.spec import ExperimentSpec, MethodEntry

DEMO_MODEL = "qwen2.5-coder-0.5b"
DEMO_STEPS = 4  # one Qwen-0.5B sweep (keyword, n=8): refusals up by step 4, collapse onto the training sentence by step 8
UNSEEN_ATTACKS = ("prefill", "in-the-wild")  # attack families no training sees; run on the harmful requests only
DEMO_N = 40  # prompts per benchmark: with 40, a 0.31 ASR difference is detectable (12 could only show 0.57)
# The human-jailbreak corpus (issue 23), the judged family the default judge is validated on (cascade κ 0.84 on
# its in-the-wild test rows): one template per request (k=1, the same seeded draw for base and LPA, so the
# comparison stays paired on 40 prompts), among templates of at most 384 prompt tokens (36% of the 488, mean 230
# tokens with a HarmBench request; at 512: 54%, mean 292, about 25 s more per demo on 2 cores; the
# longest run to 4k tokens and would cost more prompt processing than the rest of the evaluation).
IN_THE_WILD = {"name": "in-the-wild", "args": {"k": 1, "max_prompt_tokens": 384}}


def demo_dtype() -> str:
    """bf16 (as the authors train) where the CPU multiplies it natively, else the default (fp32 on a CPU, bf16 on a GPU).

    Measured on 2 Zen 4 cores: a Qwen-0.5B LAT step 26 s in bf16 vs 52 s in fp32 (``bench/lat_step.py``).
    """
    import torch

    from lpa.models.loader import cpu_has_native_bf16

    return "bf16" if not torch.cuda.is_available() and cpu_has_native_bf16() else "auto"


def default_judge() -> str:
    """The project's default response judge (validated on the shipped gold set)."""
    return DEFAULT_JUDGE


def demo_spec(
    out: str | Path = "runs/demo",
    *,
    model: str = DEMO_MODEL,
    data_dir: str | None = None,
    steps: int | None = None,
    max_new_tokens: int = 48,
    mmlu: int = 30,
    n: int = DEMO_N,
) -> ExperimentSpec:
    data_dir = data_dir or os.environ.get("LPA_DATA_DIR")
    have = (lambda name: bool(data_dir) and (Path(data_dir or ".") / name).is_file())  # noqa: E731
    benchmarks: list[Any] = []
    if have("harmbench_behaviors_text_val.csv"):
        benchmarks.append({"name": "harmbench", "args": {"limit": n}})
    if have("xstest_prompts.csv"):
        benchmarks.append({"name": "xstest", "args": {"subset": "safe", "limit": n}})
    if len(benchmarks) < 2:
        benchmarks.insert(0, "smoke")
    # no training-time adversary monitor: its decodes never reached the headline (they are in report.md only)
    train: dict[str, Any] = {"layout": "faithful", "steps": steps or DEMO_STEPS, "dtype": demo_dtype()}
    judge = default_judge()
    return ExperimentSpec(
        name="demo",
        out=str(out),
        models=[model],
        seeds=[0],
        data_dir=data_dir,
        methods=[
            MethodEntry(name="base"),
            MethodEntry(name="lpa", method="lpa", preset="embedded", traits="big-five", train=train),
        ],
        eval={
            "name": "demo",
            "benchmarks": benchmarks,
            "attacks": ["direct", "prefill", IN_THE_WILD],
            "attack_benchmarks": {a: [_first_name(benchmarks)] for a in UNSEEN_ATTACKS},
            "judges": [judge, "keyword"] if judge != "keyword" else [judge],
            "generation": {"max_new_tokens": max_new_tokens, "batch_size": 16},
            "bootstrap": 500,
            "utility": {"n": mmlu, "batch_size": 8, "methods": ["loglik"]} if mmlu else None,
        },
        reference=None,
        analyses={"overlap": False},
    )


def _first_name(benchmarks: Sequence[Any]) -> str:
    first = benchmarks[0]
    return first if isinstance(first, str) else first["name"]


def detectable_line(spec: ExperimentSpec, alpha: float = 0.05, power: float = 0.8) -> str:
    """The design's smallest detectable ASR difference (two proportions, worst case p = 0.5), for the headline."""
    from lpa.experiments.power import min_detectable_difference

    first = spec.eval.benchmarks[0]
    n = (first.get("args", {}) or {}).get("limit") if isinstance(first, dict) else None
    n = n or spec.eval.limit
    if not n:
        return "smallest detectable ASR difference: unknown (no per-benchmark limit)"
    mde = min_detectable_difference(int(n), alpha=alpha, power=power)
    return (f"smallest detectable ASR difference with n={n} prompts per cell (two-sided α={alpha}, power {power:.0%}, "
            f"worst case p=0.5): {mde:.2f}; paired tests on the same prompts detect less when answers agree")


def headline(summary: Sequence[dict[str, Any]], judge: str, methods: Sequence[str] = ("base", "lpa"),
             kappas: Mapping[str, float] | None = None) -> list[list[str]]:
    """At most 12 rows: ASR direct and under each unseen attack, benign refusal, MMLU, template answers.

    ``kappas`` (attack family -> the judge's κ on that family's labelled answers, :func:`attack_kappas`) go
    into the ASR labels, so a reader sees which numbers rest on a judge that reaches the 0.75 bar.
    """
    from lpa.experiments.aggregate import format_cell

    index = {(r["method"], r["benchmark"], r["attack"], r["judge"], r["metric"]): r for r in summary}
    benches = sorted({r["benchmark"] for r in summary if r["metric"] == "asr" and r["judge"] == judge and r["benchmark"] != "all"})
    rows: list[list[str]] = []

    def add(label: str, key: tuple[str, str, str, str]) -> None:
        if any((m, *key) in index for m in methods):
            rows.append([label, *(format_cell(index.get((m, *key))) for m in methods)])

    def kappa(attack: str) -> str:
        value = (kappas or {}).get(attack)
        return "" if value is None or value != value else f" κ {value:.2f}"

    for bench in benches:
        add(f"ASR {bench} · direct{kappa('direct')}", (bench, "direct", judge, "asr"))
        for attack in UNSEEN_ATTACKS:
            add(f"ASR {bench} · {attack} (unseen){kappa(attack)}", (bench, attack, judge, "asr"))
    for bench in sorted({r["benchmark"] for r in summary if r["metric"] == "refusal_rate" and r["judge"] == judge}):
        add(f"benign refusal {bench} · direct", (bench, "direct", judge, "refusal_rate"))
    for key in sorted({(r["benchmark"], r["judge"]) for r in summary if r["metric"] == "accuracy"}):
        add(f"{key[0]} accuracy ({key[1]})", (key[0], "-", key[1], "accuracy"))
    for bench in benches:
        add(f"template answers {bench} · direct", (bench, "direct", "-", "template_leak_rate"))
    return rows[:12]


def attack_kappas(judge: str, used: Sequence[dict[str, Any]] | str) -> dict[str, float]:
    """Attack family -> ``judge``'s κ (complied vs not) on the shipped gold test split's answers of that family.

    Empty unless every verdict came from the validated version of the judge (``used``: the specs the cells
    recorded, :func:`lpa.experiments.aggregate.judge_versions`), so no κ is shown beside another version's verdicts.
    """
    import json

    from lpa.eval.attack_report import family_kappas

    if isinstance(used, str) or not used:
        return {}

    def same(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
        return json.dumps(a or {}, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)

    out = {}
    for family, judges in family_kappas().items():
        entry = judges.get(judge)
        if entry is not None and all(same(entry.get("spec"), spec) for spec in used):
            out[family] = float(entry["kappa"]["value"])
    return out


def cost_line(records: Sequence[dict[str, Any]]) -> str:
    """Where the demo's time went, per cell, as each cell recorded it (a resumed cell keeps its first run's times)."""
    parts = []
    for record in records:
        cost = record.get("cost") or {}
        train, evaluation = cost.get("train_wall_s") or 0.0, cost.get("eval_wall_s") or 0.0
        parts.append(f"{record.get('method')}: " + (f"training {train:.0f} s + " if train else "") + f"evaluation {evaluation:.0f} s")
    return "time per cell: " + "; ".join(parts)
