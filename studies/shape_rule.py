"""Which step checkpoint selection keeps when the rule also bounds answers in a training completion's shape.

The study's rule bounds template answers (a training completion in the answer) but not answers in their *shape*
("I do not understand the question." from an adapter trained on "I do not agree with this statement."), which
make about half of 1.5B LPA's in-the-wild drop.  ``SelectionRule.max_template_shape_rate`` bounds them now, and
runs record the rates in their selection curve; curves recorded before that lack them, so this counts them from
each step's selection answers (``train/selection/{harmful,borderline}/generations.jsonl`` in a run folder,
``train-selection/...`` in a packed one under ``results/``, scored against the run's own completions) and applies the cell's rule with and without the bound.  Nothing is retrained or re-evaluated: it
says which step the stricter rule would have kept.

Usage: python studies/shape_rule.py STUDY_FOLDER [--bound 0.05]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from lpa.coherence import is_template_shaped
from lpa.io import existing_jsonl, read_jsonl
from lpa.training.selection import choose
from lpa.training.selection_config import SelectionRule


def step_of(adapter: str) -> int | None:
    """``lpa@step-6`` -> 6 (the label selection gives each step's answers)."""
    head, sep, tail = adapter.rpartition("@step-")
    return int(tail) if sep and tail.isdigit() else None


def shape_rates(split: Path) -> dict[int, float]:
    """Per evaluated step, the share of the split's answers in a completion's shape (the run's completions)."""
    config = yaml.safe_load((split / "config.yaml").read_text(encoding="utf-8")) or {}
    templates = config.get("templates") or []
    shaped: Counter[int] = Counter()
    total: Counter[int] = Counter()
    for row in read_jsonl(existing_jsonl(split / "generations.jsonl")):
        step = step_of(str(row.get("adapter") or ""))
        if step is None:
            continue
        total[step] += 1
        shaped[step] += is_template_shaped(str(row.get("text") or ""), templates) if templates else False
    return {step: shaped[step] / total[step] for step in total}


def cell_layout(seed_dir: Path) -> tuple[Path, Path, Path] | None:
    """(curve, choice, answers folder) of a cell: a run folder (``train/selection.jsonl``...) or a packed one
    (``train-selection.jsonl``, ``train-selection-choice.json``, ``train-selection/``); None without a curve."""
    for curve, choice, answers in ((seed_dir / "train" / "selection.jsonl", seed_dir / "train" / "selection" /
                                    "choice.json", seed_dir / "train" / "selection"),
                                   (seed_dir / "train-selection.jsonl", seed_dir / "train-selection-choice.json",
                                    seed_dir / "train-selection")):
        if curve.is_file() and choice.is_file() and (answers / "harmful").is_dir():
            return curve, choice, answers
    return None


def curve_with_shapes(curve: Path, answers: Path) -> list[dict[str, Any]]:
    harmful, borderline = shape_rates(answers / "harmful"), shape_rates(answers / "borderline")
    rows = sorted(read_jsonl(curve), key=lambda r: int(r["step"]))
    return [{**r, "template_shape_rate_harmful": harmful.get(int(r["step"])),
             "template_shape_rate_borderline": borderline.get(int(r["step"]))} for r in rows]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", type=Path, help="an experiment folder (its cells' train/ folders hold the curves)")
    parser.add_argument("--bound", type=float, default=0.05, help="max share of shaped answers (default 0.05)")
    args = parser.parse_args()
    cells = [(d, layout) for d in sorted(args.study.glob("*/*/seed-*")) if (layout := cell_layout(d)) is not None]
    if not cells:
        raise SystemExit(f"No selection curves with their answers under {args.study}.")
    print(f"Rule of each cell, then the same rule with answers in a completion's shape <= {args.bound:.0%} on the "
          "harmful and the borderline selection prompts (counted from the step's answers).\n")
    print("| model | method | seed | selection ASR by step | shaped harmful / borderline by step | kept | "
          "kept with the shape bound |")
    print("|---|---|---|---|---|---|---|")
    for seed_dir, (curve, choice, answers) in cells:
        rows = curve_with_shapes(curve, answers)
        rule = SelectionRule.model_validate(json.loads(choice.read_text(encoding="utf-8"))["rule_settings"])
        plain = choose(rows, rule)
        bounded = choose(rows, rule.model_copy(update={"max_template_shape_rate": args.bound}))
        asr = " / ".join(f"{r['step']}: {_pct(r.get('asr'))}" for r in rows)
        shapes = " / ".join(f"{r['step']}: {_pct(r['template_shape_rate_harmful'])}, "
                            f"{_pct(r['template_shape_rate_borderline'])}" for r in rows)
        print(f"| {seed_dir.parent.parent.name} | {seed_dir.parent.name} | {seed_dir.name.removeprefix('seed-')} | "
              f"{asr} | {shapes} | {plain.step} | {bounded.step}"
              f"{'' if bounded.selective_window else ' (no window)'} |")


if __name__ == "__main__":
    main()
