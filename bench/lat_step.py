"""Speed of one LAT step vs (K + M) plain forward+backward passes on the same batch.

Usage: python bench/lat_step.py [--model smollm2-135m] [--preset embedded] [--steps 3]
Runs the real trainer (transformers.Trainer subclass) for 1 + steps steps; a step is timed from
Trainer's ``on_step_begin`` to ``on_step_end`` (attack, M defender updates, clipping, optimiser and
scheduler; logging and checkpoints excluded).  Prints seconds per LAT step, where it goes
(attacker vs defender incl. the benign KL terms), and the ratio to (K + M) plain fwd+bwd passes
on the pair batches (target <= 1.15).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from transformers import TrainerCallback


class StepTimer(TrainerCallback):
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self.t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--preset", default="embedded")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()

    from lpa.training import trainer as trainer_mod
    from lpa.training.base import METHODS, build_train_config
    from lpa.training.data import Collator

    attack_s: list[float] = []
    original_attack = trainer_mod.attack

    def timed_attack(*a, **kw):
        t0 = time.perf_counter()
        out = original_attack(*a, **kw)
        attack_s.append(time.perf_counter() - t0)
        return out

    trainer_mod.attack = timed_attack

    out = tempfile.mkdtemp(prefix="lat-bench-")
    sets = [*args.set, "progress=false", "guard.every=0", f"save_every={args.steps + 100}"]
    cfg = build_train_config(None, sets, method="lpa", model=args.model, preset=args.preset, out=out, steps=1 + args.steps)
    timer = StepTimer()
    trainer = trainer_mod.build_trainer(cfg, callbacks=[timer])
    trainer.train()
    k, m = cfg.attack.steps, cfg.defender.steps
    lat = timer.seconds[1:]  # step 1 warms up
    model, tok = trainer.model, trainer.processing_class
    examples = METHODS.get("lpa")().build_examples(cfg, tok)
    collate = Collator(tok, cfg.max_prompt_tokens)
    model.train()
    plain = []
    for i in range(args.steps + 1):  # batch 0 warms up; 1..steps are the LAT steps' batches
        idx = trainer_mod.batch_indices(len(examples), cfg.batch_size, cfg.seed, i)
        batch = collate.batch([examples[j] for j in idx]).to(trainer.args.device)
        labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
        labels[:, : batch.prompt_len] = -100
        t0 = time.perf_counter()
        loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                     position_ids=batch.position_ids, labels=labels, use_cache=False).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        if i:
            plain.append(time.perf_counter() - t0)
    lat_s, plain_s = sum(lat) / len(lat), sum(plain) / len(plain)
    idx = trainer_mod.batch_indices(len(examples), cfg.batch_size, cfg.seed, 1)
    batch = collate.batch([examples[j] for j in idx])  # the first timed step's batch, for the header
    print(f"model={args.model} preset={args.preset} threads={torch.get_num_threads()} "
          f"batch={cfg.batch_size} pairs -> {batch.input_ids.shape[0]} rows x {batch.input_ids.shape[1]} tokens; "
          f"K={k} M={m} locations={list(trainer.lat.eps)}")
    print(f"LAT step: {lat_s:.3f} s (mean of {len(lat)}; steps {', '.join(f'{x:.2f}' for x in lat)})")
    att = sum(attack_s[1:]) / max(len(attack_s) - 1, 1)
    print(f"  attacker (K={k} passes): {att:.3f} s ({att / lat_s:.0%}); defender (M={m} passes + benign KL/SFT): "
          f"{lat_s - att:.3f} s ({(lat_s - att) / lat_s:.0%})")
    print(f"plain fwd+bwd: {plain_s:.3f} s; (K+M) x plain = {(k + m) * plain_s:.3f} s")
    print(f"ratio LAT / ((K+M) x plain) = {lat_s / ((k + m) * plain_s):.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
