from __future__ import annotations

import json

import pytest
import torch

from lpa.errors import LpaError
from lpa.models import load_model, resolve_device, resolve_dtype
from lpa.testing import tiny_model, tiny_tokenizer


def _save_tiny(tmp_path, arch="llama"):
    model, tok = tiny_model(arch), tiny_tokenizer()
    model.save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    return tmp_path / "ckpt"


def test_load_local_checkpoint(tmp_path):
    path = _save_tiny(tmp_path)
    model, tok = load_model(str(path), device="cpu")
    assert model.dtype == torch.float32 and not model.training
    assert tok.padding_side == "left" and tok.pad_token is not None
    from lpa.models import identity_of

    assert identity_of(model).model == str(path) and identity_of(model).adapter is None


def test_missing_path_lists_aliases(tmp_path):
    with pytest.raises(LpaError, match="smollm2-135m"):
        load_model(str(tmp_path / "nope"))


@pytest.mark.parametrize("model_type", ["vit", "t5"])
def test_not_a_causal_lm(tmp_path, model_type):
    path = tmp_path / model_type
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": model_type}))
    with pytest.raises(LpaError, match="not a causal language model"):
        load_model(str(path))


def test_adapter_roundtrip(tmp_path):
    from peft import LoraConfig, get_peft_model

    path = _save_tiny(tmp_path)
    model, _ = load_model(str(path), device="cpu")
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[5, 6, 7]])
    expected = peft_model(ids).logits
    loaded, _ = load_model(str(path), device="cpu", adapter=tmp_path / "adapter")
    assert torch.allclose(loaded(ids).logits, expected, atol=1e-5)
    with pytest.raises(LpaError, match="adapter_config.json"):
        load_model(str(path), adapter=tmp_path)


def test_device_and_dtype_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(LpaError, match="Valid choices"):
        resolve_dtype("int3", torch.device("cpu"))
    with pytest.raises(LpaError, match="Valid choices"):
        resolve_device("tpu9")


def test_emulated_bf16_on_cpu_is_warned_once(monkeypatch, caplog):
    from lpa.models import loader

    monkeypatch.setattr(loader, "cpu_has_native_bf16", lambda: False)
    loader._warn_emulated_bf16.cache_clear()
    with caplog.at_level("WARNING", logger="lpa.models.loader"):
        resolve_dtype("bf16", torch.device("cpu"))
        resolve_dtype("bfloat16", torch.device("cpu"))
        resolve_dtype("fp32", torch.device("cpu"))
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1 and "emulates" in messages[0]
    loader._warn_emulated_bf16.cache_clear()


def test_unsupported_gguf_is_a_clear_error(tmp_path):
    import gguf

    path = tmp_path / "weird.gguf"
    writer = gguf.GGUFWriter(str(path), "weirdarch")
    writer.add_block_count(1)
    writer.add_tensor("w", __import__("numpy").zeros((2, 2), dtype="float32"))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(LpaError, match="GGUF"):
        load_model(str(path), device="cpu")


def test_output_layer_gets_contiguous_input_and_the_same_logits(llama):
    """The pre-hook that spares nn.Linear the batched-matmul copy of the vocabulary matrix changes no number."""
    import torch

    from lpa.models.loader import contiguous_lm_head_input

    ids = torch.randint(0, llama.config.vocab_size, (3, 9))
    with torch.no_grad():
        before = llama(input_ids=ids, logits_to_keep=4).logits
    seen = []
    contiguous_lm_head_input(llama)
    contiguous_lm_head_input(llama)  # idempotent: one hook
    llama.get_output_embeddings().register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous()))
    with torch.no_grad():
        after = llama(input_ids=ids, logits_to_keep=4).logits
    assert seen == [True] and torch.equal(before, after)
    assert len(llama.get_output_embeddings()._forward_pre_hooks) == 2
