from __future__ import annotations

import json

import pytest

from lpa.errors import LpaError
from lpa.generation import GenerationSettings, format_chat, generate, generate_jsonl, read_prompts
from lpa.testing import NO_SYSTEM_TEMPLATE, tiny_model, tiny_tokenizer


def test_chat_template_used_with_system(tokenizer):
    text = format_chat(tokenizer, "Hello", system="Be nice.")
    assert text.startswith("<|im_start|>system\nBe nice.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")


def test_template_without_system_role_folds_system_into_user():
    tok = tiny_tokenizer(chat_template=NO_SYSTEM_TEMPLATE)
    text = format_chat(tok, "Hello", system="Be nice.")
    assert "<start_of_turn>user\nBe nice.\n\nHello<end_of_turn>" in text
    assert "system" not in text


def test_no_template_plain_format_and_prefill():
    tok = tiny_tokenizer(chat_template=None)
    text = format_chat(tok, "Hi", prefill="Sure, here is")
    assert text == "User: Hi\nAssistant:Sure, here is"


def test_batched_greedy_matches_one_at_a_time(llama, tokenizer):
    prompts = ["Hello there", "How do I bake bread? Tell me now please", "Yes"]
    settings = GenerationSettings(max_new_tokens=8, batch_size=3)
    batched = generate(llama, tokenizer, prompts, settings)
    single = [generate(llama, tokenizer, [p], settings.model_copy(update={"batch_size": 1}))[0] for p in prompts]
    assert [c.text for c in batched] == [c.text for c in single]
    assert all(c.completion_tokens <= 8 for c in batched)
    assert all(c.finish_reason in ("eos", "length") for c in batched)


def test_generation_is_deterministic_when_sampling_with_seed(llama, tokenizer):
    settings = GenerationSettings(max_new_tokens=6, do_sample=True, seed=3)
    first = generate(llama, tokenizer, ["Hello"], settings)[0].text
    second = generate(llama, tokenizer, ["Hello"], settings)[0].text
    assert first == second


def test_generate_jsonl_resumes(tmp_path, llama, tokenizer):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps({"id": f"p{i}", "prompt": f"Say {i}"}) for i in range(3)) + "\n")
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "p1", "text": "already"}) + "\n")
    settings = GenerationSettings(max_new_tokens=4)
    assert generate_jsonl(llama, tokenizer, prompts, out, settings, progress=False) == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["p0", "p1", "p2"]
    assert generate_jsonl(llama, tokenizer, prompts, out, settings, progress=False) == 0


def test_read_prompts_errors(tmp_path):
    with pytest.raises(LpaError, match="not found"):
        read_prompts(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no prompt"}\n')
    with pytest.raises(LpaError, match="row 1"):
        read_prompts(bad)


def test_generation_on_other_architectures(any_arch_model):
    tok = tiny_tokenizer()
    out = generate(any_arch_model, tok, ["Hi", "Hello there"], GenerationSettings(max_new_tokens=3))
    assert len(out) == 2


def test_tiny_model_seeds_differ():
    a, b = tiny_model("llama", seed=0), tiny_model("llama", seed=1)
    assert not (a.lm_head.weight == b.lm_head.weight).all()
