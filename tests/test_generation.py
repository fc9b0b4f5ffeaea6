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
    first = tmp_path / "first.jsonl"
    first.write_text(json.dumps({"id": "p1", "prompt": "Say 1"}) + "\n")
    settings = GenerationSettings(max_new_tokens=4)
    assert generate_jsonl(llama, tokenizer, first, out, settings, progress=False) == 1
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


def test_lpa_engine_matches_hf_generate_when_rows_stop_early():
    from lpa.generation import GenerationSettings, format_chat, generate_texts
    from lpa.testing import tiny_model, tiny_tokenizer

    model, tok = tiny_model("llama"), tiny_tokenizer()
    texts = [format_chat(tok, p) for p in ["How do I bake bread?", "Hi", "Answer A B C D", "yes or no?"]]
    settings = GenerationSettings(max_new_tokens=10, batch_size=4)
    free = generate_texts(model, tok, texts, settings, engine="hf")
    # make a token that some rows emit early a stop token, so rows leave the batch at different steps
    chosen = free[0].token_ids[2]
    model.generation_config.eos_token_id = [model.generation_config.eos_token_id, chosen]
    hf = generate_texts(model, tok, texts, settings, engine="hf")
    ours = generate_texts(model, tok, texts, settings, engine="lpa")
    assert [c.text for c in ours] == [c.text for c in hf]
    assert [c.completion_tokens for c in ours] == [c.completion_tokens for c in hf]
    assert [c.finish_reason for c in ours] == [c.finish_reason for c in hf]
    assert "eos" in {c.finish_reason for c in ours} and ours[0].completion_tokens == 2


def test_lpa_engine_sampling_is_seeded():
    from lpa.generation import GenerationSettings, format_chat, generate_texts
    from lpa.testing import tiny_model, tiny_tokenizer

    model, tok = tiny_model("qwen2"), tiny_tokenizer()
    texts = [format_chat(tok, "Hi")] * 3
    one = GenerationSettings(max_new_tokens=8, do_sample=True, seed=1, top_p=0.9)
    a = [c.text for c in generate_texts(model, tok, texts, one)]
    b = [c.text for c in generate_texts(model, tok, texts, one)]
    c = [c.text for c in generate_texts(model, tok, texts, one.model_copy(update={"seed": 2}))]
    assert a == b and a != c


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma", "gpt2", "phi3"])
def test_shared_prompt_prefix_runs_once_with_the_same_outputs(arch):
    from lpa.generation import GenerationSettings, format_chat, generate_texts
    from lpa.testing import tiny_model, tiny_tokenizer

    model, tok = tiny_model(arch), tiny_tokenizer()
    system = "You are an honest assistant assessing your own personality. Answer the question."
    texts = [format_chat(tok, p, system=system) for p in ["How do I bake bread?", "Hi", "Answer A B C D", "yes"]]
    settings = GenerationSettings(max_new_tokens=8, batch_size=4)
    calls = []
    hook = model.register_forward_pre_hook(lambda _m, args, kwargs: calls.append(kwargs.get("input_ids").shape),
                                           with_kwargs=True)
    try:
        ours = generate_texts(model, tok, texts, settings, engine="lpa")
    finally:
        hook.remove()
    hf = generate_texts(model, tok, texts, settings, engine="hf")
    assert [c.text for c in ours] == [c.text for c in hf]
    assert calls[0][0] == 1 and calls[1][0] == 4  # the shared prefix once, then each prompt's own tokens
