"""Training configs: one shared base, one subclass per method tagged by ``method: Literal[...]``.

Saved runs reload through the tag (:func:`config_from_dict`), so ``config.yaml`` of any run
rebuilds the exact config object.  Presets are plain dicts of defaults merged under the YAML
file and ``--set`` overrides.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lpa.config import merge_nested
from lpa.errors import LpaError
from lpa.training.losses import AWAY_MIN_LOGPROB, LOSSES, PAIR_LOSSES
from lpa.training.selection_config import SelectionSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_losses(weights: dict[str, float], allowed: tuple[str, ...]) -> dict[str, float]:
    bad = sorted(set(weights) - set(allowed))
    if bad:
        raise ValueError(f"unknown loss {', '.join(bad)}; valid choices: {', '.join(allowed)}")
    return weights


class LoraSettings(_Strict):
    r: int = Field(64, ge=1, description="LoRA rank (the authors': 64).")
    alpha: float = Field(8.0, gt=0, description="LoRA alpha; scale = alpha / r (peft's default 8, the authors' setting).")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout (0 keeps runs bit-reproducible).")
    target_modules: list[str] | Literal["all-linear", "auto"] = Field(
        "all-linear", description="Module-name suffixes to adapt, or peft's 'all-linear' (every linear layer but the "
        "output head; the same for every method). 'auto' is the former name of 'all-linear'."
    )

    @field_validator("target_modules")
    @classmethod
    def _former_name(cls, value: list[str] | str) -> list[str] | str:
        return "all-linear" if value == "auto" else value  # 'auto' adapted the same layers in decoder-only models


class AttackSettings(_Strict):
    layers: list[int | float | str] = Field(
        ["embed", 0.25, 0.5, 0.75, 0.9],
        description="Perturbed locations: 'embed', layer index, or relative depth (see lpa.hooks).",
    )
    steps: int = Field(16, ge=1, description="K: attacker Adam steps per training step.")
    lr: float = Field(1e-3, gt=0, description="Attacker Adam lr (relative mode: fraction of epsilon per step, per unit-RMS coordinate).")
    epsilon: float = Field(6.0, gt=0, description="Per-token L2 radius (absolute units, or a fraction of the mean token norm).")
    epsilon_mode: Literal["relative", "absolute"] = Field(
        "relative", description="relative: epsilon (and lr) scale with the measured mean token norm at each location."
    )
    on_completion: bool = Field(True, description="Perturb completion tokens too (the authors' Llama-3/Qwen3 setting); false = prompt only.")
    losses: dict[str, float] = Field({"toward": 1.0, "away": 1.0}, description="Attacker loss weights (toward rejected, away from chosen).")
    away_min_logprob: float | None = Field(
        AWAY_MIN_LOGPROB, description="Away-loss ignores tokens with log p below this (the authors' -5; null = keep all)."
    )
    norm_batches: int = Field(2, ge=1, description="Batches used to measure the mean token norm (relative mode).")

    @field_validator("losses")
    @classmethod
    def _losses(cls, value: dict[str, float]) -> dict[str, float]:
        return _check_losses(value, PAIR_LOSSES)


class DefenderSettings(_Strict):
    steps: int = Field(4, ge=1, description="M: LoRA optimiser steps per training step (perturbation fixed).")
    lr: float = Field(8e-5, gt=0, description="LoRA AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    losses: dict[str, float] = Field(
        {"toward": 0.5, "away": 0.5, "kl": 0.1},
        description="Defender loss weights: toward chosen, away from rejected, kl to the base model on benign "
        "response tokens, sft (cross-entropy on the benign responses).",
    )
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    kl_direction: Literal["model||base", "base||model"] = Field(
        "model||base", description="KL direction on benign response tokens (the authors': model||base)."
    )
    reset_optimizer: bool = Field(True, description="Re-initialise the defender's AdamW every training step (the authors').")
    away_min_logprob: float | None = Field(AWAY_MIN_LOGPROB, description="As attack.away_min_logprob, for the defender.")

    @field_validator("losses")
    @classmethod
    def _losses(cls, value: dict[str, float]) -> dict[str, float]:
        return _check_losses(value, tuple(LOSSES))


class BenignSettings(_Strict):
    source: str | None = Field(
        "builtin", description="Benign instruction-response pairs: 'builtin', a .json/.jsonl file (relative to data_dir), or null."
    )
    anchors: bool = Field(True, description="Add the layout's anchor statements (desirable traits with their answer).")
    batch_size: int = Field(4, ge=1, description="Benign examples per training step for the KL / SFT terms.")
    max_tokens: int = Field(96, ge=8, description="Truncate benign prompts to this many tokens (from the left).")
    max_response_tokens: int = Field(48, ge=1, description="Truncate benign responses to this many tokens.")


class GuardSettings(_Strict):
    every: int = Field(5, ge=0, description="Check coherence every N steps (0 = off; also runs before step 1 and at the end).")
    groups: list[Literal["everyday", "borderline", "harmful"]] = Field(
        ["everyday", "borderline", "harmful"],
        description="Built-in prompt groups generated at each check: everyday, borderline-safe (XSTest-style), harmful-looking.",
    )
    n_prompts: int = Field(4, ge=1, description="Prompts per group generated at each check.")
    max_new_tokens: int = Field(32, ge=1, description="Tokens generated per guard prompt.")
    max_template_leak: float = Field(
        0.25, description="Collapse if, in any group, more answers than this contain the training completion."
    )
    max_empty: float = Field(0.5, description="Collapse if more answers than this are empty.")
    min_distinct_2: float = Field(0.3, description="Collapse if the mean distinct-2 falls below this.")
    max_refusal: float = Field(
        0.75, description="Over-refusal if more everyday/borderline answers than this are refusals (reported; stops "
        "the run only with stop_on_over_refusal)."
    )
    stop_on_collapse: bool = Field(True, description="Stop early and keep the last good adapter on collapse.")
    stop_on_over_refusal: bool = Field(
        False, description="Treat over-refusal as a collapse. Off by default: over-refusal is a cost the evaluation "
        "measures (XSTest), while a collapsed model (template answers, empty, loops) leaves nothing to judge."
    )


class MonitorSettings(_Strict):
    persona_vectors: list[str] = Field(default_factory=list, description="Persona-vector files to project on (lpa.persona).")
    every: int = Field(0, ge=0, description="Log persona projections every N steps (0 = off).")


class AdversaryMonitorSettings(_Strict):
    every: int = Field(0, ge=0, description="Every N steps, decode what the perturbed model says on the batch (0 = off).")
    n: int = Field(4, ge=1, description="Batch examples decoded.")
    max_new_tokens: int = Field(24, ge=1, description="Tokens decoded per example.")


class TrainConfig(_Strict):
    """Settings shared by every training method (subclasses add data options and the tag)."""

    # a method's own defaults, merged under what the user gives (nested: setting defender.lr keeps them)
    DEFAULTS: ClassVar[dict[str, Any]] = {}

    method: str = Field(description="Training method name (see lpa.training.METHODS).")
    model: str = Field("smollm2-135m", description="Model spec: alias, HF id, local dir or .gguf.")
    out: str | None = Field(None, description="Run directory.")
    preset: str | None = Field(None, description="Preset applied under this config (recorded only).")
    steps: int = Field(20, ge=1, description="Training steps (one attack + M defender updates each).")
    batch_size: int = Field(16, ge=1, description="Pair examples per step (global, split over processes).")
    seed: int = Field(0, description="Seed for data order, initialisation and the shuffled ablation.")
    device: str = Field("auto", description="auto | cpu | cuda | ...")
    dtype: str = Field("auto", description="auto = bf16 autocast on CUDA, fp32 on CPU.")
    data_dir: str | None = Field(None, description="Folder for relative data paths (default $LPA_DATA_DIR).")
    max_prompt_tokens: int = Field(256, ge=8, description="Truncate training prompts to this many tokens.")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    attack: AttackSettings = Field(default_factory=AttackSettings)
    defender: DefenderSettings = Field(default_factory=DefenderSettings)
    benign: BenignSettings = Field(default_factory=BenignSettings)
    guard: GuardSettings = Field(default_factory=GuardSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    adversary_monitor: AdversaryMonitorSettings = Field(default_factory=AdversaryMonitorSettings)
    selection: SelectionSettings = Field(default_factory=SelectionSettings)
    save_every: int = Field(5, ge=1, description="Save a resumable checkpoint every N steps.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory on large models.")
    merge: bool = Field(False, description="Also write a merged full model to RUN/merged.")
    progress: bool = Field(True, description="Show a progress bar.")
    report_to: list[str] = Field(
        default_factory=list,
        description="Experiment trackers, as transformers' TrainingArguments.report_to: tensorboard, wandb, trackio, "
        "mlflow, ... (empty = none). TensorBoard writes to RUN/runs/. metrics.jsonl is always written.",
    )
    trainer_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra transformers.TrainingArguments (e.g. deepspeed, fsdp, gradient_accumulation_steps, optim); "
        "the ones lpa sets from this config (steps, batch size, lr, clipping, seed, saving) cannot be overridden here.",
    )

    @model_validator(mode="before")
    @classmethod
    def _method_defaults(cls, data: Any) -> Any:
        return merge_nested(cls.DEFAULTS, data) if cls.DEFAULTS and isinstance(data, dict) else data


PRESETS: dict[str, dict[str, Any]] = {
    # Published Llama-3-8B-Instruct settings (absolute epsilon; layers 8,16,24,30 of 32 as relative depths).
    "paper": {
        "steps": 20,
        "batch_size": 16,
        "lora": {"r": 64, "alpha": 8},
        "attack": {"layers": ["embed", 0.258, 0.516, 0.774, 0.968], "steps": 16, "lr": 1e-3,
                   "epsilon": 6.0, "epsilon_mode": "absolute", "on_completion": True},
        "defender": {"steps": 4, "lr": 8e-5, "losses": {"toward": 0.5, "away": 0.5, "kl": 0.1},
                     "reset_optimizer": True},
    },
    # The embedded models on 2 CPU cores (calibrated on qwen2.5-coder-0.5b, see docs/method.md):
    # the authors' LoRA scale (r=64, alpha=8) and loss weights; K=4 attacker steps whose reach is a
    # small fraction of each location's token norm (relative epsilon 0.05, lr 0.25 -> reach
    # <= K x lr x eps); M=2 defender steps at a lr that moves the adapter about as far over a short
    # run as the authors' 20 x 4 updates at 8e-5.
    "embedded": {
        "steps": 12,
        "batch_size": 4,
        "lora": {"r": 64, "alpha": 8},
        "attack": {"layers": ["embed", 0.25, 0.5, 0.75], "steps": 4, "lr": 0.25, "epsilon": 0.05,
                   "epsilon_mode": "relative", "norm_batches": 1, "on_completion": True},
        "defender": {"steps": 2, "lr": 2e-4, "losses": {"toward": 0.5, "away": 0.5, "kl": 0.1}},
        "benign": {"batch_size": 4},
        "guard": {"every": 4, "n_prompts": 8, "max_new_tokens": 24},  # all built-in guard prompts: 3 per group missed a collapse
        "save_every": 2,
    },
}


def preset_defaults(name: str | None) -> dict[str, Any]:
    if name is None:
        return {}
    if name not in PRESETS:
        raise LpaError(f"Unknown preset {name!r}. Valid choices: {', '.join(sorted(PRESETS))}.")
    return {**PRESETS[name], "preset": name}
