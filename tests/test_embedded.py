"""Slow tests on the embedded SmolLM2-135M-Instruct model."""

from __future__ import annotations

import time

import pytest
import torch

from lpa import hooks
from lpa.generation import GenerationSettings, format_chat, generate
from lpa.models import load_model

pytestmark = pytest.mark.slow


def test_cached_load_is_fast_and_equal(embedded):
    model, _ = embedded
    start = time.perf_counter()
    again, _ = load_model("smollm2-135m", device="cpu")
    assert time.perf_counter() - start < 30  # the bench measures the real figure
    name = "model.layers.3.mlp.down_proj.weight"
    assert torch.equal(dict(model.named_parameters())[name], dict(again.named_parameters())[name])
    assert hooks.num_layers(model) == model.config.num_hidden_layers


def test_chat_template(embedded):
    _, tok = embedded
    text = format_chat(tok, "Hi", system="Be brief.")
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_greedy_is_deterministic_and_sensible(embedded):
    model, tok = embedded
    settings = GenerationSettings(max_new_tokens=12)
    first = generate(model, tok, ["What is the capital of France?"], settings)[0]
    second = generate(model, tok, ["What is the capital of France?"], settings)[0]
    assert first.text == second.text
    assert "Paris" in first.text


def test_hook_changes_output_then_restores(embedded):
    model, tok = embedded
    settings = GenerationSettings(max_new_tokens=8)
    prompt = ["Name a colour."]
    before = generate(model, tok, prompt, settings)[0].text
    direction = torch.randn(hooks.hidden_size(model), generator=torch.Generator().manual_seed(0))
    with hooks.add(model, 0.5, direction / direction.norm() * 400):
        steered = generate(model, tok, prompt, settings)[0].text
    after = generate(model, tok, prompt, settings)[0].text
    assert steered != before
    assert after == before
