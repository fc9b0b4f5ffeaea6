"""Who the model is (issue 13 §2): one record from the loader, in every cache key."""

from __future__ import annotations

import pytest
import torch

from lpa.errors import LpaError
from lpa.io import read_jsonl
from lpa.models import ModelIdentity, identity_of, load, load_model
from lpa.testing import save_tiny_adapter, save_tiny_checkpoint, tiny_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt")


def test_load_returns_the_record_and_registers_it(checkpoint, tmp_path):
    loaded = load(str(checkpoint), device="cpu")
    ident = loaded.identity
    assert ident.model == str(checkpoint) and ident.adapter is None and ident.adapter_sha is None
    assert ident.dtype == "float32" and ident.revision is not None  # local weights are fingerprinted
    assert identity_of(loaded.model) == ident
    assert not hasattr(loaded.model, "lpa_spec")  # nothing hidden on the HF model any more
    save_tiny_adapter(checkpoint, tmp_path / "A", seed=1)
    model, _ = load_model(str(checkpoint), adapter=tmp_path / "A", device="cpu")
    adapted = identity_of(model)
    assert adapted.adapter == str(tmp_path / "A") and adapted.adapter_sha is not None
    assert adapted.key() != ident.key()
    with pytest.raises(AttributeError):
        ident.model = "other"  # frozen


def test_key_stays_compatible_with_records_written_before_it():
    """CPU float32 without adapter: the same key fields as the old {"model", "adapter"} pair."""
    assert ModelIdentity(model="smollm2-135m", dtype="float32").key() == {"model": "smollm2-135m", "adapter": None}
    assert ModelIdentity(model="m", dtype="bfloat16").key()["dtype"] == "bfloat16"


def test_weights_fingerprint_follows_the_weights(tmp_path):
    one = load(str(save_tiny_checkpoint(tmp_path / "a", seed=0)), device="cpu").identity
    two = load(str(save_tiny_checkpoint(tmp_path / "a", seed=1)), device="cpu").identity  # overwritten in place
    assert one.model == two.model and one.revision != two.revision


def test_unregistered_peft_model_is_not_its_base():
    """A LoRA wrapped in memory (training, persona fine-tuning) never shares the base model's key."""
    from peft import LoraConfig, get_peft_model

    base = tiny_model("llama")
    base_id = identity_of(base)
    wrapped = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    first = identity_of(wrapped)
    assert first.model == base_id.model and first.adapter_sha is not None and first.key() != base_id.key()
    with torch.no_grad():
        next(p for n, p in wrapped.named_parameters() if "lora_A" in n).add_(1.0)
    assert identity_of(wrapped).adapter_sha != first.adapter_sha


def test_models_built_elsewhere_differ_by_weights():
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("llama", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                  num_attention_heads=2, num_key_value_heads=2, vocab_size=64)
    torch.manual_seed(0)
    a = AutoModelForCausalLM.from_config(config)
    torch.manual_seed(1)
    b = AutoModelForCausalLM.from_config(config)
    assert identity_of(a).key() != identity_of(b).key()


def _suite():
    from lpa.eval.suite import EvalSuite

    return EvalSuite(benchmarks=[{"name": "smoke", "args": {"limit": 2}}], attacks=["direct"], judges=["keyword"],
                     generation={"max_new_tokens": 3}, bootstrap=10)


def test_eval_generations_are_keyed_on_the_adapter_and_its_content(checkpoint, tmp_path):
    """Base, then --adapter A, then A retrained in place, into one run folder: nothing is reused."""
    from lpa.eval.runner import evaluate

    out = tmp_path / "run"
    save_tiny_adapter(checkpoint, tmp_path / "A", seed=1)
    evaluate(_suite(), str(checkpoint), out_dir=out, device="cpu")
    n_base = len(read_jsonl(out / "generations.jsonl"))
    evaluate(_suite(), str(checkpoint), out_dir=out, device="cpu")
    assert len(read_jsonl(out / "generations.jsonl")) == n_base  # same model: all cached
    results = evaluate(_suite(), str(checkpoint), adapter=tmp_path / "A", out_dir=out, device="cpu")
    assert len(read_jsonl(out / "generations.jsonl")) == 2 * n_base
    assert results.meta["identity"]["adapter_sha"] is not None
    save_tiny_adapter(checkpoint, tmp_path / "A", seed=2)
    evaluate(_suite(), str(checkpoint), adapter=tmp_path / "A", out_dir=out, device="cpu")
    assert len(read_jsonl(out / "generations.jsonl")) == 3 * n_base


def test_an_adapter_named_by_relative_or_absolute_path_reuses_its_answers(checkpoint, tmp_path, monkeypatch):
    """``runs/A`` and ``$PWD/runs/A`` are one adapter: the second evaluation generates nothing."""
    from lpa.eval.runner import evaluate

    monkeypatch.chdir(tmp_path)
    save_tiny_adapter(checkpoint, tmp_path / "runs" / "A", seed=1)
    out = tmp_path / "run"
    first = evaluate(_suite(), str(checkpoint), adapter="runs/A", out_dir=out, device="cpu")
    n = len(read_jsonl(out / "generations.jsonl"))
    again = evaluate(_suite(), str(checkpoint), adapter=tmp_path / "runs" / "A", out_dir=out, device="cpu")
    assert len(read_jsonl(out / "generations.jsonl")) == n
    assert first.meta["identity"]["adapter"] == again.meta["identity"]["adapter"] == "runs/A"


def test_generate_jsonl_refuses_to_mix_models(checkpoint, tmp_path):
    from lpa.generation import GenerationSettings, generate_jsonl

    prompts = tmp_path / "p.txt"
    prompts.write_text("Hi\nHow are you?\n")
    out = tmp_path / "gen.jsonl"
    settings = GenerationSettings(max_new_tokens=3)
    base, tok = load_model(str(checkpoint), device="cpu")
    assert generate_jsonl(base, tok, prompts, out, settings, progress=False) == 2
    assert generate_jsonl(base, tok, prompts, out, settings, progress=False) == 0
    save_tiny_adapter(checkpoint, tmp_path / "A", seed=1)
    adapted, _ = load_model(str(checkpoint), adapter=tmp_path / "A", device="cpu")
    with pytest.raises(LpaError, match="another model"):
        generate_jsonl(adapted, tok, prompts, out, settings, progress=False)
    assert generate_jsonl(adapted, tok, prompts, tmp_path / "gen-a.jsonl", settings, progress=False) == 2
    assert read_jsonl(tmp_path / "gen-a.jsonl")[0]["identity"]["adapter"] == str(tmp_path / "A")


def test_self_judge_spec_names_the_judge_model(checkpoint, tmp_path):
    from lpa.persona.judges import NumberJudge

    base, tok = load_model(str(checkpoint), device="cpu")
    save_tiny_adapter(checkpoint, tmp_path / "A", seed=1)
    adapted, _ = load_model(str(checkpoint), adapter=tmp_path / "A", device="cpu")
    assert NumberJudge(base, tok).spec() != NumberJudge(adapted, tok).spec()


def test_cell_keys_of_finished_cells_stay_valid():
    """Finished cells of the scale study were keyed by the code before the identity record; keep them valid.

    Changing this value recomputes every finished cell of every study: don't, or make old markers count.
    """
    from pathlib import Path

    from lpa.experiments.grid import cell_key, cells
    from lpa.experiments.spec import load_spec

    spec = load_spec(Path(__file__).parents[1] / "experiments" / "scale.yaml")
    keys = [cell_key(spec, c) for c in cells(spec)[:3]]
    assert keys == ["235afd9879beeaa4", "60cd69e2168b5080", "ba8491fc680db5d3"]


def test_one_table_reader(tmp_path):
    """CSV, JSONL, JSON, YAML and TXT through lpa.io.read_table, with one clear error for bad input."""
    from lpa.io import read_table

    (tmp_path / "a.csv").write_text("prompt,label\nhi,benign\n")
    (tmp_path / "a.jsonl").write_text('{"prompt": "hi", "label": "benign"}\n')
    (tmp_path / "a.json").write_text('{"data": [{"prompt": "hi", "label": "benign"}]}')
    (tmp_path / "a.yaml").write_text("templates:\n  - {prompt: hi, label: benign}\n")
    for name in ("a.csv", "a.jsonl", "a.json", "a.yaml"):
        assert read_table(tmp_path / name) == [{"prompt": "hi", "label": "benign"}], name
    (tmp_path / "a.txt").write_text("hi\n\nthere\n")
    assert read_table(tmp_path / "a.txt") == [{"prompt": "hi", "line": 1}, {"prompt": "there", "line": 3}]
    (tmp_path / "bad.yaml").write_text("templates: [unclosed\n")
    with pytest.raises(LpaError, match="bad.yaml"):
        read_table(tmp_path / "bad.yaml")
    with pytest.raises(LpaError, match="under 'rows'"):
        read_table(tmp_path / "a.yaml", list_key="rows")
    with pytest.raises(LpaError, match=r"\.csv, \.jsonl"):
        read_table(tmp_path / "a.parquet")
