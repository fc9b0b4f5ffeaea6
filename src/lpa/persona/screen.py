"""Data screening by projection difference (Chen et al. 2025, section on training-data screening).

For each (prompt, response) sample: ΔP = (ā(prompt, dataset response) − ā(prompt, own response)) · v̂,
with ā the response-token-averaged activation at the vector's layer and "own response" the
model's answer to the same prompt.  High ΔP means the sample would pull the model towards the
trait.  Own responses are generated in batches and cached as JSONL keyed by prompt hash,
model identity (spec + adapter + adapter hash) and generation settings, so reruns (and other traits) reuse them.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path
from typing import Any

from lpa.errors import LpaError
from lpa.generation import GenerationSettings, generate
from lpa.io import open_cache, read_table
from lpa.models.identity import ModelIdentity, identity_of
from lpa.persona.activations import response_means
from lpa.persona.monitor import projections
from lpa.persona.vector import PersonaVector


def read_sft_rows(path: str | Path) -> list[dict[str, Any]]:
    """JSONL rows with ``prompt`` or ``messages`` (ending in a user turn) and ``response``; or ``messages`` ending in the assistant turn."""
    rows = []
    for number, row in enumerate(read_table(path), start=1):
        messages = row.get("messages")
        response = row.get("response") or row.get("completion")
        if messages and response is None and messages[-1].get("role") == "assistant":
            response, messages = messages[-1]["content"], messages[:-1]
        if (row.get("prompt") is None and not messages) or response is None:
            raise LpaError(f"{path}: row {number} needs 'prompt' (or 'messages') and 'response'.")
        rows.append({"id": str(row.get("id", number - 1)), "conversation": messages or row["prompt"], "response": response,
                     "planted": bool(row["planted"]) if "planted" in row else None})
    if not rows:
        raise LpaError(f"{path}: no samples found.")
    return rows


def _prompt_key(conversation: Any, model: dict[str, Any], settings: GenerationSettings) -> str:
    blob = json.dumps([conversation, model, settings.key()], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def own_responses(
    model: Any, tokenizer: Any, conversations: list[Any], settings: GenerationSettings, cache: str | Path | None,
    *, identity: ModelIdentity | None = None,
) -> list[str]:
    """The model's own answers, generated once per (prompt, model identity, settings) and cached."""
    spec = (identity or identity_of(model)).key()
    keys = [_prompt_key(c, spec, settings) for c in conversations]
    with open_cache(cache, "persona.responses") as store:
        known = {k: r["text"] for k, r in store.rows.items()} if store else {}
        todo = sorted({k: i for i, k in enumerate(keys) if k not in known}.values())
        if todo:

            def save(indices: list[int], completions: list[Any]) -> None:
                rows = [{"key": keys[todo[i]], "text": c.text, "model": spec, "settings": settings.key()}
                        for i, c in zip(indices, completions, strict=True)]
                known.update({r["key"]: r["text"] for r in rows})
                if store:
                    store.add(rows)

            generate(model, tokenizer, [conversations[i] for i in todo], settings, on_batch=save)
    return [known[k] for k in keys]


def screen(
    model: Any, tokenizer: Any, vector: PersonaVector, rows: list[dict[str, Any]], settings: GenerationSettings,
    *, layer: int | None = None, cache: str | Path | None = None, flag_z: float = 2.0, batch_size: int = 8,
) -> dict[str, Any]:
    """Rank samples by ΔP (largest first); flag samples more than ``flag_z`` std above the mean."""
    key = vector.resolve(layer)
    convs = [r["conversation"] for r in rows]
    own = own_responses(model, tokenizer, convs, settings, cache)
    data_acts = response_means(model, tokenizer, convs, [r["response"] for r in rows], layers=[key], batch_size=batch_size)[:, 0]
    own_acts = response_means(model, tokenizer, convs, own, layers=[key], batch_size=batch_size)[:, 0]
    delta = projections(data_acts - own_acts, vector.at(key)).tolist()
    mean = statistics.fmean(delta)
    std = statistics.pstdev(delta) if len(delta) > 1 else 0.0
    ranked = sorted(range(len(rows)), key=lambda i: -delta[i])
    samples = [
        {"rank": rank + 1, "id": rows[i]["id"], "delta_p": delta[i], "z": (delta[i] - mean) / std if std > 0 else 0.0,
         "flagged": std > 0 and (delta[i] - mean) / std > flag_z, "planted": rows[i].get("planted"), "response": rows[i]["response"][:200], "own_response": own[i][:200]}
        for rank, i in enumerate(ranked)
    ]
    report = {"trait": vector.trait, "layer": key, "dataset_score": mean, "std": std, "n": len(rows),
              "n_flagged": sum(s["flagged"] for s in samples), "flag_z": flag_z, "samples": samples}
    labels = [rows[i].get("planted") for i in ranked]
    if all(label is not None for label in labels) and any(labels):
        report.update(planted_precision([bool(label) for label in labels]))
    return report


def planted_precision(ranked_labels: list[bool]) -> dict[str, float]:
    """precision@k (k = number of planted samples) and the chance level, for a ranking with known plants."""
    k = sum(ranked_labels)
    hits = sum(ranked_labels[:k])
    return {"n_planted": k, "precision_at_k": hits / k, "chance_precision": k / len(ranked_labels),
            "planted_mean_rank": sum(i + 1 for i, label in enumerate(ranked_labels) if label) / k}


__all__ = ["own_responses", "planted_precision", "read_sft_rows", "screen"]
