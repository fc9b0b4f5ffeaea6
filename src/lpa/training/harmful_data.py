"""Harmful-request pairs for the baselines trained on harmful data (``lat-harmful``, ``refusal-sft``).

Each harmful request becomes a pair: chosen = a refusal (the file's own safe response when it
has one), rejected = a compliance opening ("Sure, here is how to ..."), which is how LAT's
published refusal training defines the targets without any harmful completion text.

Files are CSV with a ``Behavior`` (or ``instruction``/``prompt``) column and an optional
``Safe_Response`` column, or JSON/JSONL rows with ``instruction``/``prompt``.  Relative paths are
looked up in the data directory (``data_dir`` / ``$LPA_DATA_DIR``).  The default,
HarmBench's adversarial-training behaviours, is disjoint from HarmBench val/test; note that
``harmful_train.json`` contains AdvBench requests, so don't evaluate on AdvBench after training on it.
"""

from __future__ import annotations

import random
from pathlib import Path

from pydantic import Field

from lpa.errors import LpaError
from lpa.io import read_table
from lpa.training.config import TrainConfig
from lpa.training.data import PairExample, resolve_data_file

_PROMPT_KEYS = ("Behavior", "behavior", "instruction", "prompt", "goal")
_REFUSAL_KEYS = ("Safe_Response", "safe_response", "refusal")


class HarmfulDataConfig(TrainConfig):
    """Data options shared by the methods that train on harmful requests."""

    harmful: list[str] = Field(
        ["adv_training_behaviors_safe_responses.csv"],
        description="Harmful-request files (CSV/JSON/JSONL), relative to data_dir or absolute.",
    )
    max_examples: int | None = Field(None, ge=1, description="Use at most N requests (sampled with the seed).")
    refusal: str = Field("I'm sorry, but I can't help with that.", description="Chosen answer when a file has no safe response.")
    compliance: str = Field("Sure, here is how to {request}", description="Rejected answer; {request} = the request, first letter lower-cased.")
    system_prompt: str | None = Field(None, description="Optional system prompt for every example.")


def _rows(path: Path) -> list[dict[str, str]]:
    return read_table(path)


def load_harmful_requests(paths: list[str], data_dir: str | None) -> list[tuple[str, str | None]]:
    """(request, safe response or None) from every file, de-duplicated, in file order."""
    seen: set[str] = set()
    out: list[tuple[str, str | None]] = []
    for name in paths:
        path = resolve_data_file(name, data_dir, "Harmful-request file")
        for number, row in enumerate(_rows(path), start=1):
            request = next((row[k] for k in _PROMPT_KEYS if isinstance(row, dict) and row.get(k)), None)
            if request is None:
                raise LpaError(f"{path}: row {number} has none of the columns {', '.join(_PROMPT_KEYS)}.")
            refusal = next((row[k] for k in _REFUSAL_KEYS if row.get(k)), None)
            if request.strip() not in seen:
                seen.add(request.strip())
                out.append((request.strip(), refusal))
    if not out:
        raise LpaError(f"No harmful requests found in {', '.join(paths)}.")
    return out


def harmful_pairs(config: HarmfulDataConfig) -> list[PairExample]:
    requests = load_harmful_requests(config.harmful, config.data_dir)
    if config.max_examples is not None and len(requests) > config.max_examples:
        requests = random.Random(config.seed).sample(requests, config.max_examples)
    examples = []
    for request, refusal in requests:
        messages = [{"role": "user", "content": request}]
        if config.system_prompt:
            messages.insert(0, {"role": "system", "content": config.system_prompt})
        lowered = request[:1].lower() + request[1:]
        examples.append(
            PairExample(
                messages=messages,
                chosen=refusal or config.refusal,
                rejected=config.compliance.format(request=lowered.rstrip(".")),
                meta={"source": "harmful"},
            )
        )
    return examples
