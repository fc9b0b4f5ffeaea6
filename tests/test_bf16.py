"""bf16 on tiny models: the dtype the GPU runs (dtype mismatches in hooks, the attacker and persona
steps show up here, on the CPU), and ``bench/gpu_check.py --tiny`` end to end."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from lpa.generation import GenerationSettings, generate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def llama_bf16(llama):
    return llama.to(torch.bfloat16)


@pytest.mark.slow
def test_gpu_check_runs_lat_step_generation_and_hours_in_bf16(tmp_path):
    loader = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(gpu_check)
    out = tmp_path / "gpu.json"
    results = gpu_check.main(["--tiny", "--models", "qwen3-8b", "--device", "cpu", "--out", str(out)])
    row = results["qwen3-8b"]
    assert row["attack_steps"] == 16 and row["defender_steps"] == 4  # the paper preset's K and M
    assert row["lat_step_s"] > 0 and row["gen_tok_s"] > 0 and row["forward_tok_s"] > 0
    hours = results["paper_hours"]
    assert hours["train_gpu_h"] > 0 and hours["total_gpu_h"] >= hours["train_gpu_h"]
    assert out.is_file()


def test_generation_and_attacks_in_bf16(llama_bf16, tokenizer, tmp_path):
    from lpa.eval.runner import evaluate_model
    from lpa.eval.suite import EvalSuite

    out = generate(llama_bf16, tokenizer, ["Hi", "How do I bake bread?"], GenerationSettings(max_new_tokens=4),
                   prefills=[None, "Sure"])
    assert all(c.completion_tokens >= 1 for c in out)
    suite = EvalSuite(benchmarks=["smoke"], attacks=["direct", "prefill"], judges=["keyword", "refusal-probe"], limit=3,
                      bootstrap=0, generation={"max_new_tokens": 3, "batch_size": 2}, backend={"name": "hf"})
    results = evaluate_model(llama_bf16, tokenizer, suite, tmp_path / "run", model_name="tiny-bf16")
    assert {r["judge"] for r in results.rows} >= {"keyword", "refusal-probe"}


def test_lat_attack_and_defender_step_in_bf16(llama_bf16, tokenizer):
    from peft import LoraConfig, get_peft_model

    from lpa import hooks
    from lpa.training.adversary import attack, completion_logits, pair_losses, perturbed
    from lpa.training.config import AttackSettings

    loader = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(gpu_check)
    model = get_peft_model(llama_bf16, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    batch = gpu_check.pair_batch(llama_bf16.config.vocab_size, 2, 6, 4, "cpu")
    settings = AttackSettings(layers=["embed", 0.5], steps=2, lr=0.1, epsilon=1.0, epsilon_mode="absolute")
    eps = {k: 1.0 for k in hooks.resolve_layers(model, settings.layers)}
    result = attack(model, batch, settings, eps)
    assert len(result.losses) == 2 and all(d.dtype == torch.float32 for d in result.deltas.values())
    with perturbed(model, batch, result.deltas, result.mask):
        loss, _ = pair_losses(completion_logits(model, batch), batch, {"toward": 1.0, "away": 1.0})
        loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_persona_activations_and_steering_in_bf16(llama_bf16, tokenizer):
    from lpa.persona import PersonaVector
    from lpa.persona.activations import response_means
    from lpa.persona.monitor import prompt_projections

    means = response_means(llama_bf16, tokenizer, ["Question"] * 2, ["I enjoy it.", "I do not."])
    assert torch.isfinite(means.float()).all()
    vec = PersonaVector("evil", (means[0] - means[1]).float(), layer=1)
    values = prompt_projections(llama_bf16, tokenizer, vec, ["Hi", "Hello there"])
    assert len(values) == 2 and all(v == v for v in values)
