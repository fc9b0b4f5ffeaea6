"""Persona-vector extraction (Chen et al. 2025) and layer selection by a steering sweep.

Stages, each saved in the output folder so a rerun resumes: ``answers.jsonl`` (samples under
the expressing and suppressing system prompts), ``judged.jsonl`` (trait scores), the vector
file ``<trait>.safetensors`` and ``sweep.jsonl`` / ``sweep.json`` (trait score per layer x coefficient).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field

from lpa import hooks
from lpa.coherence import coherence_stats
from lpa.generation import GenerationSettings, generate, to_messages
from lpa.io import JsonlCache, atomic_write_json, open_cache
from lpa.models.identity import ModelIdentity, identity_of
from lpa.persona.activations import response_means
from lpa.persona.judges import TraitJudge, coherence_scores, judge_key
from lpa.persona.steer import steer
from lpa.persona.trait_definitions import TraitDefinition
from lpa.persona.vector import PersonaVector


class ExtractConfig(BaseModel):
    """Settings of ``lpa persona extract``."""

    n_pairs: int = Field(5, ge=1, description="Instruction pairs to use (from the trait file, in order).")
    n_questions: int = Field(20, ge=1, description="Extraction questions to use.")
    samples: int = Field(3, ge=1, description="Sampled answers per question and system prompt.")
    max_new_tokens: int = Field(64, ge=1, description="Answer length in tokens.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature for answers.")
    threshold: float = Field(50.0, description="Keep a pair if expressing >= threshold and suppressing < threshold.")
    batch_size: int = Field(16, ge=1, description="Prompts per generation / forward batch.")
    seed: int = Field(0, description="Sampling seed.")


class SweepConfig(BaseModel):
    """Settings of the layer-selection steering sweep."""

    layers: list[int] | None = Field(None, description="Layers to sweep (default: 5 evenly spaced in the middle 20-80%).")
    coefs: list[float] = Field([0.0, 1.0, 2.0], description="Steering coefficients (0 = unsteered baseline).")
    n_questions: int = Field(10, ge=1, description="Evaluation questions used in the sweep.")
    max_new_tokens: int = Field(64, ge=1, description="Answer length in tokens.")
    batch_size: int = Field(16, ge=1, description="Prompts per generation batch.")
    coherence: bool = Field(True, description="Also judge coherence 0-100 (judges that score free prompts).")
    min_coherence: float = Field(50.0, description="Best cell = highest trait score among cells at least this coherent.")


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def sample_answers(
    model: Any, tokenizer: Any, trait: TraitDefinition, config: ExtractConfig, out: Path | None = None,
    *, identity: ModelIdentity | None = None,
) -> list[dict[str, Any]]:
    """Answers for every (pair, polarity, question, sample); cached per answer in ``out/answers.jsonl``.

    The cache key holds the model's identity (default :func:`identity_of`), so the answers of the
    base model are never reused for an adapter, nor an adapter's after it is retrained in place.

    All missing answers are generated in one batched call (system prompts travel inside the
    conversations), and each batch is appended as it finishes, so a rerun resumes mid-way.
    """
    identity = identity or identity_of(model)
    questions = trait.extraction_questions[: config.n_questions]
    settings = GenerationSettings(
        max_new_tokens=config.max_new_tokens, do_sample=True, temperature=config.temperature,
        seed=config.seed, batch_size=config.batch_size,
    )
    path = out / "answers.jsonl" if out else None
    with open_cache(path, "persona.answers") as store:
        return _answers(model, tokenizer, trait, config, identity, settings, questions, store)


def _answers(model: Any, tokenizer: Any, trait: TraitDefinition, config: Any, identity: ModelIdentity,
             settings: GenerationSettings, questions: list[str], store: JsonlCache | None) -> list[dict[str, Any]]:
    done = dict(store.rows) if store else {}
    slots: list[dict[str, Any]] = []
    for p, pair in enumerate(trait.pairs[: config.n_pairs]):
        for polarity, system in (("expressing", pair.expressing), ("suppressing", pair.suppressing)):
            group_settings = settings.model_copy(update={"seed": config.seed + 1000 * p + (0 if polarity == "expressing" else 500)})
            key = _key(identity.key(), trait.name, p, polarity, system, questions, config.samples, group_settings.key())
            slots += [{"key": f"{key}:{i}", "group": key, "pair": p, "polarity": polarity, "system": system,
                       "question_index": i // config.samples, "question": questions[i // config.samples],
                       "sample": i % config.samples} for i in range(len(questions) * config.samples)]
    todo = [slot for slot in slots if slot["key"] not in done]
    if todo:

        def save(indices: list[int], completions: list[Any]) -> None:
            rows = [{**todo[i], "answer": c.text} for i, c in zip(indices, completions, strict=True)]
            done.update({r["key"]: r for r in (store.add(rows) if store else rows)})

        convs = [to_messages(slot["question"], slot["system"]) for slot in todo]
        generate(model, tokenizer, convs, settings, on_batch=save)
    return [done[slot["key"]] for slot in slots]


def judge_answers(rows: list[dict[str, Any]], trait: TraitDefinition, judge: TraitJudge, out: Path | None = None) -> None:
    """Add ``score`` (or None) and ``judge_error`` to each row; cached in ``out/judged.jsonl`` by judge."""
    spec_key = _key(judge_key(judge, trait))
    path = out / "judged.jsonl" if out else None
    with open_cache(path, "persona.judged", key=lambda r: f"{r['key']}|{r['judge_key']}") as store:
        cached = {(r["key"], r["judge_key"]): r for r in store.rows.values()} if store else {}
        todo = [r for r in rows if (r["key"], spec_key) not in cached]
        if todo:
            scores = judge.score_many(trait, [r["question"] for r in todo], [r["answer"] for r in todo])
            new = [{"key": r["key"], "judge_key": spec_key, "score": s.score, "error": s.error}
                   for r, s in zip(todo, scores, strict=True)]
            if store:
                store.add(new)
            cached.update({(n["key"], spec_key): n for n in new})
    for r in rows:
        hit = cached[(r["key"], spec_key)]
        r["score"], r["judge_error"] = hit["score"], hit["error"]


def kept_pairs(rows: list[dict[str, Any]], threshold: float) -> tuple[list[tuple[dict, dict]], dict[str, int]]:
    """Pairs (same instruction pair, question, sample) with expressing >= threshold > suppressing."""
    by_slot: dict[tuple[int, int, int], dict[str, dict]] = {}
    for r in rows:
        by_slot.setdefault((r["pair"], r["question_index"], r["sample"]), {})[r["polarity"]] = r
    kept, failures = [], 0
    for slot in sorted(by_slot):
        pos, neg = by_slot[slot].get("expressing"), by_slot[slot].get("suppressing")
        if pos is None or neg is None:
            continue
        if pos["score"] is None or neg["score"] is None:
            failures += 1
            continue
        if pos["score"] >= threshold and neg["score"] < threshold:
            kept.append((pos, neg))
    mean = lambda pol: sum(r["score"] for r in rows if r["polarity"] == pol and r["score"] is not None) / max(  # noqa: E731
        1, sum(1 for r in rows if r["polarity"] == pol and r["score"] is not None))
    counts = {"pairs_total": len(by_slot), "pairs_kept": len(kept), "judge_failures": failures,
              "mean_score_expressing": round(mean("expressing"), 2), "mean_score_suppressing": round(mean("suppressing"), 2)}
    return kept, counts


def mean_difference(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """v = mean(pos) - mean(neg) over the first (sample) dim."""
    return pos.float().mean(0) - neg.float().mean(0)


def vector_from_rows(
    model: Any, tokenizer: Any, rows: list[dict[str, Any]], threshold: float = 50.0, batch_size: int = 8,
    judge_name: str = "judge",
) -> tuple[torch.Tensor, dict[str, int]]:
    """Filter judged rows into kept pairs; per-layer mean difference of their response-averaged states."""
    from lpa.errors import LpaError

    kept, counts = kept_pairs(rows, threshold)
    if not kept:
        raise LpaError(
            f"No pair passed the filter (expressing >= {threshold} and suppressing < {threshold}) "
            f"with judge {judge_name!r}: {counts}. Try more samples/questions or another judge."
        )
    acts = {}
    for index, pol in ((0, "expressing"), (1, "suppressing")):
        items = [pair[index] for pair in kept]
        acts[pol] = response_means(
            model, tokenizer, [r["question"] for r in items], [r["answer"] for r in items],
            systems=[r["system"] for r in items], batch_size=batch_size,
        )
    return mean_difference(acts["expressing"], acts["suppressing"]), counts


def extract_vector(
    model: Any, tokenizer: Any, trait: TraitDefinition, judge: TraitJudge, config: ExtractConfig | None = None,
    out: str | Path | None = None, *, identity: ModelIdentity | None = None,
) -> PersonaVector:
    """Sample, judge, filter, and take the per-layer mean difference of response-averaged states."""
    config = config or ExtractConfig()
    identity = identity or identity_of(model)
    out_path = Path(out) if out else None
    rows = sample_answers(model, tokenizer, trait, config, out_path, identity=identity)
    judge_answers(rows, trait, judge, out_path)
    vectors, counts = vector_from_rows(model, tokenizer, rows, config.threshold, config.batch_size, judge.name)
    return PersonaVector(
        trait=trait.name, vectors=vectors, model=identity.model, judge=judge.spec(), counts=counts,
        extra={"config": config.model_dump(), "identity": identity.as_dict(), "method": "mean difference of response-token-averaged hidden states"},
    )


def default_sweep_layers(model: Any, count: int = 5) -> list[int]:
    n = hooks.num_layers(model)
    lo, hi = 0.2 * (n - 1), 0.8 * (n - 1)
    return sorted({int(round(lo + (hi - lo) * i / max(count - 1, 1))) for i in range(count)})


def layer_sweep(
    model: Any, tokenizer: Any, trait: TraitDefinition, vector: PersonaVector, judge: TraitJudge,
    config: SweepConfig | None = None, out: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Mean judged trait score on evaluation questions for each (layer, coefficient); resumable."""
    config = config or SweepConfig()
    layers = config.layers or default_sweep_layers(model)
    questions = trait.eval_questions[: config.n_questions]
    settings = GenerationSettings(max_new_tokens=config.max_new_tokens, batch_size=config.batch_size)
    path = Path(out) / "sweep.jsonl" if out else None
    # cached cells are reused only for the same vector, judge, questions and settings
    cache_key = _key(hashlib.sha256(vector.vectors.float().numpy().tobytes()).hexdigest(), judge_key(judge, trait), questions,
                     settings.key(), identity_of(model).key(), config.coherence)
    with open_cache(path, "persona.sweep", key=lambda r: f"{r.get('cache_key')}|{r['layer']}|{r['coef']}") as store:
        done = {(r["layer"], r["coef"]): r for r in store.rows.values() if r.get("cache_key") == cache_key} if store else {}
        return _sweep_cells(model, tokenizer, vector, trait, judge, config, layers, questions, settings, cache_key,
                            done, store)


def _sweep_cells(model: Any, tokenizer: Any, vector: PersonaVector, trait: TraitDefinition, judge: TraitJudge,
                 config: SweepConfig, layers: list[int], questions: list[str], settings: GenerationSettings,
                 cache_key: str, done: dict[Any, dict[str, Any]], store: JsonlCache | None) -> list[dict[str, Any]]:
    rows = []
    baseline = None
    for layer in layers:
        for coef in config.coefs:
            if (layer, coef) in done:
                rows.append(done[(layer, coef)])
                continue
            if coef == 0.0 and baseline is not None:
                completions = baseline
            else:
                with steer(model, vector, layer=layer, coef=coef, positions="response"):
                    completions = generate(model, tokenizer, questions, settings)
                if coef == 0.0:
                    baseline = completions
            texts = [c.text for c in completions]
            scores = [s.score for s in judge.score_many(trait, questions, texts)]
            valid = [s for s in scores if s is not None]
            judged = [c for c in coherence_scores(judge, questions, texts) if c is not None] if config.coherence else []
            stats = coherence_stats(texts)
            row = {"layer": layer, "coef": coef, "score": sum(valid) / len(valid) if valid else math.nan,
                   "n": len(valid), "judge": judge.name, "coherence": sum(judged) / len(judged) if judged else None,
                   "distinct_2": stats.mean_distinct_2, "repetitive_rate": stats.repetitive_rate,
                   "example": texts[0][:200], "cache_key": cache_key}
            if store:
                store.add([row])
            rows.append(row)
    return rows


def choose_layer(rows: list[dict[str, Any]]) -> int:
    """The layer whose largest-coefficient steering raises the trait score most above coefficient 0."""
    best_layer, best_gain = None, -math.inf
    for layer in sorted({r["layer"] for r in rows}):
        mine = {r["coef"]: r["score"] for r in rows if r["layer"] == layer}
        top = max(mine)
        gain = mine[top] - mine.get(0.0, 0.0)
        if gain > best_gain:
            best_layer, best_gain = layer, gain
    assert best_layer is not None  # rows is never empty here
    return best_layer


def best_cell(rows: list[dict[str, Any]], min_coherence: float = 50.0) -> dict[str, Any] | None:
    """The steered cell (coef != 0) with the highest trait score among those judged at least ``min_coherence``.

    Cells without a coherence score count as coherent; None if no steered cell qualifies.
    """
    ok = [r for r in rows if r["coef"] != 0 and not math.isnan(r["score"])
          and (r.get("coherence") is None or r["coherence"] >= min_coherence)]
    return max(ok, key=lambda r: r["score"]) if ok else None


def run_extraction(
    model: Any, tokenizer: Any, trait: TraitDefinition, judge: TraitJudge, out: str | Path,
    config: ExtractConfig | None = None, sweep: SweepConfig | None = None, do_sweep: bool = True,
) -> tuple[PersonaVector, list[dict[str, Any]]]:
    """Extract, sweep, choose the layer, save ``<trait>.safetensors`` and ``sweep.json``."""
    out = Path(out)
    vector = extract_vector(model, tokenizer, trait, judge, config, out)
    rows: list[dict[str, Any]] = []
    if do_sweep:
        rows = layer_sweep(model, tokenizer, trait, vector, judge, sweep, out)
        sweep = sweep or SweepConfig()
        best = best_cell(rows, sweep.min_coherence)
        vector.layer = best["layer"] if best else choose_layer(rows)
        chosen_by = (f"highest trait score among steered cells with coherence >= {sweep.min_coherence:g}" if best
                     else "max score gain at the largest coefficient (no cell coherent enough)")
        vector.extra["sweep"] = {"judge": judge.name, "chosen_by": chosen_by, "best_cell": best}
        atomic_write_json(out / "sweep.json", {"chosen_layer": vector.layer, "best_cell": best, "chosen_by": chosen_by,
                                               "rows": rows, "judge": judge.spec()})
    else:
        vector.layer = hooks.num_layers(model) // 2
    vector.save(out / f"{trait.name}.safetensors")
    return vector, rows


__all__ = [
    "ExtractConfig", "SweepConfig", "best_cell", "choose_layer", "default_sweep_layers", "extract_vector", "judge_answers",
    "kept_pairs", "layer_sweep", "mean_difference", "run_extraction", "sample_answers", "vector_from_rows",
]
