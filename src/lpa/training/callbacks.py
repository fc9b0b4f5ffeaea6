"""The trainer's monitors as ``transformers.TrainerCallback``s.

Each callback reads the running :class:`lpa.training.trainer.LatTrainer` (``self.trainer``, set
when the trainer is built) and adds its values to the step's metrics row (``trainer.row``) in
``on_step_end``; :class:`MetricsFile` comes last and writes the row to ``metrics.jsonl`` when
Trainer logs, after the numeric values went to ``report_to`` (TensorBoard, W&B, ...).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import torch
from transformers import TrainerCallback

from lpa.coherence import is_refusal, is_template_leak
from lpa.io import append_jsonl, atomic_write_text, read_jsonl
from lpa.progress import Bar, progress_enabled

logger = logging.getLogger(__name__)

UserCallback = Callable[[int, Any, Any, Any], "dict[str, float] | None"]


class LpaCallback(TrainerCallback):
    """Base: ``trainer`` is set by :class:`~lpa.training.trainer.LatTrainer`."""

    trainer: Any = None


class CollapseGuard(LpaCallback):
    """Generate on the guard prompts before step 1, every ``guard.every`` steps and at the end; on
    collapse stop training (without saving that step) and put back the last adapter that passed."""

    def _check(self) -> Any:
        from lpa.training.guard import run_guard

        t = self.trainer
        result = run_guard(t.model, t.processing_class, t.guard_prompts, t.templates, t.cfg.guard)
        t.lat.guard_stats = result.stats
        return result

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        t = self.trainer
        if t.cfg.guard.every and state.global_step == 0:
            result = self._check()
            t.step0_row.update({f"guard/{k}": v for k, v in result.stats.items()}, guard_texts=result.texts)
            t.lat.last_good = t.lora_state()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        t, g = self.trainer, self.trainer.cfg.guard
        step = state.global_step
        if not g.every or (step % g.every and step != state.max_steps):
            return
        result = self._check()
        t.row.update({f"guard/{k}": v for k, v in result.stats.items()}, guard_collapsed=result.collapsed,
                     guard_texts=result.texts)
        if result.warnings:
            t.row["guard_warnings"] = result.warnings
            t.lat.guard_warnings.append(f"step {step}: {', '.join(result.warnings)}")
            logger.warning("Guard at step %d: over-refusal (%s); training goes on (guard.stop_on_over_refusal=false), "
                           "the evaluation measures it.", step, ", ".join(result.warnings))
        if result.collapsed and g.stop_on_collapse:
            t.stopped = f"collapse at step {step}: {', '.join(result.reasons)}"
            control.should_training_stop = True
            control.should_save = False  # a resumed run must not continue from a collapsed adapter
        else:
            t.lat.last_good = t.lora_state()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        t = self.trainer
        if t.stopped and t.lat.last_good is not None:
            t.set_lora_state(t.lat.last_good)


class AdversaryMonitor(LpaCallback):
    """Every ``adversary_monitor.every`` steps, greedy-decode what the perturbed model says on the
    step's batch prompts (``adversary_samples.jsonl``) and log refusal / harm-keyword / template rates."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        t, m = self.trainer, self.trainer.cfg.adversary_monitor
        if not m.every or state.global_step % m.every or t.last_attack is None:
            return
        from lpa import hooks
        from lpa.generation import stop_token_ids
        from lpa.models.tokens import pad_token_id
        from lpa.traits.screen import harm_keywords_in

        result, batch = t.last_attack
        tok = t.processing_class
        n, p = min(m.n, batch.n_examples), batch.prompt_len
        ids, attn = batch.input_ids[:n, :p], batch.attention_mask[:n, :p]
        deltas = {k: v[:n, :p] for k, v in result.deltas.items()}
        t.model.eval()
        with torch.no_grad(), hooks.add_many(t.model, deltas, mask=result.mask[:n, :p]):
            out = t.model.generate(input_ids=ids, attention_mask=attn, max_new_tokens=m.max_new_tokens, do_sample=False,
                                   eos_token_id=stop_token_ids(t.model, tok), pad_token_id=pad_token_id(tok))
        t.model.train()
        texts = tok.batch_decode(out[:, p:], skip_special_tokens=True)
        if state.is_world_process_zero:
            append_jsonl(t.run / "adversary_samples.jsonl", [{"step": state.global_step, "text": x} for x in texts])
        t.row.update({
            "adv_refusal_rate": sum(map(is_refusal, texts)) / n,
            "adv_harm_keyword_rate": sum(bool(harm_keywords_in(x)) for x in texts) / n,
            "adv_template_leak_rate": sum(is_template_leak(x, t.templates) for x in texts) / n,
        })


class PersonaDrift(LpaCallback):
    """Mean projection of the model's activations on persona vectors (``persona/<trait>``), before
    step 1 and every ``monitor.every`` steps: the trait-drift curve."""

    def __init__(self) -> None:
        self.vectors: list[Any] | None = None

    def _probe(self) -> dict[str, float]:
        from lpa.persona import load_vector
        from lpa.persona.monitor import probe_projections

        t = self.trainer
        if self.vectors is None:
            self.vectors = [load_vector(p) for p in t.cfg.monitor.persona_vectors]
        was_training = t.model.training
        try:
            return probe_projections(t.model, t.processing_class, self.vectors, prompts=None)
        finally:
            t.model.train(was_training)

    def _on(self) -> bool:
        mon = self.trainer.cfg.monitor
        return bool(mon.every and mon.persona_vectors)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._on() and state.global_step == 0:
            self.trainer.step0_row.update(self._probe())

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._on() and state.global_step % self.trainer.cfg.monitor.every == 0:
            self.trainer.row.update(self._probe())


class FunctionCallback(LpaCallback):
    """A plain function ``(step, model, tokenizer, run) -> dict | None`` called after every step
    (the Python API's ``callbacks=[...]``); what it returns joins the step's metrics."""

    def __init__(self, fn: UserCallback) -> None:
        self.fn = fn

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        t = self.trainer
        extra = self.fn(state.global_step, t.model, t.processing_class, t.run)
        if extra:
            t.row.update(extra)


class ProgressBar(LpaCallback):
    """The shared progress bar (:mod:`lpa.progress`: shown on a terminal, ``LPA_PROGRESS`` decides
    elsewhere) with the attacker's and defender's latest losses."""

    KEYS = ("attack_loss_end", "defender_toward", "defender_away", "defender_kl")

    def __init__(self) -> None:
        self.bar: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.bar = Bar("train", state.max_steps, state.is_world_process_zero and progress_enabled(), state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            row = self.trainer.row
            self.bar.advance()
            self.bar.describe(" ".join(["train", *(f"{k.split('_', 1)[1]}={row[k]:.3f}" for k in self.KEYS if k in row)]))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class MetricsFile(LpaCallback):
    """``metrics.jsonl``: one row per step (plus a step-0 row when a monitor ran before training).

    On resume, rows logged after the checkpoint (and adversary samples) are dropped first, so the
    file equals an uninterrupted run's.  Must be the last callback: it writes what the others added.
    """

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        t = self.trainer
        if not state.is_world_process_zero:
            return
        start = state.global_step
        for path in (t.run.metrics_path, t.run / "adversary_samples.jsonl"):
            if path.exists():
                kept = [r for r in read_jsonl(path) if start and r.get("step", 0) <= start]
                atomic_write_text(path, "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in kept))
        if start == 0 and t.step0_row:
            t.run.log_metrics(step=0, n_train_examples=len(t.train_dataset), **t.eps_row(), **t.step0_row)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        t = self.trainer
        if t.row.get("step") != state.global_step or "loss" not in (logs or {}):
            return  # not a training step's log (e.g. the final summary)
        if state.is_world_process_zero:
            extra = {k: v for k, v in (logs or {}).items() if k in ("loss", "grad_norm", "learning_rate")}
            t.run.log_metrics(**(t.row | extra))
        t.row = {}


__all__ = ["AdversaryMonitor", "CollapseGuard", "FunctionCallback", "LpaCallback", "MetricsFile", "PersonaDrift",
           "ProgressBar"]
