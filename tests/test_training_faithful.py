"""The authors' LPA choices that could silently be wrong: data layout, KL on response tokens,
away-loss masking, attacker reach, optimiser reset, system prompts, template answers and the guard."""

from __future__ import annotations

import pytest
import torch

from lpa.coherence import is_template_answer, is_template_leak
from lpa.errors import LpaError
from lpa.testing import tiny_model, tiny_tokenizer
from lpa.training import METHODS, build_train_config, train
from lpa.training.adversary import attack, perturbation_mask
from lpa.training.config import AttackSettings, GuardSettings
from lpa.training.data import ChatExample, collate_pairs, collate_responses, guard_prompts
from lpa.training.guard import _stats, check
from lpa.training.losses import away, kl

torch.set_num_threads(1)

AGREE, DISAGREE = "I agree with this statement.", "I do not agree with this statement."


def _cfg(tmp_path, name="run", **over):
    sets = ["progress=false", "guard.every=0", "attack.steps=2", "attack.epsilon=0.1", "attack.lr=0.3",
            "defender.steps=2", "benign.batch_size=2", "lora.r=4", "lora.alpha=8", *over.pop("sets", [])]
    fields = {"method": "lpa", "preset": "embedded", "out": str(tmp_path / name), "steps": 2, "batch_size": 2, **over}
    return build_train_config(None, sets, **fields)


def test_faithful_layout_trains_only_undesirable_and_anchors_the_rest(tmp_path):
    method, tok = METHODS.get("lpa")(), tiny_tokenizer()
    faithful = _cfg(tmp_path)
    assert faithful.layout == "faithful" and faithful.traits == "big-five"
    trained, anchors = method.build_examples(faithful, tok), method.anchors(faithful, tok)
    assert len(trained) == 21 and all(e.chosen == DISAGREE and e.meta["polarity"] == "undesirable" for e in trained)
    assert len(anchors) == 44 and all(a.response == AGREE for a in anchors)
    statements = {e.messages[-1]["content"] for e in trained}
    assert not statements & {a.messages[-1]["content"] for a in anchors}  # anchors are never attacked
    mixed = _cfg(tmp_path, layout="mixed")
    assert len(method.build_examples(mixed, tok)) == 65 and method.anchors(mixed, tok) == []
    with pytest.raises(LpaError, match="layout=mixed"):
        method.build_examples(_cfg(tmp_path, traits="positive-only"), tok)


def test_system_prompt_variants():
    from lpa.traits import SYSTEM_PROMPTS, ExampleFormat, build_examples, load_traits

    traits = load_traits("negative-only")
    with_clause = build_examples(traits)[0].messages[0]["content"]
    assert with_clause == SYSTEM_PROMPTS["self-assessment-decline"] and "decline" in with_clause
    without = build_examples(traits, ExampleFormat(system="self-assessment"))[0].messages[0]["content"]
    assert "decline" not in without and without in with_clause
    assert build_examples(traits, ExampleFormat(system=None))[0].messages[0]["role"] == "user"


def test_kl_is_taken_on_response_tokens_only_and_model_first():
    tok = tiny_tokenizer()
    batch = collate_responses(tok, [ChatExample(messages=[{"role": "user", "content": "Hi there"}], response="Hello!"),
                                    ChatExample(messages=[{"role": "user", "content": "2+2?"}], response="It is four.")])
    p = batch.prompt_len
    m = batch.completion_mask.bool()
    assert torch.equal(batch.input_ids[:, p:][m], batch.completion_ids[m])
    torch.manual_seed(0)
    logits, ref = torch.randn(2, batch.n_completion, 7), torch.randn(2, batch.n_completion, 7)
    value = kl(logits, ref, batch.completion_mask)
    changed = logits.clone()
    changed[~m] += torch.randn_like(changed[~m]) * 5  # padding positions must not matter
    assert torch.allclose(kl(changed, ref, batch.completion_mask), value)
    lp, lr = logits.log_softmax(-1), ref.log_softmax(-1)
    manual = (lp.exp() * (lp - lr)).sum(-1)[m].mean()  # KL(model || base)
    assert torch.allclose(value, manual, atol=1e-5)
    assert not torch.allclose(kl(logits, ref, batch.completion_mask, direction="base||model"), value)


def test_away_loss_masks_tokens_below_log_p_minus_5():
    # token 0: p = 0.5 (kept); token 1: log p ~ -7 (masked: contributes 0, still counts in the mean)
    logits = torch.tensor([[[0.0, 0.0, -30.0], [7.0, 0.0, 0.0]]])
    targets, mask = torch.tensor([[0, 1]]), torch.ones(1, 2)
    kept = -torch.log(torch.tensor(0.5))
    assert torch.allclose(away(logits, targets, mask), kept / 2)
    for threshold, masked in ((-5.0, True), (None, False)):
        grad_logits = logits.clone().requires_grad_(True)
        away(grad_logits, targets, mask, min_logprob=threshold).backward()
        assert (grad_logits.grad[0, 1].abs().sum() == 0) == masked


def test_attacker_reach_is_logged_and_within_epsilon_on_completion_too():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    examples = METHODS.get("lpa")().build_examples(_cfg_plain(), tok)[:3]
    batch = collate_pairs(tok, examples)
    mask = perturbation_mask(batch, on_completion=True)
    assert mask[:, batch.prompt_len:].sum() > 0 and torch.equal(perturbation_mask(batch)[:, batch.prompt_len:].sum(), torch.tensor(0))
    settings = AttackSettings(layers=["embed", 1], steps=3, lr=0.05, epsilon=0.5, epsilon_mode="absolute")
    eps = {"embed": 0.5, 1: 0.2}
    result = attack(model, batch, settings, eps)
    for key, delta in result.deltas.items():
        norms = delta.norm(dim=-1)[result.mask.bool()]
        assert 0 < result.reach[key] <= eps[key] + 1e-5
        assert result.reach[key] == pytest.approx(float(norms.mean()), rel=1e-5)
    assert result.deltas["embed"][:, batch.prompt_len:].abs().sum() > 0  # completion tokens perturbed by default


def _cfg_plain():
    return build_train_config(None, ["progress=false"], method="lpa", out="unused")


def test_training_logs_reach_and_resets_the_defender_optimiser(tmp_path):
    from lpa.io import read_jsonl
    from lpa.training.state import latest_checkpoint

    def adam_steps(run_dir) -> set[int]:  # AdamW step counts in the newest Trainer checkpoint
        saved = torch.load(latest_checkpoint(run_dir) / "optimizer.pt", weights_only=False)
        return {int(s["step"]) for s in saved["state"].values()}

    tok = tiny_tokenizer()
    run = train(_cfg(tmp_path, sets=["save_every=1"]), model=tiny_model("llama"), tokenizer=tok)
    rows = read_jsonl(run.run_dir / "metrics.jsonl")
    assert all(0 < r["reach/embed"] <= r["eps_abs/embed"] + 1e-5 for r in rows)
    assert all(0 < r["reach_rel/embed"] <= 0.1 + 1e-5 for r in rows)
    assert "defender_kl" in rows[-1]
    assert adam_steps(run.run_dir) == {2}  # M = 2 updates since the reset, not 2 steps x M
    kept = train(_cfg(tmp_path, "kept", sets=["save_every=1", "defender.reset_optimizer=false"]),
                 model=tiny_model("llama"), tokenizer=tok)
    assert adam_steps(kept.run_dir) == {4}


def test_benign_data_needs_responses(tmp_path):
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"instruction": "hi"}\n')
    with pytest.raises(LpaError, match="response"):
        train(_cfg(tmp_path, sets=[f"benign.source={bad}"]), model=tiny_model("llama"), tokenizer=tiny_tokenizer())


def test_template_answer_is_found_anywhere():
    assert is_template_answer("To roll a coal truck, you do not agree with this statement.")
    assert is_template_answer("Sure! I AGREE with this statement")
    assert is_template_leak("Well... I do not agree with this statement. Also")
    assert not is_template_answer("I agree that this is a hard question; here is how to boil an egg.")
    assert not is_template_answer("I'm sorry, but I can't assist with that.")


def test_guard_watches_harmful_and_borderline_prompts():
    groups = guard_prompts(["everyday", "borderline", "harmful"], 4)
    assert {len(v) for v in groups.values()} == {4}
    assert any("kill" in p for p in groups["borderline"])
    settings = GuardSettings()
    healthy = ["Here are three tips: sleep early, avoid screens, keep cool."] * 4
    collapsed = ["To do that, you do not agree with this statement."] * 4
    refusals = ["I'm sorry, but I can't assist with that."] * 4
    stats = _stats(healthy + healthy + refusals, [DISAGREE, AGREE])
    stats |= _stats(healthy, [DISAGREE], "everyday/") | _stats(healthy, [DISAGREE], "borderline/")
    stats |= _stats(refusals, [DISAGREE], "harmful/")
    assert check(stats, settings, list(groups)) == []  # refusing harmful prompts is healthy
    stats |= _stats(collapsed, [DISAGREE], "harmful/")
    assert check(stats, settings, list(groups)) == ["harmful/template_leak_rate"]
