"""GPU readiness check: LAT step time and peak memory, generation tok/s, and the GPU-hours of the paper spec.

Run on one H100/H200 with no network and no model files (the working tree is all it needs):

    python bench/gpu_check.py                 # Llama-3-8B-Instruct and Qwen3-8B shapes, bf16, <= 8 min
    python bench/gpu_check.py --tiny          # the same code on tiny configs (CPU, seconds): what the tests run

Models are random-initialised from the published configs written below (random weights cost the
same FLOPs and memory as trained ones).  For each model it measures, with lpa's own pieces
(:func:`lpa.training.adversary.attack`, the defender's pair losses and KL, the LoRA the trainer
builds, :func:`lpa.generation.decode_batch`):

* the LAT step of the ``paper`` preset: K=16 attacker steps at the preset's five locations, then
  M=4 defender updates (toward/away on the pair batch + KL on a benign batch), batch 16 pairs,
  LoRA r=64 on every linear layer; seconds per step and peak GPU memory;
* batched forward tokens/s (what GCG's candidate scoring costs) and greedy generation tokens/s at
  batch 64 (128 prompt + 128 new tokens, no early stop);
* from those, the GPU-hours of ``experiments/paper.yaml``: training (steps x cells x step time)
  plus evaluation (``bench/eval_speed.py --estimate``'s work count at the measured throughputs).

lpa needs pydantic, which a bare torch/transformers/peft/accelerate machine lacks: before the tree
travels, ``pip install --target bench/.gpu-deps pydantic`` here (about 8 MB); this script puts
that folder on ``sys.path`` when it exists.  Results go to stdout and ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT / "src", ROOT / "bench" / ".gpu-deps"):
    if extra.is_dir() and str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

# Published configs (config.json of meta-llama/Meta-Llama-3-8B-Instruct and Qwen/Qwen3-8B), written here
# so the check needs no hub access.
CONFIGS = {
    "llama3-8b": ("llama", dict(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=500000.0,
        bos_token_id=128000, eos_token_id=128009, tie_word_embeddings=False, hidden_act="silu")),
    "qwen3-8b": ("qwen3", dict(
        vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rms_norm_eps=1e-6, rope_theta=1000000.0,
        bos_token_id=151643, eos_token_id=151645, tie_word_embeddings=False, hidden_act="silu")),
}
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=512, bos_token_id=1, eos_token_id=2)


def build_model(name: str, tiny: bool, device: str, dtype: object) -> object:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type, values = CONFIGS[name]
    values = {**values, **TINY} if tiny else values
    config = AutoConfig.for_model(model_type, **values)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def pair_batch(vocab: int, pairs: int, prompt: int, completion: int, device: str) -> object:
    """A PairBatch of random tokens: rows 0..B-1 chosen, B..2B-1 rejected, full masks."""
    import torch

    from lpa.training.data import PairBatch

    g = torch.Generator().manual_seed(1)
    total = prompt + completion
    ids = torch.randint(5, vocab, (2 * pairs, total), generator=g)
    prompt_mask = torch.zeros(pairs, total, dtype=torch.long)
    prompt_mask[:, :prompt] = 1
    return PairBatch(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=torch.arange(total).repeat(2 * pairs, 1),
                     prompt_mask=prompt_mask, completion_mask=torch.ones(2 * pairs, completion, dtype=torch.long),
                     completion_ids=ids[:, prompt:].clone(), prompt_len=prompt).to(device)


def lat_step(model: object, args: argparse.Namespace, device: str) -> dict[str, float]:
    """Seconds per paper-preset LAT step (attack + M defender updates) and peak memory."""
    import torch
    from peft import LoraConfig, get_peft_model

    from lpa import hooks
    from lpa.training.adversary import attack, completion_logits, pair_losses, perturbed
    from lpa.training.config import PRESETS, AttackSettings, DefenderSettings, LoraSettings
    from lpa.training.losses import kl

    preset = PRESETS["paper"]
    settings = AttackSettings(**preset["attack"])
    defender = DefenderSettings(**preset["defender"])
    lora = LoraSettings(**preset["lora"])
    peft_model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=0.0,
                                                  target_modules=lora.target_modules, task_type="CAUSAL_LM"))
    if args.gradient_checkpointing:
        peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        peft_model.enable_input_require_grads()
    peft_model.train()
    vocab = model.config.vocab_size
    batch = pair_batch(vocab, args.pairs, args.prompt_tokens, args.completion_tokens, device)
    benign = pair_batch(vocab, args.pairs // 2 or 1, args.prompt_tokens, args.completion_tokens, device)
    eps = {key: settings.epsilon for key in hooks.resolve_layers(peft_model, settings.layers)}
    optimiser = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=defender.lr)
    times = []
    for step in range(args.lat_steps + 1):  # the first step warms up kernels and the allocator
        _sync(device)
        if step == 1:
            _reset_peak(device)
        start = time.perf_counter()
        result = attack(peft_model, batch, settings, eps)
        with torch.no_grad(), peft_model.disable_adapter():
            ref = completion_logits(peft_model, benign)
        for _ in range(defender.steps):
            out = completion_logits(peft_model, benign)
            benign_loss = defender.losses.get("kl", 0.0) * kl(out, ref, benign.completion_mask)
            with perturbed(peft_model, batch, result.deltas, result.mask):
                logits = completion_logits(peft_model, batch)
                loss, _ = pair_losses(logits, batch, defender.losses, toward="chosen")
                (loss + benign_loss).backward()
            torch.nn.utils.clip_grad_norm_(peft_model.parameters(), 1.0)
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)
        _sync(device)
        times.append(time.perf_counter() - start)
    peft_model.unload()  # the base model, without LoRA layers, for the generation measurement
    measured = times[1:] or times
    return {"lat_step_s": sum(measured) / len(measured), "lat_peak_gib": _peak_gib(device),
            "attack_steps": settings.steps, "defender_steps": defender.steps, "pairs": args.pairs}


def forward_tok_s(model: object, args: argparse.Namespace, device: str) -> float:
    import torch

    ids = torch.randint(5, model.config.vocab_size, (args.forward_batch, args.prompt_tokens), device=device)
    with torch.inference_mode():
        model(input_ids=ids[:2], logits_to_keep=1)
        _sync(device)
        start = time.perf_counter()
        for _ in range(args.repeats):
            model(input_ids=ids, logits_to_keep=1)
        _sync(device)
    return ids.numel() * args.repeats / (time.perf_counter() - start)


def generation_tok_s(model: object, args: argparse.Namespace, device: str) -> float:
    import torch

    from lpa.generation import GenerationSettings, decode_batch

    ids = torch.randint(5, model.config.vocab_size, (args.gen_batch, args.prompt_tokens), device=device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    settings = GenerationSettings(max_new_tokens=args.new_tokens, batch_size=args.gen_batch)
    decode_batch(model, {k: v[:2] for k, v in batch.items()}, settings.model_copy(update={"max_new_tokens": 2}), [])
    _sync(device)
    start = time.perf_counter()
    out = decode_batch(model, batch, settings, [])  # no stop tokens: every row writes all new tokens
    _sync(device)
    return sum(len(row) for row in out) / (time.perf_counter() - start)


def paper_hours(results: dict[str, dict[str, float]], spec: Path) -> dict[str, float]:
    """GPU-hours of the paper spec: LAT training at the measured step time, evaluation at the measured throughputs."""
    import importlib.util
    import io
    from contextlib import redirect_stdout

    from lpa.config import build_config
    from lpa.experiments.spec import ExperimentSpec

    paper = build_config(ExperimentSpec, spec, [])
    model = next(iter(results))  # the spec's model is Llama-3-8B; its figures come first
    step_s = results[model]["lat_step_s"]
    steps = {m.name: int((m.train or {}).get("steps") or 20) for m in paper.methods if m.method != "base"}
    # LAT methods pay K + M passes per step; the SFT-like ones only M (the defender updates)
    k, m_steps = results[model]["attack_steps"], results[model]["defender_steps"]
    per_step = {name: step_s if entry.method in ("lpa", "lat-harmful") else step_s * m_steps / (k + m_steps)
                for name, entry in ((e.name, e) for e in paper.methods if e.method != "base")}
    train_h = sum(steps[n] * per_step[n] for n in steps) * len(paper.seeds) * len(paper.models) / 3600
    loader = importlib.util.spec_from_file_location("eval_speed", ROOT / "bench" / "eval_speed.py")
    eval_speed = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(eval_speed)
    text = io.StringIO()
    with redirect_stdout(text):
        eval_speed.estimate(argparse.Namespace(estimate=str(spec), gen_tok_s=results[model]["gen_tok_s"],
                                               fwd_tok_s=results[model]["forward_tok_s"], mean_tokens_frac=1.0))
    print(text.getvalue().rstrip())
    line = next((x for x in text.getvalue().splitlines() if x.startswith("hours at")), "")
    eval_h = float(line.split("=")[-1].split("h")[0].replace(",", "")) if "=" in line else float("nan")
    return {"train_gpu_h": train_h, "eval_gpu_h": eval_h, "total_gpu_h": train_h + eval_h}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny configs (CPU tests); same code path")
    parser.add_argument("--models", default="llama3-8b,qwen3-8b")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--pairs", type=int, default=16, help="pair batch (the paper preset's batch_size)")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--completion-tokens", type=int, default=64)
    parser.add_argument("--lat-steps", type=int, default=2, help="timed LAT steps after one warm-up")
    parser.add_argument("--gen-batch", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--forward-batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gradient-checkpointing", action="store_true", help="if the LAT step does not fit")
    parser.add_argument("--spec", default=str(ROOT / "experiments" / "paper.yaml"))
    parser.add_argument("--out", default=None, help="also write the figures here (JSON)")
    args = parser.parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    if args.tiny:
        args.pairs, args.prompt_tokens, args.completion_tokens = min(args.pairs, 2), 16, 8
        args.gen_batch, args.new_tokens, args.forward_batch, args.repeats = 4, 4, 4, 1
        args.lat_steps = 1
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    print(f"gpu_check on {name}, {args.dtype}, {'tiny configs' if args.tiny else 'published configs'}", flush=True)
    results: dict[str, dict[str, float]] = {}
    for model_name in args.models.split(","):
        start = time.perf_counter()
        model = build_model(model_name, args.tiny, device, dtype)
        row = lat_step(model, args, device)
        row["forward_tok_s"] = forward_tok_s(model, args, device)
        row["gen_tok_s"] = generation_tok_s(model, args, device)
        row["wall_s"] = time.perf_counter() - start
        results[model_name] = row
        print(f"{model_name}: LAT step (K={row['attack_steps']}, M={row['defender_steps']}, {args.pairs} pairs) "
              f"{row['lat_step_s']:.2f} s, peak {row['lat_peak_gib']:.1f} GiB; forward {row['forward_tok_s']:,.0f} tok/s; "
              f"generation at batch {args.gen_batch}: {row['gen_tok_s']:,.0f} tok/s ({row['wall_s']:.0f} s)", flush=True)
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    hours = paper_hours(results, Path(args.spec))
    print(f"experiments/paper.yaml on this GPU: training {hours['train_gpu_h']:,.1f} h + evaluation "
          f"{hours['eval_gpu_h']:,.1f} h = {hours['total_gpu_h']:,.1f} GPU-hours (judging not included)")
    results["paper_hours"] = hours
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
