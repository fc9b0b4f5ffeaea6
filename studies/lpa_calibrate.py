"""Calibrate the LAT attacker on a model: token norms, and what each (epsilon, lr) attack reaches.

Usage: python studies/lpa_calibrate.py [--model qwen2.5-coder-0.5b] [--preset embedded]
       [--eps 0.02 0.05 0.1] [--lr 0.25] [--batch 4]
For every relative epsilon it runs the attacker (K steps, the preset's locations) on one fixed
batch of the faithful layout's pairs and prints the attacker loss before/after (mean token CE
toward the rejected answer: lower = the rejected answer became more likely), the reach (mean
per-token L2 of delta) per location, and reach / token norm.  The authors' attacker reaches at most
K x lr x sqrt(H) = 16 x 1e-3 x sqrt(4096) ~ 1 in absolute units (METHOD.md section 1).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--preset", default="embedded")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.02, 0.05, 0.1, 0.2])
    parser.add_argument("--lr", type=float, nargs="+", default=None, help="Relative attacker lr(s) (default: the preset's).")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()

    from lpa import hooks
    from lpa.training.adversary import attack, completion_logits, pair_losses
    from lpa.training.base import METHODS, build_train_config
    from lpa.training.data import Collator
    from lpa.training.trainer import batch_indices, build_trainer

    cfg = build_train_config(None, [*args.set, "progress=false", "guard.every=0"], method="lpa", model=args.model,
                             preset=args.preset, out=tempfile.mkdtemp(prefix="lpa-cal-"), batch_size=args.batch)
    trainer = build_trainer(cfg)
    model, size, norms = trainer.model, hooks.hidden_size(trainer.model), trainer.lat.norms
    model.eval()
    examples = METHODS.get("lpa")().build_examples(cfg, trainer.processing_class)
    idx = batch_indices(len(examples), cfg.batch_size, cfg.seed, 0)
    batch = Collator(trainer.processing_class, cfg.max_prompt_tokens).batch([examples[i] for i in idx]).to(trainer.args.device)
    with torch.no_grad():
        clean = completion_logits(model, batch)
    toward_rejected = pair_losses(clean, batch, {"toward": 1.0}, toward="rejected")[1]["toward"]
    toward_chosen = pair_losses(clean, batch, {"toward": 1.0}, toward="chosen")[1]["toward"]
    print(f"model={args.model} hidden={size} threads={torch.get_num_threads()} K={cfg.attack.steps} batch={args.batch} "
          f"on_completion={cfg.attack.on_completion}")
    print("token norms: " + ", ".join(f"{k}={v:.1f}" for k, v in norms.items()))
    print(f"clean CE: rejected {toward_rejected:.3f}, chosen {toward_chosen:.3f} (mean per completion token)")
    for lr in args.lr or [cfg.attack.lr]:
        for rel in args.eps:
            eps = {k: rel * v for k, v in norms.items()}
            step = {k: lr * e / size**0.5 for k, e in eps.items()}
            settings = cfg.attack.model_copy(update={"epsilon": rel, "lr": lr})
            t0 = time.perf_counter()
            result = attack(model, batch, settings, eps, step)
            with torch.no_grad(), __import__("lpa.training.adversary", fromlist=["perturbed"]).perturbed(
                model, batch, result.deltas, result.mask
            ):
                final = completion_logits(model, batch)
            rej = pair_losses(final, batch, {"toward": 1.0}, toward="rejected")[1]["toward"]
            cho = pair_losses(final, batch, {"toward": 1.0}, toward="chosen")[1]["toward"]
            reach = ", ".join(f"{k}={result.reach[k]:.2f} ({result.reach[k] / norms[k]:.3f})" for k in eps)
            print(f"eps={rel:<5} lr={lr:<5} CE(rejected) {toward_rejected:.3f} -> {rej:.3f}  CE(chosen) {toward_chosen:.3f} -> "
                  f"{cho:.3f}  reach (rel): {reach}  [{time.perf_counter() - t0:.1f}s]")


if __name__ == "__main__":
    main()
