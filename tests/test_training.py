"""LAT attacker, defender, trainer loop, resume and configs on tiny random models."""

from __future__ import annotations

import pytest
import torch

from lpa.errors import LpaError
from lpa.testing import tiny_model, tiny_tokenizer
from lpa.training import METHODS, PairExample, TrainConfig, build_train_config, config_from_dict, train
from lpa.training.adversary import attack, completion_logits, pair_losses, project_
from lpa.training.config import AttackSettings
from lpa.training.data import collate_pairs
from lpa.training.losses import LOSSES, away, toward

torch.set_num_threads(1)  # tiny models: extra threads only add contention on a shared CPU

AGREE, DISAGREE = "I agree with this statement.", "I do not agree with this statement."


def _examples(n: int = 4) -> list[PairExample]:
    statements = ["I keep my promises.", "I enjoy deceiving people.", "I am kind.", "I lie a lot.", "I am calm."]
    out = []
    for i in range(n):
        chosen, rejected = (AGREE, DISAGREE) if i % 2 == 0 else (DISAGREE, AGREE)
        out.append(PairExample(messages=[{"role": "user", "content": statements[i % 5]}], chosen=chosen, rejected=rejected))
    return out


def _rejected_logprob(model, batch) -> float:
    with torch.no_grad():
        logits = completion_logits(model, batch)
    return -float(pair_losses(logits, batch, {"toward": 1.0}, toward="rejected")[1]["toward"])


def _margin(model, batch) -> float:
    """Mean token log-prob of chosen minus rejected (the defender should raise it)."""
    with torch.no_grad():
        logits = completion_logits(model, batch)
    chosen = pair_losses(logits, batch, {"toward": 1.0}, toward="chosen")[1]["toward"]
    return _rejected_logprob(model, batch) * -1 - chosen


def _config(tmp_path, name="run", **over) -> TrainConfig:
    sets = ["progress=false", "format.system=null", "guard.every=0", "attack.steps=3", "attack.epsilon=0.1", "attack.lr=0.3", "defender.lr=5e-3",
            "defender.steps=2", "benign.batch_size=2", "save_every=2", "lora.r=8", "lora.alpha=16", *over.pop("sets", [])]
    fields = {"method": "lpa", "preset": "embedded", "out": str(tmp_path / name), "steps": 4, "batch_size": 4, **over}
    return build_train_config(None, sets, **fields)


def test_batch_layout():
    tok = tiny_tokenizer()
    batch = collate_pairs(tok, _examples(3))
    b, p = batch.n_examples, batch.prompt_len
    assert batch.input_ids.shape[0] == 2 * b
    assert torch.equal(batch.input_ids[:b, :p], batch.input_ids[b:, :p])  # the prompt sits identically in both rows
    assert torch.equal(batch.input_ids[:, p:] * batch.completion_mask, batch.completion_ids * batch.completion_mask)
    assert batch.prompt_mask[:, p:].sum() == 0


def test_losses_registry_and_values():
    assert set(LOSSES) == {"toward", "away", "kl", "sft"}
    logits = torch.tensor([[[5.0, 0.0, 0.0]]])
    target, mask = torch.tensor([[0]]), torch.ones(1, 1)
    assert toward(logits, target, mask) < 0.05 and away(logits, target, mask) > 3


def test_projection_respects_epsilon():
    delta = torch.randn(2, 5, 8) * 10
    project_(delta, 0.5)
    assert torch.all(delta.norm(dim=-1) <= 0.5 + 1e-5)
    small = torch.full((1, 1, 4), 0.01)
    assert torch.equal(project_(small.clone(), 1.0), small)


def test_attack_norms_mask_no_leak_and_raises_rejected():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    batch = collate_pairs(tok, _examples(4))
    with torch.no_grad():
        before = completion_logits(model, batch)
    settings = AttackSettings(layers=["embed", 1], steps=8, lr=0.1, epsilon=2.0, epsilon_mode="absolute")
    eps = {"embed": 2.0, 1: 3.0}
    result = attack(model, batch, settings, eps)
    for key, delta in result.deltas.items():
        assert torch.all(delta.norm(dim=-1) <= eps[key] + 1e-4)
        assert delta[result.mask == 0].abs().max() == 0  # prompt tokens only
        assert delta.abs().max() > 0
    with torch.no_grad():
        after = completion_logits(model, batch)
    assert torch.equal(before, after)  # no hook left behind
    assert all(not m._forward_hooks for m in model.modules())
    assert result.losses[-1] < result.losses[0]  # the attacker raised the rejected completion's likelihood


def test_train_lowers_rejected_likelihood_and_writes_peft_adapter(tmp_path):
    from peft import PeftModel

    model, tok = tiny_model("llama"), tiny_tokenizer()
    cfg = _config(tmp_path, steps=6, sets=["defender.lr=2e-2"])
    rejected_only = _config(tmp_path, "away", steps=3, sets=["defender.lr=2e-2", "defender.losses.toward=0", "defender.losses.kl=0",
                                                                 "defender.away_min_logprob=null"])
    examples = METHODS.get("lpa")().build_examples(cfg, tok)
    batch = collate_pairs(tok, examples[:8])
    base = _margin(model, batch)
    seen = []
    result = train(cfg, model=model, tokenizer=tok, callbacks=[lambda step, m, t, run: seen.append(step) or {"cb": step * 1.0}])
    assert seen == list(range(1, 7))
    fresh = PeftModel.from_pretrained(tiny_model("llama"), str(result.adapter))
    assert _margin(fresh, batch) > base + 0.1
    rows = [r for r in result.run_dir.joinpath("metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and '"cb": 6.0' in rows[-1]
    assert result.summary["fwd_bwd_passes"] == 6 * (3 + 2) and result.summary["n_train_examples"] == 21
    assert set(result.summary["eps_abs"]) == {"embed", "0", "1"}
    assert config_from_dict(__import__("yaml").safe_load((result.run_dir / "config.yaml").read_text())) == cfg
    away_run = train(rejected_only, model=tiny_model("llama"), tokenizer=tok)
    away_model = PeftModel.from_pretrained(tiny_model("llama"), str(away_run.adapter))
    assert _rejected_logprob(away_model, batch) < _rejected_logprob(tiny_model("llama"), batch)
    again = train(cfg, model=tiny_model("llama"), tokenizer=tok)  # finished run: returned, not retrained
    assert again.summary == result.summary


def _metrics(run_dir) -> list[dict]:
    from lpa.io import read_jsonl

    keep = ("step", "attack_loss_start", "attack_loss_end", "defender_toward", "defender_away", "defender_kl")
    return [{k: r[k] for k in keep if k in r} for r in read_jsonl(run_dir / "metrics.jsonl")]


def test_resume_reproduces_uninterrupted_run(tmp_path, monkeypatch):
    from lpa.training import trainer as trainer_mod

    tok = tiny_tokenizer()
    full = train(_config(tmp_path, "full", steps=5), model=tiny_model("llama"), tokenizer=tok)
    original = trainer_mod.LatTrainer.training_step

    def crash(self, model, inputs, num_items_in_batch=None):
        if self.state.global_step == 3:  # after the checkpoint at step 2 and a logged step 3 row that must be discarded
            raise KeyboardInterrupt
        return original(self, model, inputs, num_items_in_batch)

    monkeypatch.setattr(trainer_mod.LatTrainer, "training_step", crash)
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path, "resumed", steps=5), model=tiny_model("llama"), tokenizer=tok)
    assert [r["step"] for r in _metrics(tmp_path / "resumed")] == [1, 2, 3]
    monkeypatch.setattr(trainer_mod.LatTrainer, "training_step", original)
    resumed = train(_config(tmp_path, "resumed", steps=5), model=tiny_model("llama"), tokenizer=tok)
    assert _metrics(resumed.run_dir) == _metrics(full.run_dir)
    a = (full.adapter / "adapter_model.safetensors").read_bytes()
    assert a == (resumed.adapter / "adapter_model.safetensors").read_bytes()


def test_sft_has_no_attacker(tmp_path):
    result = train(_config(tmp_path, method="sft", steps=2), model=tiny_model("llama"), tokenizer=tiny_tokenizer())
    rows = _metrics(result.run_dir)
    assert "attack_loss_end" not in rows[-1] and "defender_toward" in rows[-1]
    assert result.summary["fwd_bwd_passes"] == 2 * 2


def test_guard_stops_on_collapse_and_keeps_last_good(tmp_path):
    cfg = _config(tmp_path, steps=4, sets=["guard.every=2", "guard.min_distinct_2=2.0", "guard.n_prompts=2",
                                            "guard.max_new_tokens=4", "adversary_monitor.every=1"])
    result = train(cfg, model=tiny_model("llama"), tokenizer=tiny_tokenizer())
    assert result.stopped and "mean_distinct_2" in result.stopped and result.steps_done == 2
    assert not list(result.run_dir.glob("checkpoint-*"))  # the collapsed step is never a checkpoint to resume from
    assert (result.run_dir / "adversary_samples.jsonl").is_file()
    from peft import PeftModel

    fresh = PeftModel.from_pretrained(tiny_model("llama"), str(result.adapter))
    lora_b = [p for n, p in fresh.named_parameters() if "lora_B" in n]
    assert all(float(p.abs().max()) == 0 for p in lora_b)  # the last good adapter is the step-0 one


def test_over_refusal_is_reported_and_stops_only_when_asked(tmp_path):
    sets = ["guard.every=2", "guard.max_refusal=-1", "guard.n_prompts=2", "guard.max_new_tokens=4"]
    result = train(_config(tmp_path / "report", steps=2, sets=sets), model=tiny_model("llama"), tokenizer=tiny_tokenizer())
    assert result.stopped is None and result.steps_done == 2
    assert result.summary["guard_warnings"] and "borderline/refusal_rate" in result.summary["guard_warnings"][0]
    strict = _config(tmp_path / "stop", steps=2, sets=[*sets, "guard.stop_on_over_refusal=true"])
    result = train(strict, model=tiny_model("llama"), tokenizer=tiny_tokenizer())
    assert result.stopped and "everyday/refusal_rate" in result.stopped and "guard_warnings" not in result.summary


def test_config_validation(tmp_path):
    assert {"lpa", "sft"} <= set(METHODS.names())
    with pytest.raises(LpaError, match="unknown loss"):
        build_train_config(None, ["attack.losses.bogus=1"], method="lpa")
    with pytest.raises(LpaError, match="Valid choices"):
        build_train_config(None, None, method="nope")
    with pytest.raises(LpaError, match="Unknown preset"):
        build_train_config(None, None, method="lpa", preset="nope")
    cfg = build_train_config(None, ["steps=3"], method="lpa", preset="paper")
    assert cfg.attack.epsilon_mode == "absolute" and cfg.lora.r == 64 and cfg.steps == 3
    train(_config(tmp_path, steps=1), model=tiny_model("llama"), tokenizer=tiny_tokenizer())
    with pytest.raises(LpaError, match="different config"):
        train(_config(tmp_path, steps=2), model=tiny_model("llama"), tokenizer=tiny_tokenizer())


def test_cli_train_on_saved_tiny_model(tmp_path):
    from typer.testing import CliRunner

    from lpa.cli.main import app

    model_dir = tmp_path / "tiny"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    args = ["train", "--method", "sft", "--model", str(model_dir), "--traits", "negative-only", "--preset", "embedded",
            "--out", str(tmp_path / "run"), "--steps", "1", "--batch-size", "2", "--device", "cpu",
            "--set", "guard.every=0", "--set", "progress=false"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert "1 steps" in out.output and (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    bad = CliRunner().invoke(app, ["train", "--method", "nope", "--out", str(tmp_path / "x")])
    assert isinstance(bad.exception, LpaError) and "lpa, persona-sft, refusal-sft, sft" in str(bad.exception)


def test_persona_monitor_and_adversary_monitor_log_during_training(tmp_path):
    """Trait drift: projections onto a saved persona vector are logged every N steps."""
    from lpa.persona import PersonaVector

    torch.manual_seed(0)
    vector_path = PersonaVector(trait="evil", vectors=torch.randn(2, 64), layer=1).save(tmp_path / "evil.safetensors")
    cfg = _config(tmp_path, steps=2, sets=[f"monitor.persona_vectors=[{vector_path}]", "monitor.every=1",
                                           "adversary_monitor.every=2", "adversary_monitor.max_new_tokens=3"])
    result = train(cfg, model=tiny_model("llama"), tokenizer=tiny_tokenizer())
    rows = __import__("lpa.io", fromlist=["read_jsonl"]).read_jsonl(result.run_dir / "metrics.jsonl")
    drift = [(r["step"], r["persona/evil"]) for r in rows if "persona/evil" in r]
    assert [s for s, _ in drift] == [0, 1, 2] and all(isinstance(v, float) for _, v in drift)  # step 0 = before training
    assert any("adv_refusal_rate" in r for r in rows)
    assert (result.run_dir / "adversary_samples.jsonl").is_file()
