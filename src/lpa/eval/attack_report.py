"""Report sections for red-teaming attacks: per-template ASR and the query cost of search attacks.

Search attacks (PAIR, TAP, Crescendo, in-the-wild's k templates) differ in what a success costs:
``queries per success`` = all target queries spent on the harmful behaviours / behaviours jailbroken
(the number an adversary pays), beside the mean spent per behaviour, from each generation's
``attack_log`` and the run's ``outcomes.jsonl``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from lpa.io import read_jsonl


def query_costs(run_dir: str | Path) -> list[dict[str, Any]]:
    """One row per attack x judge with behaviours, successes and queries (target, attacker) per success."""
    run_dir = Path(run_dir)
    spent: dict[tuple[str, str], tuple[int, int]] = {}
    for row in read_jsonl(run_dir / "generations.jsonl"):
        log = row.get("attack_log") or {}
        if "queries" in log:
            spent[(row.get("attack", ""), row["sample_id"])] = (int(log.get("queries") or 0),
                                                                int(log.get("attacker_queries") or 0))
    if not spent:
        return []
    success: dict[tuple[str, str, str], dict[str, bool]] = defaultdict(dict)
    for row in read_jsonl(run_dir / "outcomes.jsonl"):
        name = str(row["attack"]).split(":", 1)[0]
        if row.get("sample_label") != "harmful" or (name, row["sample_id"]) not in spent or row.get("verdict") is None:
            continue
        answered = row["verdict"] in ("complied", "partial")
        cell = success[(str(row["attack"]), row["judge"], name)]
        cell[row["sample_id"]] = cell.get(row["sample_id"], False) or answered
    rows = []
    for (attack, judge, name), outcomes in sorted(success.items()):
        # in-the-wild logs the same k queries on each of its k rows: count a behaviour once
        target = sum(spent[(name, sid)][0] for sid in outcomes)
        attacker = sum(spent[(name, sid)][1] for sid in outcomes)
        wins = sum(outcomes.values())
        rows.append({"attack": attack, "judge": judge, "behaviours": len(outcomes), "successes": wins,
                     "target_queries_mean": target / len(outcomes),
                     "target_queries_per_success": target / wins if wins else None,
                     "attacker_queries_per_success": attacker / wins if wins else None})
    return rows


def query_section(run_dir: str | Path) -> str:
    from lpa.report.tables import fmt, markdown_table

    rows = query_costs(run_dir)
    if not rows:
        return ""
    body = [[r["attack"], r["judge"], str(r["behaviours"]), str(r["successes"]), fmt(r["target_queries_mean"], 1),
             fmt(r["target_queries_per_success"], 1), fmt(r["attacker_queries_per_success"], 1)] for r in rows]
    header = ["attack", "judge", "harmful behaviours", "jailbroken", "target queries / behaviour",
              "target queries / success", "attacker queries / success"]
    return "\n".join(["", "## Query cost of search attacks", "", markdown_table(header, body), ""])


def unvalidated_families(run_dir: str | Path, gold_path: str | Path | None = None) -> list[str]:
    """Attacks in this run with no labelled answer in the gold set: no judge's kappa is known for them."""
    import json

    from lpa.eval.judges.support.gold import shipped_gold_path

    results = Path(run_dir) / "results.json"
    if not results.is_file():
        return []
    attacks = {a["name"] for a in json.loads(results.read_text(encoding="utf-8")).get("meta", {}).get("attacks", [])}
    gold = Path(gold_path) if gold_path is not None else shipped_gold_path()
    labelled = {r.get("attack") for r in read_jsonl(gold)} if gold.is_file() else set()
    return sorted(a for a in attacks if a not in labelled)


def judge_warning(run_dir: str | Path) -> str:
    """A warning beside red-teaming numbers whose judges were never validated on that attack's answers."""
    families = unvalidated_families(run_dir)
    if not families:
        return ""
    return ("\n## WARNING: judges not validated on these attacks\n\n"
            f"No labelled answer of {', '.join(f'`{f}`' for f in families)} is in the gold set, so no judge's "
            "kappa is known for them. In-character (role-play) and multi-turn answers are where judges disagree "
            "most: read these ASRs beside a second judge and the answers (`--examples`), and label some into the "
            "gold set (docs/judging.md) before relying on them.\n")


def attack_sections(run_dir: str | Path) -> str:
    """Everything this module adds to report.md ('' for runs without such attacks)."""
    from lpa.eval.per_template import template_section

    return judge_warning(run_dir) + template_section(run_dir) + query_section(run_dir)
