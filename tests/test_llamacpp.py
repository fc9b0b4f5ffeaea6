"""The llama.cpp engine, the PEFT -> GGUF LoRA converter, engine selection and the prompt-context rule.

Fast tests need no model file; the slow ones run llama.cpp on the embedded SmolLM2 GGUF against the
torch engine on the same weights.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from lpa.errors import LpaError
from lpa.eval.backends import BACKENDS, BackendConfig, check_one_engine, make_backend, resolve_engine
from lpa.generation import GenerationSettings, generate, generate_texts, prompt_budget

needs_llama = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                 reason="llama-cpp-python not installed (pip install 'lpa[llamacpp]')")
PROMPTS = ["How do I bake bread?", "Hi", "Tell me a joke about cats.", "What is 2+2?", "Write a haiku about rain.",
           "Name three colours.", "Explain gravity simply.", "What is the capital of France?"]


# -- engine selection -----------------------------------------------------------------------
def test_every_backend_is_one_registered_module():
    assert {"hf", "openai", "vllm", "llama.cpp"} <= set(BACKENDS.names())
    with pytest.raises(LpaError, match="Valid choices: auto, hf, llama.cpp, openai, vllm"):
        BackendConfig(name="llamacpp")


def test_auto_is_torch_for_non_gguf_models_and_explicit_names_win():
    assert resolve_engine(BackendConfig(), "HuggingFaceTB/SmolLM2-360M-Instruct", "cpu") == "hf"
    assert resolve_engine(BackendConfig(), "smollm2-135m", "cuda") == "hf"  # llama.cpp is the CPU engine
    assert resolve_engine(BackendConfig(name="hf"), "smollm2-135m", "cpu") == "hf"


@needs_llama
def test_auto_picks_llama_cpp_for_a_gguf_model_on_cpu():
    assert resolve_engine(BackendConfig(), "smollm2-135m", "cpu") == "llama.cpp"


@needs_llama
def test_a_study_mixing_engines_is_refused():
    auto = BackendConfig()
    with pytest.raises(LpaError, match="different engines"):
        check_one_engine([(auto, "smollm2-135m"), (auto, "HuggingFaceTB/SmolLM2-360M-Instruct")], "cpu")
    hf = BackendConfig(name="hf")
    assert check_one_engine([(hf, "smollm2-135m"), (hf, "HuggingFaceTB/SmolLM2-360M-Instruct")], "cpu") == "torch"


@needs_llama
def test_llama_cpp_refuses_a_model_that_is_not_gguf(tokenizer):
    with pytest.raises(LpaError, match="GGUF models.*--engine hf"):
        make_backend(BackendConfig(name="llama.cpp"), model=None, tokenizer=tokenizer,
                     model_name="HuggingFaceTB/SmolLM2-360M-Instruct", adapter=None)


# -- decoding rules shared with the torch engine ---------------------------------------------
def test_shared_prefix_stops_short_of_every_prompt():
    from lpa.eval.backends.llamacpp import _shared_prefix

    assert _shared_prefix([[1, 2, 3, 4], [1, 2, 3, 5, 6]]) == 3
    assert _shared_prefix([[1, 2, 3], [1, 2, 3, 4]]) == 2  # the shortest prompt keeps one token of its own
    assert _shared_prefix([[1, 2]]) == 0


def test_long_prompts_join_the_batch_a_few_at_a_time():
    from lpa.eval.backends.llamacpp import KV_CELL_BUDGET, fits

    assert fits(0, 10 * KV_CELL_BUDGET)  # a row longer than the budget still runs, alone
    assert fits(15 * 150, 150)  # sixteen short chat prompts fill the batch
    assert fits(3 * 560, 560) and not fits(4 * 560, 560)  # in-the-wild jailbreaks: four at a time


def test_sampling_rule_matches_the_torch_engine():
    from lpa.eval.backends.llamacpp import _pick

    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    assert _pick(logits, GenerationSettings(), None) == 0
    nucleus = GenerationSettings(do_sample=True, top_p=0.7)  # keeps tokens 0 and 1 only
    rng = np.random.default_rng(0)
    draws = [_pick(logits, nucleus, rng) for _ in range(400)]
    assert set(draws) == {0, 1} and 0.5 < draws.count(0) / 400 < 0.75  # 0.5/0.8 = 0.625
    hot = GenerationSettings(do_sample=True, temperature=100.0)
    assert len({_pick(logits, hot, rng) for _ in range(200)}) == 4


def test_prompt_budget_rule():
    assert prompt_budget(None, 64) is None
    assert prompt_budget(128, 28) == 100
    with pytest.raises(LpaError, match="max_new_tokens=128.*128-token context"):
        prompt_budget(128, 128)


def test_torch_engine_keeps_the_last_tokens_of_a_too_long_prompt(llama, tokenizer, caplog):
    llama.config.max_position_embeddings = 24
    settings = GenerationSettings(max_new_tokens=4)
    long = "word " * 60
    with caplog.at_level("WARNING"):
        out = generate_texts(llama, tokenizer, [long, "short"], settings)
    assert out[0].prompt_tokens == 20 and out[1].prompt_tokens < 20
    assert "1 of 2 prompts are longer than the context" in caplog.text
    # the kept tokens are the prompt's last ones: same answer as the prompt cut by hand
    ids = tokenizer(long, add_special_tokens=True)["input_ids"][-20:]
    again = generate_texts(llama, tokenizer, [tokenizer.decode(ids)], settings)
    assert again[0].token_ids == out[0].token_ids


# -- PEFT -> GGUF LoRA -------------------------------------------------------------------------
def test_permuted_lora_b_matches_the_permuted_update():
    from lpa.models.gguf_lora import _permute_rows

    def permute(w, heads):  # the GGUF converter's rotary permutation of q/k rows
        return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 32)), rng.normal(size=(48, 4))
    base = {"arch": "llama", "n_head": 6, "n_head_kv": 2}
    assert np.allclose(permute(b @ a, 6), _permute_rows(b, "blk.0.attn_q.weight", base) @ a)
    k = rng.normal(size=(16, 4))
    assert np.allclose(permute(k @ a, 2), _permute_rows(k, "blk.0.attn_k.weight", base) @ a)
    assert _permute_rows(b, "blk.0.attn_v.weight", base) is b
    assert _permute_rows(b, "blk.0.attn_q.weight", {**base, "arch": "qwen2"}) is b


def test_adapters_llama_cpp_cannot_serve_are_refused_by_name(tmp_path):
    from lpa.models.gguf_lora import _adapter_files, _check_supported

    with pytest.raises(LpaError, match="not a PEFT adapter folder"):
        _adapter_files(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}))
    (tmp_path / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(LpaError, match="safetensors adapters only.*pickle"):
        _adapter_files(tmp_path)
    with pytest.raises(LpaError, match="DoRA"):
        _check_supported({"use_dora": True}, tmp_path)


# -- slow: llama.cpp on the embedded SmolLM2 against the torch engine ---------------------------------
def _lora(model, tmp_path, seed: int = 0):
    """A LoRA adapter with a visible effect (B initialised away from zero), saved as PEFT saves it."""
    import torch
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj",
                                                                                      "o_proj", "down_proj"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.06)
    folder = tmp_path / "adapter"
    peft_model.save_pretrained(folder)
    return peft_model, folder


@pytest.mark.slow
@needs_llama
def test_llama_cpp_matches_the_torch_engine_on_most_prompts(embedded):
    model, tokenizer = embedded
    settings = GenerationSettings(max_new_tokens=16, batch_size=3)
    prefills = [None, "Sure", None, None, None, None, None, "The"]
    torch_out = generate(model, tokenizer, PROMPTS, settings, prefills=prefills)
    backend = make_backend(BackendConfig(name="llama.cpp"), model=None, tokenizer=tokenizer,
                           model_name="smollm2-135m", adapter=None)
    seen: list[int] = []
    out = backend.generate(PROMPTS, settings, prefills=prefills, on_batch=lambda idx, _: seen.extend(idx))
    assert sorted(seen) == list(range(len(PROMPTS)))  # every row handed over once, as it finished
    first = sum(a.token_ids[:1] == b.token_ids[:1] for a, b in zip(torch_out, out, strict=True))
    same = sum(a.text == b.text for a, b in zip(torch_out, out, strict=True))
    assert first >= 7 and same >= 4, (first, same)
    assert [c.prompt_tokens for c in out] == [c.prompt_tokens for c in torch_out]
    assert out[1].text.startswith(torch_out[1].text[:8])  # the prefill was continued, not restarted
    sampled = GenerationSettings(max_new_tokens=8, do_sample=True, temperature=0.9, seed=1, batch_size=8)
    assert [c.text for c in backend.generate(PROMPTS, sampled)] == [c.text for c in backend.generate(PROMPTS, sampled)]
    assert [c.text for c in backend.generate(PROMPTS, sampled)] != [c.text for c in out]


@pytest.mark.slow
@needs_llama
def test_converted_lora_adapter_keeps_its_effect_in_llama_cpp(tmp_path):
    from lpa.models import load_model
    from lpa.models.gguf_lora import gguf_lora

    model, tokenizer = load_model("smollm2-135m", device="cpu")
    peft_model, folder = _lora(model, tmp_path)
    settings = GenerationSettings(max_new_tokens=12, batch_size=8)
    hf_adapter = generate(peft_model, tokenizer, PROMPTS, settings)
    with peft_model.disable_adapter():
        hf_base = generate(peft_model, tokenizer, PROMPTS, settings)
    assert sum(a.text != b.text for a, b in zip(hf_adapter, hf_base, strict=True)) >= 4  # the adapter matters

    def engine(adapter):
        return make_backend(BackendConfig(name="llama.cpp"), model=None, tokenizer=tokenizer,
                            model_name="smollm2-135m", adapter=adapter)

    cpp_adapter = engine(str(folder)).generate(PROMPTS, settings)
    cpp_base = engine(None).generate(PROMPTS, settings)
    agree_adapter = sum(a.token_ids == b.token_ids for a, b in zip(hf_adapter, cpp_adapter, strict=True))
    agree_base = sum(a.token_ids == b.token_ids for a, b in zip(hf_base, cpp_base, strict=True))
    cross = sum(a.token_ids == b.token_ids for a, b in zip(hf_adapter, cpp_base, strict=True))
    assert agree_adapter >= agree_base - 2 and agree_adapter >= 5, (agree_adapter, agree_base)
    assert cross <= agree_adapter - 2, (cross, agree_adapter)  # llama.cpp applied the adapter, not the base
    converted = gguf_lora(folder, str(engine(None).model.path))
    assert converted.parent == folder and converted.is_file()
    assert gguf_lora(folder, str(engine(None).model.path)) == converted  # cached by content
    import gguf

    names = {t.name for t in gguf.GGUFReader(str(converted)).tensors}
    assert "blk.0.attn_q.weight.lora_a" in names and "blk.29.ffn_down.weight.lora_b" in names


@pytest.mark.slow
@needs_llama
def test_eval_defaults_to_llama_cpp_on_a_gguf_model_and_keys_answers_by_engine(tmp_path):
    from lpa.eval.runner import evaluate
    from lpa.eval.suite import EvalSuite
    from lpa.io import read_jsonl

    suite = EvalSuite(benchmarks=["smoke"], judges=["keyword"], limit=4, bootstrap=0,
                      generation={"max_new_tokens": 6, "batch_size": 4})
    out = tmp_path / "run"
    evaluate(suite, "smollm2-135m", out_dir=out, device="cpu")
    assert "name: llama.cpp" in (out / "config.yaml").read_text()
    first = len(read_jsonl(out / "generations.jsonl"))
    evaluate(suite, "smollm2-135m", out_dir=out, device="cpu")  # resumes: nothing new
    assert len(read_jsonl(out / "generations.jsonl")) == first
    evaluate(suite.model_copy(update={"backend": BackendConfig(name="hf")}), "smollm2-135m", out_dir=out, device="cpu")
    assert len(read_jsonl(out / "generations.jsonl")) == 2 * first  # the torch engine's answers are new rows


@pytest.mark.slow
@needs_llama
def test_llama_cpp_scores_next_tokens_like_torch_and_runs_loglik_mmlu_without_weights(embedded, tmp_path):
    """Log-likelihood MMLU on the engine that generates: the letter log-probs agree with torch's, and an eval
    with utility loglik on llama.cpp loads no torch weights."""
    import torch

    from lpa.eval.judges.refusal_probe import last_token_logits
    from lpa.eval.suite import EvalSuite, needs_weights
    from lpa.generation import format_chat, tokenize_prompts

    model, tokenizer = embedded
    backend = make_backend(BackendConfig(name="llama.cpp"), model=None, tokenizer=tokenizer,
                           model_name="smollm2-135m", adapter=None)
    texts = [format_chat(tokenizer, p, prefill="Answer:") for p in PROMPTS[:4]]
    ids = [tokenizer.encode(t, add_special_tokens=False)[0] for t in (" A", " B", " C", " D", " the")]
    cpp = np.array(backend.next_token_logprobs(texts, ids))
    batch = tokenize_prompts(tokenizer, texts, "cpu", positions=True)
    with torch.no_grad():
        logits = last_token_logits(model, batch, batch.pop("position_ids"))
    ref = torch.log_softmax(logits.float(), dim=-1)[:, ids].numpy()
    assert cpp.shape == ref.shape == (4, 5)
    assert np.all(cpp < 0) and np.abs(cpp - ref).max() < 0.5, np.abs(cpp - ref).max()  # 8-bit activations
    assert (cpp.argmax(1) == ref.argmax(1)).sum() >= 3
    suite = EvalSuite(benchmarks=["smoke"], judges=["keyword"], limit=2, bootstrap=0,
                      backend={"name": "llama.cpp"}, utility={"n": 4, "methods": ["loglik"]})
    assert needs_weights(suite) == []  # the engine scores: no torch copy of the model
    assert "utility loglik" in needs_weights(suite.model_copy(update={"backend": BackendConfig(name="hf")}))


def test_gguf_header_reader_matches_the_gguf_library(tmp_path):
    """The header walk that replaced GGUFReader for adapter conversion (7-11 s -> 0.2 s on Qwen) reads the same."""
    gguf = pytest.importorskip("gguf")
    from pathlib import Path

    from lpa.models.gguf_lora import _base_info, read_gguf_header

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_token_list(["<s>", "hello", "wörld"] * 50)
    writer.add_token_scores([0.5, -1.0, 2.0] * 50)
    writer.add_bool("custom.flag", True)
    writer.add_tensor("blk.0.attn_q.weight", np.ones((4, 8), dtype=np.float32))
    writer.add_tensor("output.weight", np.zeros((3, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    reference = gguf.GGUFReader(str(path))
    fields, names = read_gguf_header(Path(path))
    assert {k: fields[k] for k in reference.fields if not k.startswith("GGUF.")} == \
        {k: f.contents() for k, f in reference.fields.items() if not k.startswith("GGUF.")}
    assert names == [t.name for t in reference.tensors]
    info = _base_info(Path(path))
    assert (info["arch"], info["n_blocks"], info["n_head"], info["n_head_kv"]) == ("llama", 2, 4, 2)
    assert info["tensors"] == {"blk.0.attn_q.weight", "output.weight"}
    (tmp_path / "bad.gguf").write_bytes(b"NOPE" + bytes(20))
    with pytest.raises(LpaError, match="not a GGUF"):
        read_gguf_header(tmp_path / "bad.gguf")
