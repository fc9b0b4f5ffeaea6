"""Training configs: one shared base, one subclass per method tagged by ``method: Literal[...]``.

Saved runs reload through the tag (:func:`config_from_dict`), so ``config.yaml`` of any run
rebuilds the exact config object.  Presets are plain dicts of defaults merged under the YAML
file and ``--set`` overrides.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lpa.errors import LpaError
from lpa.training.losses import LOSSES, PAIR_LOSSES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_losses(weights: dict[str, float], allowed: tuple[str, ...]) -> dict[str, float]:
    bad = sorted(set(weights) - set(allowed))
    if bad:
        raise ValueError(f"unknown loss {', '.join(bad)}; valid choices: {', '.join(allowed)}")
    return weights


class LoraSettings(_Strict):
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout (0 keeps runs bit-reproducible).")
    target_modules: list[str] | Literal["auto"] = Field(
        "auto", description="Module-name suffixes to adapt; 'auto' = every linear layer inside the decoder blocks."
    )


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
    on_completion: bool = Field(False, description="Also perturb completion tokens (default: prompt tokens only).")
    losses: dict[str, float] = Field({"toward": 1.0, "away": 1.0}, description="Attacker loss weights (toward rejected, away from chosen).")
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
        description="Defender loss weights: toward chosen, away from rejected, KL to the base model on benign prompts.",
    )
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    kl_tokens: int = Field(16, ge=1, description="KL is taken on the last N positions of each benign prompt.")

    @field_validator("losses")
    @classmethod
    def _losses(cls, value: dict[str, float]) -> dict[str, float]:
        return _check_losses(value, tuple(LOSSES))


class BenignSettings(_Strict):
    source: str = Field("builtin", description="'builtin' or an instruction file (.json/.jsonl/.txt; relative to data_dir).")
    batch_size: int = Field(4, ge=1, description="Benign prompts per training step for the KL term.")
    max_tokens: int = Field(96, ge=8, description="Truncate benign prompts to this many tokens (from the left).")


class GuardSettings(_Strict):
    every: int = Field(5, ge=0, description="Check coherence every N steps (0 = off; also runs before step 1 and at the end).")
    n_prompts: int = Field(8, ge=1, description="Fixed benign prompts generated at each check.")
    max_new_tokens: int = Field(32, ge=1, description="Tokens generated per guard prompt.")
    max_template_leak: float = Field(0.5, description="Collapse if more answers than this are the training completion.")
    max_empty: float = Field(0.5, description="Collapse if more answers than this are empty.")
    min_distinct_2: float = Field(0.3, description="Collapse if the mean distinct-2 falls below this.")
    max_refusal: float = Field(0.75, description="Collapse if more benign answers than this are refusals.")
    stop_on_collapse: bool = Field(True, description="Stop early and keep the last good adapter on collapse.")


class MonitorSettings(_Strict):
    persona_vectors: list[str] = Field(default_factory=list, description="Persona-vector files to project on (lpa.persona).")
    every: int = Field(0, ge=0, description="Log persona projections every N steps (0 = off).")


class AdversaryMonitorSettings(_Strict):
    every: int = Field(0, ge=0, description="Every N steps, decode what the perturbed model says on the batch (0 = off).")
    n: int = Field(4, ge=1, description="Batch examples decoded.")
    max_new_tokens: int = Field(24, ge=1, description="Tokens decoded per example.")


class TrainConfig(_Strict):
    """Settings shared by every training method (subclasses add data options and the tag)."""

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
    save_every: int = Field(5, ge=1, description="Save a resumable checkpoint every N steps.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory on large models.")
    merge: bool = Field(False, description="Also write a merged full model to RUN/merged.")
    progress: bool = Field(True, description="Show a progress bar.")


PRESETS: dict[str, dict[str, Any]] = {
    # Published Llama-3-8B-Instruct settings (absolute epsilon; layers 8,16,24,30 of 32 as relative depths).
    "paper": {
        "steps": 20,
        "batch_size": 16,
        "lora": {"r": 64, "alpha": 128},
        "attack": {"layers": ["embed", 0.258, 0.516, 0.774, 0.968], "steps": 16, "lr": 1e-3,
                   "epsilon": 6.0, "epsilon_mode": "absolute"},
        "defender": {"steps": 4, "lr": 8e-5, "losses": {"toward": 0.5, "away": 0.5, "kl": 0.1}},
    },
    # SmolLM2-135M on 2 CPU cores: a few minutes of training.
    "embedded": {
        "steps": 10,
        "batch_size": 4,
        "lora": {"r": 8, "alpha": 16},
        "attack": {"layers": ["embed", 0.25, 0.5, 0.75], "steps": 3, "lr": 0.5, "epsilon": 0.5,
                   "epsilon_mode": "relative", "norm_batches": 1},
        "defender": {"steps": 1, "lr": 5e-4, "losses": {"toward": 1.0, "away": 1.0, "kl": 0.5}, "kl_tokens": 8},
        "benign": {"batch_size": 4},
        "guard": {"every": 5, "n_prompts": 6, "max_new_tokens": 24},
        "save_every": 2,
    },
}


def preset_defaults(name: str | None) -> dict[str, Any]:
    if name is None:
        return {}
    if name not in PRESETS:
        raise LpaError(f"Unknown preset {name!r}. Valid choices: {', '.join(sorted(PRESETS))}.")
    return {**PRESETS[name], "preset": name}
