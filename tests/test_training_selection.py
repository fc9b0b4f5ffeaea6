"""Checkpoint selection: the rule, the held-out split and the callback on a tiny random model."""

from __future__ import annotations

import json

import pytest
import torch

from lpa.errors import LpaError
from lpa.testing import tiny_model, tiny_tokenizer
from lpa.training import build_train_config, train
from lpa.training.selection import (
    NO_WINDOW,
    choose,
    jailbroken_behaviours,
    read_curve,
    summarise_results,
    violations,
)
from lpa.training.selection_config import SelectionRule

torch.set_num_threads(1)


def _row(step, asr, refusal=0.1, utility=0.5, template=0.0):
    return {"step": step, "asr": asr, "borderline_refusal": refusal, "utility": utility,
            "template_rate_harmful": template, "template_rate_borderline": template}


def test_choose_keeps_the_lowest_asr_within_the_bounds():
    rule = SelectionRule()
    rows = [_row(0, 0.6), _row(2, 0.3, template=0.2), _row(4, 0.4, refusal=0.3), _row(6, 0.45), _row(8, 0.45),
            _row(10, 0.2, utility=0.4)]
    choice = choose(rows, rule)
    assert choice.step == 6 and choice.selective_window  # 2: templates, 4: over-refusal, 10: utility; 6 ties 8, earlier wins
    assert choice.qualifying == [6, 8]
    assert any("template_rate_harmful" in v for v in violations(rows[1], rows[0], rule))
    assert any("utility" in v for v in violations(rows[5], rows[0], rule))


def test_choose_says_no_selective_window_and_keeps_step_0():
    rows = [_row(0, 0.3), _row(4, 0.35), _row(8, 0.1, template=0.5)]
    choice = choose(rows, SelectionRule())
    assert choice.step == 0 and not choice.selective_window and NO_WINDOW in choice.reason


def test_a_shape_bound_rejects_a_partial_collapse_and_leaves_keys_alone_while_unset():
    rows = [_row(0, 0.5), {**_row(6, 0.4), "template_shape_rate_harmful": 0.12, "template_shape_rate_borderline": 0.0},
            {**_row(3, 0.45), "template_shape_rate_harmful": 0.0, "template_shape_rate_borderline": 0.0}]
    assert choose(rows, SelectionRule()).step == 6  # exact template answers 0: the plain rule keeps it
    bounded = SelectionRule(max_template_shape_rate=0.05)
    assert choose(rows, bounded).step == 3
    assert any("template_shape_rate_harmful 0.12 > 0.05" in v for v in violations(rows[1], rows[0], bounded))
    old_curve = [_row(0, 0.5), _row(6, 0.4)]  # recorded before the rates existed: not passed on faith
    assert choose(old_curve, bounded).step == 0 and "not recorded" in violations(old_curve[1], old_curve[0], bounded)[0]
    assert "max_template_shape_rate" not in SelectionRule().model_dump()  # finished cells keep their keys
    assert SelectionRule.model_validate(bounded.model_dump()) == bounded


def test_summarise_pools_benchmarks_by_n():
    harmful = [{"benchmark": "a", "attack": "any", "judge": "keyword", "metric": "asr", "value": 1.0, "n": 1},
               {"benchmark": "b", "attack": "any", "judge": "keyword", "metric": "asr", "value": 0.0, "n": 3},
               {"benchmark": "a", "attack": "x", "judge": "-", "metric": "template_leak_rate", "value": 0.5, "n": 2},
               {"benchmark": "a", "attack": "x", "judge": "-", "metric": "template_shape_rate", "value": 0.75, "n": 2}]
    borderline = [{"benchmark": "c", "attack": "direct", "judge": "keyword", "metric": "refusal_rate", "value": 0.2, "n": 5},
                  {"benchmark": "mmlu", "attack": "-", "judge": "generate", "metric": "accuracy", "value": 0.3, "n": 4}]
    out = summarise_results(harmful, borderline, ["x", "y"], "keyword")
    assert out["asr"] == 0.25 and out["template_rate_harmful"] == 0.5 and out["template_shape_rate_harmful"] == 0.75
    assert out["borderline_refusal"] == 0.2 and out["utility"] == 0.3 and out["template_rate_borderline"] is None


def test_heldout_parts_are_disjoint_grouped_and_seeded():
    from lpa.eval.benchmarks import BENCHMARKS
    from lpa.plugins import create

    def part(name, seed=0):
        return create(BENCHMARKS, {"name": "heldout", "args": {"of": "smoke", "part": name, "selection": 0.3,
                                                                  "seed": seed}}).load()

    selection, test = part("selection"), part("test")
    every = create(BENCHMARKS, "smoke").load()
    assert {s.id for s in selection}.isdisjoint({s.id for s in test})
    assert len(selection) + len(test) == len(every)
    assert {s.benchmark for s in selection} == {"smoke-selection"} and {s.benchmark for s in test} == {"smoke-test"}
    assert [s.id for s in part("selection")] == [s.id for s in selection]  # seeded
    assert [s.id for s in part("selection", seed=1)] != [s.id for s in selection]
    with pytest.raises(LpaError, match="leaves no test"):
        create(BENCHMARKS, {"name": "heldout", "args": {"of": "smoke", "part": "test", "selection": 10_000}}).load()


def test_a_stratified_split_keeps_every_category_in_both_parts_in_proportion():
    from collections import Counter

    from lpa.eval.benchmarks import BENCHMARKS
    from lpa.plugins import create

    def part(name, stratify, seed=0):
        return create(BENCHMARKS, {"name": "heldout", "args": {"of": "smoke", "part": name, "selection": 0.5,
                                                                  "seed": seed, "stratify": stratify}}).load()

    every = Counter(s.category for s in create(BENCHMARKS, "smoke").load())
    chosen, rest = part("selection", True), part("test", True)
    assert {s.id for s in chosen}.isdisjoint({s.id for s in rest}) and len(chosen) + len(rest) == sum(every.values())
    picked = Counter(s.category for s in chosen)
    assert all(abs(picked[c] - n / 2) <= 0.5 for c, n in every.items())  # half of each category, rounded
    assert {c for c, n in every.items() if n >= 2} <= {s.category for s in rest} & set(picked)
    assert [s.id for s in part("selection", True)] == [s.id for s in chosen]  # seeded
    plain = Counter(s.category for s in part("selection", False))
    assert any(abs(plain[c] - n / 2) > 0.5 for c, n in every.items())  # what stratifying fixes


def _selection_cfg(tmp_path, method="lpa", steps=4, every=2, sets=()):
    mmlu = tmp_path / "mmlu.jsonl"
    mmlu.write_text("".join(json.dumps({"question": f"Q{i}?", "answer_a": "a", "answer_b": "b", "answer_c": "c",
                                        "answer_d": "d", "correct_answer": "A"}) + "\n" for i in range(4)))
    split = {"of": {"name": "smoke", "args": {"subset": "harmful"}}, "part": "selection", "selection": 3}
    selection = {"enabled": True, "every": every, "harmful": [{"name": "heldout", "args": split}],
                 "attacks": ["refusal-suppression", "past-tense"],
                 "borderline": [{"name": "smoke", "args": {"subset": "benign", "limit": 3}}],
                 "judge": "keyword", "utility_n": 4, "utility_file": str(mmlu), "max_new_tokens": 4, "batch_size": 8}
    trait_only = ["format.system=null"] if method in ("lpa", "sft") else ["max_examples=8"]
    sets = ["progress=false", *trait_only, "guard.every=0", "attack.steps=1", "defender.steps=1",
            "benign.batch_size=2", "lora.r=4", "lora.alpha=8", *sets]
    fields = {"method": method, "preset": "embedded", "out": str(tmp_path / "run"), "steps": steps, "batch_size": 2,
              "selection": selection}
    return build_train_config(None, sets, **fields)


@pytest.mark.parametrize("method", ["lpa", "sft", "refusal-sft", "lat-harmful"])
def test_selection_runs_for_every_method_and_keeps_the_chosen_adapter(tmp_path, method, data_dir):
    from safetensors.torch import load_file

    sets = [f"data_dir={data_dir}"] if method in ("lat-harmful", "refusal-sft") else []
    result = train(_selection_cfg(tmp_path, method=method, sets=sets), model=tiny_model("llama"), tokenizer=tiny_tokenizer())
    curve = read_curve(result.run_dir)
    assert [r["step"] for r in curve] == [0, 2, 4]
    assert all(r["asr"] is not None and r["utility"] is not None for r in curve)
    for r in curve:  # the ids behind each step's ASR, for the paired test of the kept step
        assert r["n_behaviours"] == 3 and all(b.startswith("smoke-selection/") for b in r["jailbroken"])
        assert r["asr"] == pytest.approx(len(r["jailbroken"]) / 3)
    sel = result.summary["selection"]
    assert sel["step"] in (0, 2, 4) and sel["chose_on"][0].startswith("heldout(")
    assert json.loads((result.run_dir / "selection" / "choice.json").read_text())["step"] == sel["step"]
    assert (result.run_dir / "plots" / "selection.png").stat().st_size > 0
    kept = load_file(str(result.adapter / "adapter_model.safetensors"))
    best = load_file(str(result.run_dir / "selection" / "best" / "adapter_model.safetensors"))
    assert kept.keys() == best.keys() and all(torch.equal(kept[k], best[k]) for k in kept)
    metrics = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("selection/asr" in r for r in metrics)


def test_selection_resume_does_not_recompute_evaluated_steps(tmp_path):
    from lpa.training.trainer import build_trainer

    cfg = _selection_cfg(tmp_path, steps=4, every=2, sets=["save_every=2"])
    first = build_trainer(cfg, model=tiny_model("llama"), tokenizer=tiny_tokenizer())
    first.args.max_steps = 2  # a run killed after step 2 (its checkpoint and curve rows written)
    first.train()
    rows = read_curve(cfg.out)
    assert [r["step"] for r in rows] == [0, 2]
    generations = (tmp_path / "run" / "selection" / "harmful" / "generations.jsonl").read_text()
    result = train(cfg, model=tiny_model("llama"), tokenizer=tiny_tokenizer())
    assert [r["step"] for r in read_curve(result.run_dir)] == [0, 2, 4]  # steps 0 and 2 were not appended twice
    assert (tmp_path / "run" / "selection" / "harmful" / "generations.jsonl").read_text().startswith(generations)


def test_selection_off_by_default_and_bad_plugins_fail_before_training(tmp_path):
    cfg = build_train_config(None, ["progress=false"], method="lpa", out=str(tmp_path / "r"))
    assert cfg.selection.enabled is False
    bad = _selection_cfg(tmp_path, sets=["selection.judge=nope"])
    with pytest.raises(LpaError, match="nope"):
        train(bad, model=tiny_model("llama"), tokenizer=tiny_tokenizer())
    assert not (tmp_path / "run" / "selection.jsonl").exists()


def test_cli_select_flag_trains_with_selection_and_prints_the_kept_step(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from lpa.cli.main import app

    checkpoint = tmp_path / "tiny"
    tiny_model("llama").save_pretrained(checkpoint)
    tiny_tokenizer().save_pretrained(checkpoint)
    selection = _selection_cfg(tmp_path, method="sft", steps=2, every=1).selection.model_dump(mode="json")
    selection.pop("enabled")
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"selection": selection, "guard": {"every": 0}, "lora": {"r": 4, "alpha": 8},
                                      "benign": {"batch_size": 2}, "format": {"system": None}}))
    args = ["train", "--method", "sft", "--model", str(checkpoint), "--out", str(tmp_path / "cli"), "--steps", "2",
            "--batch-size", "2", "--device", "cpu", "--config", str(config), "--set", "progress=false", "--select"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Selection: kept step" in result.output and "heldout(" in result.output
    assert [r["step"] for r in read_curve(tmp_path / "cli")] == [0, 1, 2]
    assert "--select" in CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output


def test_choose_tests_the_kept_step_against_step_0_on_the_selection_behaviours():
    rows = [{**_row(0, 0.5), "jailbroken": ["a/1", "a/2", "a/3", "a/4"], "n_behaviours": 8},
            {**_row(3, 0.125), "jailbroken": ["a/1"], "n_behaviours": 8}]
    choice = choose(rows, SelectionRule())
    assert choice.step == 3
    assert choice.asr_test == {"behaviours": 8, "step0_only": 3, "kept_only": 0, "mcnemar_p": pytest.approx(0.25)}
    assert "McNemar p 0.25" in choice.reason
    assert choose([_row(0, 0.5), _row(3, 0.125)], SelectionRule()).asr_test is None  # curves written before the ids


def test_jailbroken_behaviours_pools_the_held_in_attacks_for_one_judge():
    outcomes = {("adv", "past-tense", "cascade", "harmful\tx"): 1.0, ("adv", "refusal-suppression", "cascade", "harmful\tx"): 0.0,
                ("adv", "past-tense", "cascade", "harmful\ty"): 0.0, ("adv", "refusal-suppression", "cascade", "harmful\ty"): 1.0,
                ("adv", "past-tense", "cascade", "harmful\tz"): 0.0, ("adv", "past-tense", "keyword", "harmful\tz"): 1.0,
                ("adv", "direct", "cascade", "harmful\tw"): 1.0, ("xs", "past-tense", "cascade", "benign\tv"): 1.0}
    assert jailbroken_behaviours(outcomes, ["past-tense", "refusal-suppression"], "cascade") == (["adv/x", "adv/y"], 3)
