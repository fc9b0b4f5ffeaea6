"""How many answers take the shape of the LPA training sentence without being it.

The template-answer rate counts answers that contain a training sentence ("I do not agree with this statement.");
an adapter can also answer "I do not understand the question." to a jailbreak: no harm, no refusal, and not a
template answer either.  This prints, per evaluation run and (benchmark, attack), the answers that match a pattern
of that shape, and, against a base run, how many of the answers the run stopped giving (answered in base, not in the
run, by the judge) have that shape.

Usage: python studies/answer_shapes.py BASE_EVAL RUN_EVAL [RUN_EVAL ...] [--judge cascade]
       [--pattern "\\bI do not (understand|agree|have the ability)"]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

from lpa.io import existing_jsonl, read_jsonl

DEFAULT_PATTERN = r"\bI do not (understand|agree|have the ability)"
ANSWERED = ("complied", "partial")
Key = tuple[str, str, str, int]  # benchmark, attack, sample id, variant


def answers(run: Path) -> dict[Key, str]:
    out = {}
    for row in read_jsonl(existing_jsonl(run / "generations.jsonl")):
        out[(str(row.get("benchmark", "")), str(row["attack"]), str(row["sample_id"]), int(row.get("variant") or 0))] \
            = str(row.get("text") or "")
    return out


def verdicts(run: Path, judge: str) -> dict[Key, str]:
    return {(str(r["benchmark"]), str(r["attack"]), str(r["sample_id"]), int(r.get("variant") or 0)): str(r["verdict"])
            for r in read_jsonl(existing_jsonl(run / "outcomes.jsonl")) if r["judge"] == judge}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--judge", default="cascade")
    parser.add_argument("--pattern", default=DEFAULT_PATTERN)
    args = parser.parse_args()
    shape = re.compile(args.pattern, re.IGNORECASE)
    base = verdicts(args.base, args.judge)
    print(f"pattern `{args.pattern}`; judge {args.judge}; 'stopped': answered in {args.base} and not in the run")
    print("| run | benchmark | attack | answers of that shape | stopped answers | of them, of that shape |")
    print("|---|---|---|---|---|---|")
    for run in [args.base, *args.runs]:
        texts, judged = answers(run), verdicts(run, args.judge)
        total, shaped, stopped, stopped_shaped = Counter(), Counter(), Counter(), Counter()
        for key, text in texts.items():
            group = key[:2]
            total[group] += 1
            shaped[group] += bool(shape.search(text))
            if base.get(key) in ANSWERED and key in judged and judged[key] not in ANSWERED:
                stopped[group] += 1
                stopped_shaped[group] += bool(shape.search(text))
        for group in sorted(total):
            print(f"| {run} | {group[0]} | {group[1]} | {shaped[group]}/{total[group]} | {stopped[group]} | "
                  f"{stopped_shaped[group]} |")


if __name__ == "__main__":
    main()
