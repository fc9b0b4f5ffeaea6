"""``lpa compare A B --answers``: the discordant pairs side by side, which is what a researcher reads first.

A pair is discordant when one run answered a harmful request the other refused (or refused a
benign prompt the other answered), by the same judge, on the same benchmark and attack.  The
per-item outcomes are those of the paired tests (:func:`lpa.eval.stats.load_outcomes`); the
answers come from each run's ``generations.jsonl``, restricted to the model the run evaluated.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MAX_CHARS = 2000  # per answer cell; the full text stays in generations.jsonl and the inspect logs


def discordant_pairs(run_a: str | Path, run_b: str | Path) -> list[dict[str, Any]]:
    """Rows ``{benchmark, attack, judge, sample_id, label, a, b, request, answer_a, answer_b}`` (a/b: 1 = answered
    a harmful request or refused a benign one), for every item where the two runs differ."""
    from lpa.eval.stats import load_outcomes

    outcomes_a, outcomes_b = load_outcomes(run_a), load_outcomes(run_b)
    answers_a, answers_b = _answers(run_a), _answers(run_b)
    rows = []
    for key in sorted(outcomes_a.keys() & outcomes_b.keys()):
        if outcomes_a[key] == outcomes_b[key]:
            continue
        bench, attack, judge, labelled = key
        label, sample_id = labelled.split("\t", 1)
        where = (bench, attack.split(":", 1)[0], sample_id)
        a, b = answers_a.get(where, {}), answers_b.get(where, {})
        rows.append({"benchmark": bench, "attack": attack, "judge": judge, "sample_id": sample_id, "label": label,
                     "a": outcomes_a[key], "b": outcomes_b[key], "request": a.get("request") or b.get("request", ""),
                     "answer_a": a.get("text", "(not found)"), "answer_b": b.get("text", "(not found)")})
    return rows


def _answers(run: str | Path) -> dict[tuple[str, str, str], dict[str, str]]:
    """(benchmark, attack name, sample id) -> the request and the first variant's answer of the run's model."""
    import json

    from lpa.io import read_jsonl

    run = Path(run)
    meta: dict[str, Any] = {}
    if (run / "results.json").is_file():
        meta = json.loads((run / "results.json").read_text(encoding="utf-8")).get("meta", {})
    found: dict[tuple[str, str, str], tuple[int, dict[str, str]]] = {}
    for row in read_jsonl(run / "generations.jsonl"):
        if meta and (row.get("model"), row.get("adapter")) != (meta.get("model"), meta.get("adapter")):
            continue  # a folder may hold the answers of several models
        key = (str(row.get("benchmark")), str(row.get("attack", "direct")), str(row.get("sample_id")))
        variant = int(row.get("variant") or 0)
        if key not in found or variant < found[key][0]:
            messages = row.get("messages") or []
            request = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
            found[key] = (variant, {"request": request, "text": (row.get("prefill") or "") + (row.get("text") or "")})
    return {k: v for k, (_, v) in found.items()}


def answers_markdown(run_a: str | Path, run_b: str | Path, rows: Sequence[dict[str, Any]] | None = None) -> str:
    """Markdown: per benchmark x attack x judge, a table of the discordant items with both answers."""
    from lpa.report.tables import distinguishing_paths

    rows = discordant_pairs(run_a, run_b) if rows is None else rows
    name_a, name_b = distinguishing_paths([run_a, run_b])
    lines = [f"# Discordant answers: A = `{name_a}`, B = `{name_b}`", "",
             "Items where one run answered a harmful request (or refused a benign one) and the other did not, "
             "by the same judge. Answers are cut at "
             f"{MAX_CHARS} characters; the full text is in each run's generations.jsonl.", ""]
    if not rows:
        return "\n".join([*lines, "No discordant items: the two runs agree on every item both judged.", ""])
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["benchmark"], row["attack"], row["judge"])].append(row)
    for (bench, attack, judge), items in groups.items():
        lines += [f"## {bench} / {attack} / judge {judge}: {len(items)} discordant", "",
                  "| sample | request | A | B |", "| --- | --- | --- | --- |"]
        for r in items:
            lines.append(f"| {_cell(r['sample_id'])} ({r['label']}) | {_cell(r['request'])} | "
                         f"**{_verdict(r['label'], r['a'])}**<br>{_cell(r['answer_a'])} | "
                         f"**{_verdict(r['label'], r['b'])}**<br>{_cell(r['answer_b'])} |")
        lines.append("")
    return "\n".join(lines)


def _verdict(label: str, outcome: float) -> str:
    if label == "harmful":
        return "answered" if outcome else "refused"
    return "refused" if outcome else "answered"


def _cell(text: Any) -> str:
    text = str(text)
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS] + " …"
    return text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


__all__ = ["answers_markdown", "discordant_pairs"]
