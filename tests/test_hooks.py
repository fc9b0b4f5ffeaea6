from __future__ import annotations

import pytest
import torch

from lpa import hooks
from lpa.errors import LpaError
from lpa.testing import tiny_model


def _ids(model, n=6, batch=2):
    torch.manual_seed(1)
    return torch.randint(5, model.config.vocab_size, (batch, n))


def test_layers_found_for_every_architecture(any_arch_model):
    layers = hooks.decoder_layers(any_arch_model)
    assert len(layers) == hooks.num_layers(any_arch_model) == 2
    assert hooks.hidden_size(any_arch_model) == 64


def test_layers_found_through_peft_wrapper():
    from peft import LoraConfig, get_peft_model

    model = tiny_model("llama")
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert hooks.layers_template(wrapped).endswith("model.layers.{num}")
    assert len(hooks.decoder_layers(wrapped)) == 2


@pytest.mark.parametrize(
    ("spec", "expected"),
    [(0, 0), (-1, 1), (1.0, 1), (0.0, 0), ("embed", "embed"), ("1", 1), ("-2", 0), ("0.9", 1)],
)
def test_resolve_layer(llama, spec, expected):
    assert hooks.resolve_layer(llama, spec) == expected


@pytest.mark.parametrize("spec", [2, -3, 1.5, "middle", True])
def test_resolve_layer_out_of_range_names_valid_choices(llama, spec):
    with pytest.raises(LpaError, match="embed"):
        hooks.resolve_layer(llama, spec)


def test_record_matches_hidden_states(any_arch_model):
    ids = _ids(any_arch_model)
    with hooks.record(any_arch_model, ["embed", 0]) as store:
        out = any_arch_model(ids, output_hidden_states=True)
    assert torch.allclose(store[0], out.hidden_states[1], atol=1e-5)
    assert store["embed"].shape == (2, 6, 64)


def test_add_changes_output_and_is_removed(any_arch_model):
    ids = _ids(any_arch_model)
    with torch.no_grad():
        before = any_arch_model(ids).logits
        with hooks.add(any_arch_model, 0, torch.ones(64) * 5.0):
            steered = any_arch_model(ids).logits
        after = any_arch_model(ids).logits
    assert not torch.allclose(before, steered)
    assert torch.equal(before, after)


def test_add_with_mask_only_touches_masked_tokens(llama):
    ids = _ids(llama)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[:, 4:] = True
    with hooks.record(llama, [0]) as clean:
        llama(ids)
    delta = torch.randn(2, 6, 64)
    with hooks.add(llama, "embed", delta, mask=mask), hooks.record(llama, ["embed"]) as edited:
        llama(ids)
    with hooks.record(llama, ["embed"]) as plain:
        llama(ids)
    diff = (edited["embed"] - plain["embed"]).abs().sum(-1)
    assert torch.all(diff[:, :4] == 0) and torch.all(diff[:, 4:] > 0)
    assert clean[0].shape == (2, 6, 64)


def test_hooks_removed_after_exception(llama):
    ids = _ids(llama)
    before = llama(ids).logits
    with pytest.raises(RuntimeError, match="boom"):
        with hooks.add(llama, 1, torch.ones(64)):
            raise RuntimeError("boom")
    assert torch.equal(before, llama(ids).logits)
    assert all(not layer._forward_hooks for layer in hooks.decoder_layers(llama))


def test_add_rejects_wrong_hidden_size(llama):
    with pytest.raises(LpaError, match="hidden size"):
        with hooks.add(llama, 0, torch.ones(7)):
            pass


def test_gradients_flow_into_delta(llama):
    ids = _ids(llama)
    delta = torch.zeros(2, 6, 64, requires_grad=True)
    with hooks.add(llama, 0, delta):
        loss = llama(ids).logits.sum()
    loss.backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0
