"""LoRA supervised fine-tuning with optional preventative steering (the "vaccine"): a thin caller of
the shared trainer's ``persona-sft`` method (:mod:`lpa.training.methods.persona_sft`).

With ``preventative``, ``+coef * v`` is added at the vector's layer (all positions) during the
training forward passes only, so the optimiser has no need to move the weights towards the
trait.  The steering is a hook, never part of the weights: it is absent at inference and from
the saved PEFT adapter.  Training, resume, clipping, mixed precision and ``metrics.jsonl`` are the
trainer's (:func:`lpa.training.train`); this module adds the persona workflow around it.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field

from lpa.coherence import coherence_stats
from lpa.errors import LpaError
from lpa.generation import GenerationSettings, generate
from lpa.io import atomic_write_json, atomic_write_text, digest, read_jsonl
from lpa.persona.judges import TraitJudge, coherence_scores, judge_key
from lpa.persona.monitor import probe_projections
from lpa.persona.trait_definitions import TraitDefinition
from lpa.persona.vector import PersonaVector


class FinetuneConfig(BaseModel):
    """Settings of ``lpa persona finetune``."""

    epochs: int = Field(1, ge=1, description="Passes over the dataset.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimiser steps.")
    lr: float = Field(2e-4, gt=0, description="AdamW learning rate.")
    batch_size: int = Field(4, ge=1, description="Samples per step.")
    max_length: int = Field(256, ge=8, description="Truncate the prompt (from the left) and the response to this many tokens.")
    lora_r: int = Field(8, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(16, ge=1, description="LoRA alpha.")
    target_modules: str | list[str] = Field("all-linear", description="LoRA target modules (peft syntax).")
    preventative: bool = Field(False, description="Add +coef*v at the vector's layer during training forwards.")
    coef: float = Field(1.0, description="Preventative steering coefficient.")
    layer: int | None = Field(None, description="Steering layer (default: the vector's chosen layer).")
    log_every: int = Field(5, ge=1, description="Log persona probe projections every N steps.")
    seed: int = Field(0, description="Shuffle and LoRA init seed.")
    report_to: list[str] = Field(default_factory=list, description="Experiment trackers (transformers' report_to).")


_RUN_FILES = ("adapter", "result.json", "metrics.jsonl", "config.yaml", "runs", "train_rows.jsonl")


def _start_over(out: Path) -> None:
    """Another dataset or settings in the same folder: drop the previous run (same ones resume)."""
    for path in [*out.glob("checkpoint-*"), *(out / name for name in _RUN_FILES)]:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """The rows as the JSONL that ``persona-sft`` reads (prompt or messages, and response)."""
    out = []
    for row in rows:
        conv = row["conversation"]
        item: dict[str, Any] = {"prompt": conv} if isinstance(conv, str) else {"messages": conv}
        out.append(json.dumps(item | {"response": row["response"]}, ensure_ascii=False) + "\n")
    atomic_write_text(path, "".join(out))


def train_config(config: FinetuneConfig, out: Path, n_rows: int, model: Any, vector_path: Path | None,
                 probe_paths: list[Path]) -> Any:
    """The ``persona-sft`` training config of a fine-tuning run."""
    from lpa.training import build_train_config

    steps = config.max_steps or config.epochs * math.ceil(n_rows / config.batch_size)
    fields: dict[str, Any] = {
        "method": "persona-sft", "out": str(out), "data": str(out / "train_rows.jsonl"), "steps": steps,
        "batch_size": config.batch_size, "seed": config.seed, "device": str(next(model.parameters()).device),
        "model": str(getattr(getattr(model, "config", None), "_name_or_path", "") or "in-memory"),
        "max_prompt_tokens": config.max_length, "max_response_tokens": config.max_length, "progress": False,
        "lora": {"r": config.lora_r, "alpha": config.lora_alpha, "target_modules": config.target_modules},
        "defender": {"lr": config.lr}, "report_to": config.report_to,
        "monitor": {"persona_vectors": [str(p) for p in probe_paths], "every": config.log_every if probe_paths else 0},
    }
    if config.preventative:
        fields |= {"preventative": True, "vector": str(vector_path), "coef": config.coef, "layer": config.layer}
    return build_train_config(None, None, **fields)


def finetune(
    model: Any, tokenizer: Any, rows: list[dict[str, Any]], config: FinetuneConfig, out: str | Path,
    *, vector: PersonaVector | None = None, probe_vectors: list[PersonaVector] | None = None,
) -> Any:
    """Train a LoRA adapter on ``rows`` ({conversation, response}); saves ``out/adapter``; returns the PEFT model.

    Rerunning with the same rows and settings resumes (or returns the finished adapter); other
    rows or settings in the same folder start over.
    """
    from lpa.training import train

    if config.preventative and vector is None:
        raise LpaError("Preventative fine-tuning needs a persona vector (--vector or --trait with an extracted vector).")
    out = Path(out)
    key = train_key(rows, config, vector)
    marker = out / "train_key.txt"
    if marker.is_file() and marker.read_text().strip() != key:
        _start_over(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, key)
    _write_rows(out / "train_rows.jsonl", rows)
    vector_path = vector.save(out / "steering_vector.safetensors") if vector is not None and config.preventative else None
    probes = [v.save(out / f"probe-{i}-{v.trait}.safetensors") for i, v in enumerate(probe_vectors or [])]
    result = train(train_config(config, out, len(rows), model, vector_path, probes), model=model, tokenizer=tokenizer)
    if result.model is None:  # finished earlier: load its adapter
        from peft import PeftModel

        result.model = PeftModel.from_pretrained(model, str(result.adapter))
    atomic_write_json(out / "finetune_config.json", config.model_dump())
    return result.model.eval()


def trait_score(
    model: Any, tokenizer: Any, trait: TraitDefinition, judge: TraitJudge, n_questions: int, settings: GenerationSettings
) -> tuple[float, list[str]]:
    questions = trait.eval_questions[:n_questions]
    texts = [c.text for c in generate(model, tokenizer, questions, settings)]
    scores = [s.score for s in judge.score_many(trait, questions, texts) if s.score is not None]
    return (sum(scores) / len(scores) if scores else math.nan), texts


def heldout_nll(model: Any, tokenizer: Any, rows: list[dict[str, Any]], max_length: int = 256) -> float:
    """Mean response-token NLL on held-out rows (a utility proxy: lower is better)."""
    from lpa.training.adversary import completion_logits
    from lpa.training.data import Collator
    from lpa.training.losses import toward
    from lpa.training.methods.persona_sft import sft_examples

    collate = Collator(tokenizer, max_length, max_length)
    device = next(model.parameters()).device
    losses = []
    with torch.no_grad():
        for example in sft_examples(rows):
            batch = collate.batch([example]).to(device)
            losses.append(float(toward(completion_logits(model, batch), batch.completion_ids, batch.completion_mask)))
    return sum(losses) / len(losses)


def _mean(values: list[float | None]) -> float:
    valid = [v for v in values if v is not None and not math.isnan(v)]
    return sum(valid) / len(valid) if valid else math.nan


def _sd(values: list[float | None]) -> float:
    """Sample standard deviation over seeds (nan below two values)."""
    valid = [v for v in values if v is not None and not math.isnan(v)]
    if len(valid) < 2:
        return math.nan
    mean = sum(valid) / len(valid)
    return math.sqrt(sum((v - mean) ** 2 for v in valid) / (len(valid) - 1))


def evaluate(
    model: Any, tokenizer: Any, trait: TraitDefinition, judge: TraitJudge, vector: PersonaVector, held_rows: list[dict[str, Any]],
    *, n_questions: int, settings: GenerationSettings, max_length: int, mmlu: list[Any] | None = None,
) -> dict[str, Any]:
    """Trait score, judged coherence, held-out NLL, MMLU (log-likelihood) and probe projection of one model."""

    questions = trait.eval_questions[:n_questions]
    score, texts = trait_score(model, tokenizer, trait, judge, n_questions, settings)
    row: dict[str, Any] = {
        "trait_score": score, "coherence_judged": _mean(coherence_scores(judge, questions, texts)),
        "heldout_nll": heldout_nll(model, tokenizer, held_rows, max_length),
        "coherence": coherence_stats(texts).__dict__, "probe": probe_projections(model, tokenizer, [vector]),
        "example": texts[0][:200] if texts else "",
    }
    if mmlu:
        from lpa.eval.utility import mmlu_loglik

        row["mmlu_loglik"] = mmlu_loglik(model, tokenizer, mmlu).accuracy
    return row


def train_key(rows: list[dict[str, Any]], config: FinetuneConfig, vector: PersonaVector | None) -> str:
    """What decides a trained adapter: data, settings and (preventative only) the steering vector."""

    if not config.preventative:
        return digest([rows, config.model_dump(exclude={"coef", "layer", "report_to"})])
    assert vector is not None
    return digest([rows, config.model_dump(exclude={"report_to"}), hashlib.sha256(vector.vectors.float().numpy().tobytes()).hexdigest(), vector.layer])


def trained(
    load: Callable[[], tuple[Any, Any]], rows: list[dict[str, Any]], config: FinetuneConfig, folder: Path,
    vector: PersonaVector | None,
) -> tuple[Any, Any]:
    """Fine-tune into ``folder``, or reload the adapter already trained there with the same :func:`train_key`."""
    model, tokenizer = load()
    return finetune(model, tokenizer, rows, config, folder, vector=vector, probe_vectors=[vector] if vector else None), tokenizer


def split_rows(rows: list[dict[str, Any]], heldout: float = 0.2) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, held-out): the first ``heldout`` fraction is held out (all rows if there is only one)."""
    n_held = max(1, int(len(rows) * heldout)) if len(rows) > 1 else 0
    return rows[n_held:], rows[:n_held] or rows


def compare(
    load: Callable[[], tuple[Any, Any]], rows: list[dict[str, Any]], trait: TraitDefinition, vector: PersonaVector,
    judge: TraitJudge, config: FinetuneConfig, out: str | Path, *, n_questions: int = 10, heldout: float = 0.2,
    settings: GenerationSettings | None = None, seeds: list[int] | None = None, mmlu_n: int = 0,
) -> dict[str, Any]:
    """Base vs plain vs preventative fine-tuning over seeds: trait score, coherence, held-out NLL, MMLU.

    Each (mode, seed) adapter and evaluation is saved in ``out/<mode>-s<seed>/`` as soon as it exists
    (adapter reuse keyed by :func:`train_key`), so a rerun resumes; ``out/report.json`` holds per-seed
    rows and the mean per mode.
    """
    import json

    settings = settings or GenerationSettings(max_new_tokens=64)
    seeds = seeds or [config.seed]
    out = Path(out)
    train_rows, held_rows = split_rows(rows, heldout)
    mmlu = None
    if mmlu_n:
        from lpa.eval.utility import load_mmlu

        mmlu = load_mmlu(n=mmlu_n)
    # a cached result is reused only for the same data, settings, judge and vector
    run_key = digest([rows, config.model_dump(exclude={"seed", "preventative"}), settings.key(), n_questions, mmlu_n,
                      judge_key(judge, trait), vector.vectors.sum().item(), heldout])
    runs: dict[str, dict[str, Any]] = {}
    for mode, seed in [("base", seeds[0]), *[(m, s) for s in seeds for m in ("plain", "preventative")]]:
        name = "base" if mode == "base" else f"{mode}-s{seed}"
        saved = out / name / "eval.json"
        cached = json.loads(saved.read_text()) if saved.is_file() else None
        if cached is not None and cached.get("run_key") == run_key:
            runs[name] = cached
            continue
        if mode == "base":
            model, tokenizer = load()
        else:
            cfg = config.model_copy(update={"preventative": mode == "preventative", "seed": seed})
            model, tokenizer = trained(load, train_rows, cfg, out / name, vector)
        runs[name] = {"mode": mode, "seed": seed, "run_key": run_key, **evaluate(
            model, tokenizer, trait, judge, vector, held_rows, n_questions=n_questions, settings=settings,
            max_length=config.max_length, mmlu=mmlu)}
        atomic_write_json(out / name / "eval.json", runs[name])
    keys = ("trait_score", "coherence_judged", "heldout_nll", "mmlu_loglik")
    results = {}
    for mode in ("base", "plain", "preventative"):
        mine = [r for r in runs.values() if r["mode"] == mode]
        results[mode] = {"n_seeds": len(mine), **{k: _mean([r.get(k) for r in mine]) for k in keys},
                         **{f"{k}_sd": _sd([r.get(k) for r in mine]) for k in keys}}
    report = {"trait": trait.name, "judge": judge.spec(), "coef": config.coef, "layer": vector.resolve(config.layer),
              "n_train": len(train_rows), "n_heldout": len(held_rows), "n_questions": n_questions, "mmlu_n": mmlu_n,
              "seeds": seeds, "results": results, "runs": runs}
    report["drift_plot"] = plot_drift([out / f"{m}-s{s}" for s in seeds for m in ("plain", "preventative")],
                                      out / "plots" / "trait_drift.png")
    atomic_write_json(out / "report.json", report)
    return report


def plot_drift(run_dirs: list[Path], path: Path) -> str | None:
    """Trait-drift curves: probe projection per logged step, one line per run and vector."""

    series = {}
    for run in run_dirs:
        rows = read_jsonl(run / "metrics.jsonl")
        for key in sorted({k for r in rows for k in r if k.startswith("persona/")}):
            series[f"{run.name} {key}"] = [(r["step"], r[key]) for r in rows if key in r]
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, points in series.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("mean probe projection")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


__all__ = ["FinetuneConfig", "compare", "split_rows", "train_key", "trained", "evaluate", "finetune", "heldout_nll",
           "plot_drift", "trait_score"]
