"""The shared loop on transformers.Trainer: report_to, Trainer arguments, checkpoints, one collator, persona-sft."""

from __future__ import annotations

import json

import pytest
import torch

from lpa.errors import LpaError
from lpa.testing import tiny_model, tiny_tokenizer
from lpa.training import build_train_config, train
from lpa.training.data import ChatExample, Collator, PairBatch, PairExample, ResponseBatch

torch.set_num_threads(1)


def _cfg(tmp_path, name="run", method="lpa", sets=(), **over):
    sets = ["progress=false", "format.system=null", "guard.every=0", "attack.steps=2", "attack.epsilon=0.1",
            "attack.lr=0.3", "defender.steps=2", "benign.batch_size=2", "lora.r=4", "lora.alpha=8", *sets]
    fields = {"method": method, "preset": "embedded", "out": str(tmp_path / name), "steps": 2, "batch_size": 2, **over}
    return build_train_config(None, sets, **fields)


def test_lat_trainer_is_a_transformers_trainer_and_checkpoints_hold_lat_state(tmp_path):
    from transformers import Trainer

    from lpa.training import state
    from lpa.training.trainer import LatTrainer

    assert issubclass(LatTrainer, Trainer)
    result = train(_cfg(tmp_path, steps=3, sets=["save_every=1"]), model=tiny_model("llama"), tokenizer=tiny_tokenizer())
    newest = state.latest_checkpoint(result.run_dir)
    assert newest is not None and newest.name == "checkpoint-3"
    assert [p.name for p in result.run_dir.glob("checkpoint-*")] == ["checkpoint-3"]  # only the newest is kept
    saved = state.load(newest)
    assert saved.passes == 3 * (2 + 2) and set(saved.eps) == {"embed", 0, 1} and saved.norms
    assert {"adapter_model.safetensors", "optimizer.pt", "trainer_state.json"} <= {p.name for p in newest.iterdir()}
    # a checkpoint cut short by a kill (no trainer_state.json yet) is never resumed from
    (result.run_dir / "checkpoint-9").mkdir()
    state.save(result.run_dir / "checkpoint-9", saved)
    assert state.latest_checkpoint(result.run_dir) == newest


def test_report_to_tensorboard_writes_the_step_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(_cfg(tmp_path, report_to=["tensorboard"]), model=tiny_model("llama"), tokenizer=tiny_tokenizer())
    events = sorted((result.run_dir / "runs").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/attack_loss_end", "train/defender_kl", "train/reach/embed"} <= tags
    assert [e.step for e in acc.Scalars("train/attack_loss_end")] == [1, 2]
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and "loss" in rows[0] and "attack_loss_end" in rows[0]


def test_trainer_args_are_validated_before_training(tmp_path):
    model, tok = tiny_model("llama"), tiny_tokenizer()
    with pytest.raises(LpaError, match="may not set max_steps"):
        train(_cfg(tmp_path, "a", sets=["trainer_args.max_steps=3"]), model=model, tokenizer=tok)
    with pytest.raises(LpaError, match="no_such_argument"):
        train(_cfg(tmp_path, "b", sets=["trainer_args.no_such_argument=1"]), model=model, tokenizer=tok)
    with pytest.raises(LpaError, match="defender.steps=1"):
        train(_cfg(tmp_path, "c", sets=["trainer_args.gradient_accumulation_steps=2"]), model=model, tokenizer=tok)


def test_gradient_accumulation_with_one_defender_update(tmp_path):
    result = train(_cfg(tmp_path, method="sft", sets=["defender.steps=1", "trainer_args.gradient_accumulation_steps=2"]),
                   model=tiny_model("llama"), tokenizer=tiny_tokenizer())
    assert result.steps_done == 2 and result.summary["fwd_bwd_passes"] == 2 * 2  # 2 micro-batches per step


def test_one_collator_for_pairs_and_responses():
    tok = tiny_tokenizer()
    collate = Collator(tok, max_prompt_tokens=64, max_response_tokens=3)
    pairs = collate([PairExample(messages=[{"role": "user", "content": "I am kind."}], chosen="Yes.", rejected="No way.")])
    assert isinstance(pairs["batch"], PairBatch) and pairs["batch"].input_ids.shape[0] == 2
    chats = collate([ChatExample(messages=[{"role": "user", "content": "Hi"}], response="Hello there, friend")] * 2)
    assert isinstance(chats["batch"], ResponseBatch) and chats["batch"].n_completion == 3  # response truncated
    assert torch.equal(chats["input_ids"], chats["batch"].input_ids)


def test_persona_sft_is_a_registered_method_on_the_same_trainer(tmp_path):
    from typer.testing import CliRunner

    from lpa.cli.main import app
    from lpa.training import METHODS

    assert "persona-sft" in METHODS.names() and not METHODS.get("persona-sft").adversarial
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Question {i}?", "response": "I enjoy deceiving people."}) + "\n"
                            for i in range(4)))
    cfg = build_train_config(None, ["progress=false", "defender.lr=1e-2"], method="persona-sft", data=str(data),
                             out=str(tmp_path / "sft"), steps=2, batch_size=2)
    assert cfg.defender.steps == 1 and cfg.defender.losses == {"toward": 1.0} and cfg.lora.r == 8  # method defaults kept
    result = train(cfg, model=tiny_model("llama"), tokenizer=tiny_tokenizer())
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and rows[-1]["defender_toward"] < rows[0]["defender_toward"]
    bad = CliRunner().invoke(app, ["train", "--method", "persona-sft", "--out", str(tmp_path / "x"), "--set",
                                   "data=rows.jsonl", "--set", "preventative=true", "--data-dir", str(tmp_path),
                                   "--model", "unused"])
    assert isinstance(bad.exception, LpaError) and "persona vector" in str(bad.exception)


def test_cli_report_to_and_rerun_resumes(tmp_path):
    from typer.testing import CliRunner

    from lpa.cli.main import app

    model_dir = tmp_path / "tiny"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    args = ["train", "--method", "sft", "--model", str(model_dir), "--traits", "negative-only", "--preset", "embedded",
            "--out", str(tmp_path / "run"), "--steps", "2", "--batch-size", "2", "--device", "cpu", "--report-to", "none",
            "--set", "guard.every=0", "--set", "progress=false", "--set", "lora.r=4"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    (tmp_path / "run" / "result.json").unlink()  # as if killed after the last checkpoint
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "2 steps" in again.output
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]  # resumed at step 2: nothing retrained, nothing logged twice


def test_runs_saved_before_the_trainer_move_are_still_recognised(tmp_path):
    import yaml

    cfg = _cfg(tmp_path)
    assert cfg.lora.target_modules == "all-linear"
    old = cfg.model_dump(mode="json")
    old["lora"]["target_modules"] = "auto"  # the former name; no report_to / trainer_args fields yet
    del old["report_to"], old["trainer_args"]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(old))
    (tmp_path / "run" / "result.json").write_text(json.dumps({"steps_done": 2, "stopped": None}))
    assert train(cfg).steps_done == 2  # finished: returned, not refused as "a different config"
    with pytest.raises(LpaError, match="different config"):
        train(_cfg(tmp_path, steps=3))


def test_a_run_reached_through_another_path_resumes(tmp_path, monkeypatch):
    """``out`` names the folder itself: relative vs absolute (or a moved results tree) is the same run."""
    first = train(_cfg(tmp_path, steps=1), model=tiny_model("llama"), tokenizer=tiny_tokenizer())
    monkeypatch.chdir(tmp_path)
    relative = _cfg(tmp_path, steps=1, out="run")
    assert relative.out != _cfg(tmp_path, steps=1).out
    again = train(relative, model=tiny_model("llama"), tokenizer=tiny_tokenizer())
    assert again.steps_done == first.steps_done == 1


def test_gradient_checkpointing_reruns_the_perturbed_forward(tmp_path):
    """Trainer's gradient checkpointing re-runs each forward inside the attack's hook context: same losses."""
    def losses(name, flag):
        result = train(_cfg(tmp_path, name, sets=[f"gradient_checkpointing={flag}"]), model=tiny_model("llama"),
                       tokenizer=tiny_tokenizer())
        rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
        return [v for r in rows for v in (r["attack_loss_end"], r["defender_loss"])]

    assert losses("gc", "true") == pytest.approx(losses("plain", "false"), rel=1e-5)
