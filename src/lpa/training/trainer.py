"""The one training loop: :class:`LatTrainer`, a ``transformers.Trainer`` subclass used by every method.

Per training step (``training_step``): (1) if the method is adversarial, the LAT attacker
(:func:`lpa.training.adversary.attack`, a pure function) finds perturbations that make the model
give the rejected answer; (2) M defender updates of the LoRA weights with the perturbation fixed
(toward chosen, away from rejected, KL to the adapter-free model on benign responses), each
backward running inside the hook context so gradient checkpointing re-runs the perturbed forward.
The first M - 1 updates use Trainer's optimiser inside the step; the last one is Trainer's own
(clipping, ``optimizer.step``, scheduler), so one Trainer step = one attack + M updates.

Everything else is Trainer's: data loading (a deterministic sampler, so resume skips to exactly
the next batch), mixed precision, accelerate/DeepSpeed/FSDP, ``report_to`` and checkpoints
(``RUN/checkpoint-N``, plus :mod:`lpa.training.state` for epsilons, cost counters and the last good
adapter).  Rerunning the same command resumes from the newest complete checkpoint.  Monitors are
callbacks (:mod:`lpa.training.callbacks`); ``metrics.jsonl`` keeps one row per step.
"""

from __future__ import annotations

import json
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from lpa import hooks
from lpa.errors import LpaError
from lpa.io import atomic_write_json
from lpa.runs import RunDir
from lpa.training import state as lat_state
from lpa.training.adversary import attack, completion_logits, measure_token_norms, pair_losses, perturbed
from lpa.training.base import METHODS, Method, config_from_dict
from lpa.training.callbacks import (
    AdversaryMonitor,
    CollapseGuard,
    FunctionCallback,
    LpaCallback,
    MetricsFile,
    PersonaDrift,
    ProgressBar,
    UserCallback,
)
from lpa.training.config import TrainConfig
from lpa.training.data import ChatExample, Collator, PairBatch, guard_prompts, load_benign_chat
from lpa.training.losses import LOSSES
from lpa.training.losses import kl as kl_loss


@dataclass
class TrainResult:
    run_dir: Path
    adapter: Path
    steps_done: int
    stopped: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    model: Any = None  # the trained PeftModel (None when a finished run was returned without training)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Examples of ``step``: consecutive slices of seeded per-epoch permutations (stateless, so resume is exact)."""
    out = []
    for pos in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(pos, n)
        order = list(range(n))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        out.append(order[offset])
    return out


class StepSampler(torch.utils.data.Sampler[int]):
    """The example indices of steps 0, 1, ... in order (:func:`batch_indices`): every batch has
    ``batch_size`` examples, epochs wrap inside a batch, and skipping k batches on resume gives
    the batch an uninterrupted run sees next whatever the RNG state."""

    def __init__(self, n: int, batch_size: int, seed: int, batches: int) -> None:
        self.n, self.batch_size, self.seed, self.batches = n, batch_size, seed, batches

    def __iter__(self) -> Any:
        for step in range(self.batches):
            yield from batch_indices(self.n, self.batch_size, self.seed, step)

    def __len__(self) -> int:
        return self.batches * self.batch_size


class LatTrainer(Trainer):
    """``transformers.Trainer`` with the LAT step; built by :func:`train` (``model`` is the PeftModel)."""

    def __init__(self, *, cfg: TrainConfig, method: Method, lat: lat_state.LatState, run: RunDir,
                 benign: list[ChatExample], templates: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cfg, self.method, self.lat, self.run = cfg, method, lat, run
        self.benign, self.templates = benign, templates
        self.guard_prompts = guard_prompts(list(cfg.guard.groups), cfg.guard.n_prompts)
        self.row: dict[str, Any] = {}  # metrics of the step in progress (callbacks add to it)
        self.step0_row: dict[str, Any] = {}  # what monitors measured before step 1
        self.last_attack: tuple[Any, PairBatch] | None = None
        self.stopped: str | None = None
        self.resume_from: Path | None = None
        self.selection: dict[str, Any] | None = None  # the chosen step (lpa.training.selection), when selection ran
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, LpaCallback):
                callback.trainer = self
        from transformers.trainer_callback import PrinterCallback

        self.remove_callback(PrinterCallback)  # metrics.jsonl and the progress bar report instead

    # ---------------------------------------------------------------- Trainer hooks
    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler:
        batches = self.cfg.steps * self.args.gradient_accumulation_steps
        return StepSampler(len(self.train_dataset), self.cfg.batch_size, self.cfg.seed, batches)

    def floating_point_ops(self, inputs: dict[str, Any]) -> float:
        return 0.0  # Trainer's 6 x tokens x params estimate does not know about the K + M passes

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        folder = Path(self._get_output_dir(trial)) / f"checkpoint-{self.state.global_step}"
        if self.args.should_save:  # before Trainer's files: trainer_state.json, written last, marks it complete
            lat_state.save(folder, self.lat)
        super()._save_checkpoint(model, trial)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """A step's numeric metrics go to ``report_to`` with Trainer's loss, grad norm and lr."""
        if "loss" in logs and self.row.get("step") == self.state.global_step:
            logs = logs | {k: float(v) for k, v in self.row.items()
                           if isinstance(v, (int, float)) and k not in ("step", "loss")}
        super().log(logs, start_time)

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        cfg, d = self.cfg, self.cfg.defender
        t0 = time.perf_counter()
        step = self.state.global_step  # 0-based index of the step in progress
        batch = inputs["batch"].to(self.args.device)
        peft_model = self.model  # hooks and disable_adapter act on the unwrapped model
        model.train()
        row: dict[str, Any] = {}
        result = None
        if self.method.adversarial:
            result = attack(peft_model, batch, cfg.attack, self.lat.eps, self.lat.lr, autocast=self._autocast)
            row["attack_loss_start"], row["attack_loss_end"] = result.losses[0], result.losses[-1]
            for key, value in result.reach.items():
                row[f"reach/{key}"] = value
                if key in self.lat.norms:
                    row[f"reach_rel/{key}"] = value / self.lat.norms[key]
            self.lat.passes += cfg.attack.steps
            self.last_attack = (result, batch)
        benign, ref = self._benign_reference(step)
        if d.reset_optimizer:  # the authors re-initialise the defender's optimiser every step
            torch_optimizer: Any = getattr(self.optimizer, "optimizer", self.optimizer)  # inside accelerate's wrapper
            torch_optimizer.state.clear()
        scale = 1.0 / self.current_gradient_accumulation_steps
        with self.method.train_context(cfg, peft_model):
            for update in range(d.steps):
                loss, parts = self._defender_backward(model, batch, result, benign, ref, scale)
                self.lat.passes += 1
                if update < d.steps - 1:  # the last update is Trainer's (clip, optimizer and scheduler step)
                    self.accelerator.clip_grad_norm_(model.parameters(), self.args.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - t0
        self.lat.wall += elapsed
        row.update({f"defender_{k}": v for k, v in parts.items()})
        row["defender_loss"] = float(loss)
        row.update(step=step + 1, step_time=elapsed, fwd_bwd_passes=self.lat.passes, wall_time=self.lat.wall,
                   n_train_examples=len(self.train_dataset), examples_seen=(step + 1) * cfg.batch_size, **self.eps_row())
        self.row = row
        return loss.detach().to(self.args.device)

    # ------------------------------------------------------------------- the step
    def _autocast(self) -> Any:
        return self.accelerator.autocast() if self.accelerator.mixed_precision != "no" else nullcontext()

    def _benign_reference(self, step: int) -> tuple[Any, torch.Tensor | None]:
        """The step's benign batch and, for the KL term, the adapter-free model's logits on it."""
        d = self.cfg.defender
        if not (d.losses.get("kl") or d.losses.get("sft")):
            return None, None
        b = self.cfg.benign
        idx = batch_indices(len(self.benign), b.batch_size, self.cfg.seed + 17, step)
        benign = Collator(self.processing_class, b.max_tokens, b.max_response_tokens).batch(
            [self.benign[i] for i in idx]).to(self.args.device)
        if not d.losses.get("kl"):
            return benign, None
        with torch.no_grad(), self.model.disable_adapter(), self._autocast():
            return benign, completion_logits(self.model, benign)

    def _defender_backward(self, model: Any, batch: Any, result: Any, benign: Any, ref: torch.Tensor | None,
                           scale: float) -> tuple[torch.Tensor, dict[str, float]]:
        """One defender loss and its backward (not the optimiser step)."""
        d = self.cfg.defender
        parts: dict[str, float] = {}
        benign_loss = None
        if benign is not None:  # benign terms first, unperturbed; freed by the shared backward below
            with self._autocast():
                out = completion_logits(model, benign)
            benign_loss = out.new_zeros((), dtype=torch.float32)
            if ref is not None:
                value = kl_loss(out, ref, benign.completion_mask, direction=d.kl_direction)
                parts["kl"] = float(value.detach())
                benign_loss = benign_loss + d.losses["kl"] * value
            if d.losses.get("sft"):
                value = LOSSES["sft"](out, benign.completion_ids, benign.completion_mask)
                parts["sft"] = float(value.detach())
                benign_loss = benign_loss + d.losses["sft"] * value
        deltas, mask = (result.deltas, result.mask) if result is not None else (None, None)
        # backward inside the hook context: gradient checkpointing re-runs the hooked forward
        with perturbed(self.model, batch, deltas, mask):
            with self._autocast():
                logits = completion_logits(model, batch)
            if isinstance(batch, PairBatch):
                loss, main = pair_losses(logits, batch, d.losses, toward="chosen", away_min_logprob=d.away_min_logprob)
            else:  # responses (SFT methods): cross-entropy toward the response, weighted as "toward"
                value = LOSSES["toward"](logits, batch.completion_ids, batch.completion_mask)
                loss, main = d.losses.get("toward", 1.0) * value, {"toward": float(value.detach())}
            if benign_loss is not None:
                loss = loss + benign_loss
            self.accelerator.backward(loss * scale)
        return loss.detach(), main | parts

    # ------------------------------------------------------------------ helpers
    def eps_row(self) -> dict[str, float]:
        return {f"eps_abs/{k}": v for k, v in self.lat.eps.items()} | {f"token_norm/{k}": v for k, v in self.lat.norms.items()}

    def lora_state(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(self.model).items()}

    def set_lora_state(self, weights: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model, weights)


# ---------------------------------------------------------------------- building a run
def _check_run_dir(run: RunDir, config: TrainConfig) -> None:
    if not run.config_path.exists():
        return
    stored = run.read_config()
    try:  # through the config class, so a run saved before a new field or a renamed value still matches
        stored = config_from_dict(stored, source=str(run.config_path)).model_dump(mode="json")
    except LpaError:
        pass
    current = config.model_dump(mode="json")
    # ``out`` names this very folder: a run reached through another path (absolute vs relative, a moved
    # results tree) is the same run, so it resumes instead of being refused.
    ignore = {"progress", "report_to", "out"}
    diff = sorted(k for k in set(stored) | set(current) if k not in ignore and stored.get(k) != current.get(k))
    if diff:
        raise LpaError(
            f"{run.path} holds a run with a different config (fields: {', '.join(diff)}); "
            "use another --out or delete the folder."
        )


def _measure_epsilons(cfg: TrainConfig, model: Any, tokenizer: Any, examples: list[Any],
                      layers: list[Any]) -> lat_state.LatState:
    """Per-location epsilon and attacker lr; relative mode scales both by the measured token norm."""
    a = cfg.attack
    if not layers:
        return lat_state.LatState()
    if a.epsilon_mode == "absolute":
        return lat_state.LatState(eps={k: a.epsilon for k in layers}, lr={k: a.lr for k in layers})
    collate = Collator(tokenizer, cfg.max_prompt_tokens)
    device = next(model.parameters()).device
    batches = [collate.batch([examples[i] for i in batch_indices(len(examples), cfg.batch_size, cfg.seed, -1 - j)]).to(device)
               for j in range(a.norm_batches)]
    model.eval()
    # only adversarial methods get here, and they train on pairs: every batch is a PairBatch
    norms = measure_token_norms(model, batches, layers)  # type: ignore[arg-type]
    eps = {k: a.epsilon * v for k, v in norms.items()}
    size = hooks.hidden_size(model)
    # relative lr: a step of size lr * eps when every coordinate moves by the same amount
    return lat_state.LatState(norms=norms, eps=eps, lr={k: a.lr * e / size**0.5 for k, e in eps.items()})


def lora_model(model: Any, cfg: TrainConfig) -> Any:
    """Wrap ``model`` in a fresh LoRA adapter, the same way for every method (seeded init)."""
    from peft import LoraConfig, get_peft_model

    lora = cfg.lora
    torch.manual_seed(cfg.seed)
    return get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                            target_modules=lora.target_modules, task_type="CAUSAL_LM"))


_OWN_ARGS = ("output_dir", "max_steps", "per_device_train_batch_size", "learning_rate", "weight_decay", "max_grad_norm",
             "seed", "data_seed", "save_strategy", "save_steps", "logging_steps", "report_to", "remove_unused_columns")


def training_arguments(cfg: TrainConfig, run: RunDir, device: torch.device, dtype: torch.dtype) -> TrainingArguments:
    """TrainingArguments from the config (``trainer_args`` adds the rest: deepspeed, fsdp, optim, ...)."""
    clash = sorted(set(cfg.trainer_args) & set(_OWN_ARGS))
    if clash:
        raise LpaError(f"trainer_args may not set {', '.join(clash)}: use the lpa options (steps, batch_size, "
                       "defender.lr, defender.max_grad_norm, seed, save_every, report_to).")
    d = cfg.defender
    kwargs: dict[str, Any] = dict(
        output_dir=str(run.path), max_steps=cfg.steps, per_device_train_batch_size=cfg.batch_size,
        learning_rate=d.lr, weight_decay=d.weight_decay, max_grad_norm=d.max_grad_norm, lr_scheduler_type="constant",
        warmup_steps=0, optim="adamw_torch", seed=cfg.seed, data_seed=cfg.seed, logging_steps=1,
        save_strategy="steps", save_steps=cfg.save_every, save_total_limit=1, report_to=list(cfg.report_to) or "none",
        disable_tqdm=True, remove_unused_columns=False, dataloader_num_workers=0, use_cpu=device.type == "cpu",
        bf16=dtype == torch.bfloat16, gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    ) | dict(cfg.trainer_args)
    try:
        args = TrainingArguments(**kwargs)
    except (TypeError, ValueError) as exc:
        raise LpaError(f"Invalid trainer_args / report_to: {exc}") from None
    if args.gradient_accumulation_steps > 1 and d.steps > 1:
        raise LpaError("gradient_accumulation_steps > 1 needs defender.steps=1 (each step's M updates would "
                       "otherwise see a fraction of the batch); raise batch_size instead.")
    return args


def _save_adapter(model: Any, adapter: Path, run: RunDir) -> None:
    from lpa.io import atomic_path

    with atomic_path(adapter, directory=True) as tmp:
        model.save_pretrained(str(tmp))


def train(
    config: TrainConfig | dict[str, Any],
    *,
    callbacks: list[UserCallback | TrainerCallback] | None = None,
    model: Any = None,
    tokenizer: Any = None,
) -> TrainResult:
    """Train (or resume, or return the finished result of) the run in ``config.out``.

    ``callbacks``: ``TrainerCallback``s, or functions ``(step, model, tokenizer, run) -> dict | None``
    whose returned values join the step's metrics.
    """
    from lpa.io import run_lock

    cfg = config_from_dict(config) if isinstance(config, dict) else config
    if cfg.out is None:
        raise LpaError("No run directory: set out (--out RUN_DIR).")
    fresh = not Path(cfg.out).exists()
    run = RunDir.create(cfg.out)
    try:
        with run_lock(run.path):  # a second `lpa train` on the same --out is refused, not interleaved
            _check_run_dir(run, cfg)
            done = run / "result.json"
            if done.is_file():
                summary = json.loads(done.read_text(encoding="utf-8"))
                return TrainResult(run.path, run / "adapter", summary["steps_done"], summary.get("stopped"), summary)
            trainer = build_trainer(cfg, callbacks=callbacks, model=model, tokenizer=tokenizer)
            trainer.train(resume_from_checkpoint=str(trainer.resume_from) if trainer.resume_from is not None else None)
            return _finish(trainer)
    except BaseException:
        if fresh and run.path.is_dir() and not any(run.path.iterdir()):
            run.path.rmdir()  # a mistake found before anything was written leaves no empty --out behind
        raise


def build_trainer(
    cfg: TrainConfig,
    *,
    callbacks: list[UserCallback | TrainerCallback] | None = None,
    model: Any = None,
    tokenizer: Any = None,
) -> LatTrainer:
    """The run's :class:`LatTrainer`, with its LoRA model, data, epsilons and callbacks; ``resume_from``
    is the newest complete checkpoint in ``cfg.out`` (None for a fresh run)."""
    if cfg.out is None:
        raise LpaError("No run directory: set out (--out RUN_DIR).")
    method = METHODS.get(cfg.method)()
    run = RunDir.create(cfg.out)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    from lpa.models import load_model, resolve_device, resolve_dtype
    from lpa.models.loader import contiguous_lm_head_input

    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    args = training_arguments(cfg, run, device, dtype)  # validated before any model, data or compute
    if model is None:
        model, tokenizer = load_model(cfg.model, device=str(device), dtype=cfg.dtype)
    elif tokenizer is None:
        raise LpaError("Pass a tokenizer together with a model.")
    model.to(device)
    contiguous_lm_head_input(model)  # a model passed in did not come through load()
    examples = method.build_examples(cfg, tokenizer)
    if not examples:
        raise LpaError(f"Method {cfg.method!r} built no training examples.")
    anchors = method.anchors(cfg, tokenizer) if cfg.benign.anchors else []
    benign = anchors + (load_benign_chat(cfg.benign.source, cfg.data_dir or os.environ.get("LPA_DATA_DIR"))
                        if cfg.benign.source else [])
    d = cfg.defender
    if (d.losses.get("kl") or d.losses.get("sft")) and not benign:
        raise LpaError("The defender's kl/sft terms need benign data: set benign.source (e.g. 'builtin') "
                       "or benign.anchors=true with a layout that has anchor statements.")
    run.write_config(cfg)
    resume = lat_state.latest_checkpoint(run.path)
    if resume is not None:
        lat = lat_state.load(resume)
    else:
        layers = hooks.resolve_layers(model, cfg.attack.layers) if method.adversarial else []
        lat = _measure_epsilons(cfg, model, tokenizer, examples, layers)
    peft_model = lora_model(model, cfg)
    from lpa.training.selection import CheckpointSelection

    own = [CollapseGuard(), CheckpointSelection(), AdversaryMonitor(), PersonaDrift()]
    own += [c if isinstance(c, TrainerCallback) else FunctionCallback(c) for c in callbacks or []]
    own += [ProgressBar()] if cfg.progress else []
    trainer = LatTrainer(
        cfg=cfg, method=method, lat=lat, run=run, benign=benign, templates=method.templates(cfg, examples),
        model=peft_model, args=args, train_dataset=examples, processing_class=tokenizer,
        data_collator=method.collator(cfg, tokenizer),
        callbacks=[*own, MetricsFile()],
    )
    trainer.resume_from = resume
    return trainer


def _finish(trainer: LatTrainer) -> TrainResult:
    cfg, run, lat = trainer.cfg, trainer.run, trainer.lat
    step = trainer.state.global_step
    adapter = run / "adapter"
    summary = {
        "method": cfg.method, "steps_done": step, "stopped": trainer.stopped, "wall_time_s": lat.wall,
        "fwd_bwd_passes": lat.passes, "n_train_examples": len(trainer.train_dataset),
        "eps_abs": {str(k): v for k, v in lat.eps.items()}, "token_norms": {str(k): v for k, v in lat.norms.items()},
        "final_guard": lat.guard_stats, "adapter": "adapter",
    }
    if lat.guard_warnings:
        summary["guard_warnings"] = lat.guard_warnings
    if trainer.selection is not None:
        summary["selection"] = trainer.selection
    trainer.accelerator.wait_for_everyone()
    if trainer.args.should_save:
        model = trainer.model
        _save_adapter(model, adapter, run)
        if cfg.merge:
            merged = model.merge_and_unload()
            merged.save_pretrained(str(run / "merged"))
            trainer.processing_class.save_pretrained(str(run / "merged"))
        atomic_write_json(run / "result.json", summary)
    return TrainResult(run.path, adapter, step, trainer.stopped, summary, model=trainer.model)


__all__ = ["LatTrainer", "StepSampler", "TrainResult", "batch_indices", "build_trainer", "lora_model", "train",
           "training_arguments"]
