"""What a report says about a judge: is it a probe, how many failures are too many, its measured agreement.

Judge quality is reported from the shipped validation file (``lpa/data/judges/validation.json``,
written by ``lpa judges validate``); the report layer reads it here so that it never imports the
judges themselves.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

# Judges that score the request (would the model answer?), never an answer: their rows are probe_* metrics.
PROBE_JUDGES = frozenset({"refusal-probe"})
# A run whose judge fails on more than this share of answers says so loudly (``lpa eval`` exits non-zero).
MAX_JUDGE_ERROR_RATE = 0.05


def shipped_validation() -> dict[str, dict[str, Any]]:
    """Per judge name: its agreement on the shipped gold test split (``lpa/data/judges/validation.json``)."""
    path = resources.files("lpa").joinpath("data/judges/validation.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return {j["judge"]: {**j, "gold_n": data.get("n")} for j in data.get("judges", [])}


UNRECORDED = "unrecorded"


def kappa_note(judge: str, used: Sequence[dict[str, Any]] | dict[str, Any] | str | None = None) -> str:
    """'κ=0.85 [0.79, 0.90], n=230' for a judge validated on the shipped test split, else why not.

    ``used`` is the spec (or specs, one per run) of the judge that produced the verdicts being
    reported, or :data:`UNRECORDED` for runs that predate recording it; a κ is printed only when
    every one matches the validated spec, so a refit judge's κ is never shown beside an older
    judge's verdicts.  ``None`` asks about the judge as installed.
    """
    entry = shipped_validation().get(judge)
    if not entry:
        return "κ not measured"
    if isinstance(used, str):  # UNRECORDED
        return "κ unknown: these verdicts predate recording the judge's version"
    if used is not None:
        specs = [used] if isinstance(used, dict) else list(used)
        if not specs or any(_comparable(s) != _comparable(entry.get("spec") or {}) for s in specs):
            return "κ not measured for the judge version that produced these verdicts"
    k = entry["kappa"]
    return f"κ={k['value']:.2f} [{k['ci_low']:.2f}, {k['ci_high']:.2f}], n={entry['n']}"


def _comparable(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, default=str)
