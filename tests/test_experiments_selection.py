"""Checkpoint selection in experiment specs: the same rule for every cell, disjoint splits, the report."""

from __future__ import annotations

import json

import pytest

from lpa.errors import LpaError
from lpa.experiments import ExperimentSpec, run_experiment
from lpa.experiments.cells import cell_key, cells, train_config
from lpa.testing import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "ckpt"
    tiny_model("llama").save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


def _selection(tmp_path, harmful_part="selection"):
    mmlu = tmp_path / "mmlu.jsonl"
    mmlu.write_text("".join(json.dumps({"question": f"Q{i}?", "answer_a": "a", "answer_b": "b", "answer_c": "c",
                                        "answer_d": "d", "correct_answer": "A"}) + "\n" for i in range(3)))
    split = {"of": {"name": "smoke", "args": {"subset": "harmful"}}, "part": harmful_part, "selection": 4}
    return {"every": 1, "harmful": [{"name": "heldout", "args": split}], "attacks": ["refusal-suppression"],
            "borderline": [{"name": "heldout", "args": {"of": {"name": "smoke", "args": {"subset": "benign"}},
                                                        "part": "selection", "selection": 3}}],
            "judge": "keyword", "utility_n": 3, "utility_file": str(mmlu), "max_new_tokens": 3}


def _spec(tiny_dir, tmp_path, **over):
    test_split = {"of": {"name": "smoke", "args": {"subset": "harmful"}}, "part": "test", "selection": 4, "limit": 3}
    data = dict(
        name="sel", out=str(tmp_path / "exp"), models=[tiny_dir], seeds=[0], device="cpu", reference=None,
        methods=[{"name": "base"},
                 {"name": "sft", "method": "sft", "traits": "big-five",
                  "train": {"steps": 2, "batch_size": 2, "guard": {"every": 0}, "progress": False,
                            "lora": {"r": 2, "alpha": 4}, "benign": {"batch_size": 2}}}],
        eval={"benchmarks": [{"name": "heldout", "args": test_split}], "attacks": ["direct"], "judges": ["keyword"],
              "generation": {"max_new_tokens": 3}, "bootstrap": 0},
        analyses={"overlap": False}, selection=_selection(tmp_path))
    return ExperimentSpec.model_validate({**data, **over})


def test_selection_that_misses_the_test_prompts_categories_is_warned_and_stratifying_fixes_it(tiny_dir, tmp_path):
    from lpa.experiments.plan import format_plan, plan
    from lpa.experiments.selection import selection_coverage

    benign = {"name": "smoke", "args": {"subset": "benign"}}
    # the test suite's XSTest-like prompts are the first 6 benign ones; selection draws 3 from after them
    eval_suite = {"benchmarks": [{"name": "heldout", "args": {"of": benign, "part": "test", "selection": 3,
                                                               "skip": 6}},
                                 {"name": "smoke", "args": {"subset": "benign", "limit": 6}}],
                  "attacks": ["direct"], "judges": ["keyword"], "generation": {"max_new_tokens": 3}, "bootstrap": 0}
    skipped = {**_selection(tmp_path), "borderline": [
        {"name": "heldout", "args": {"of": benign, "part": "selection", "selection": 3, "skip": 6}}]}
    spec = _spec(tiny_dir, tmp_path, selection=skipped, eval=eval_suite)
    warnings = selection_coverage(spec)
    assert len(warnings) == 1 and warnings[0].startswith("the selection split's borderline (over-refusal) prompts "
                                                         "include none of the categories")
    assert "stratify: true" in warnings[0] and "Checkpoint selection: the selection split's" in format_plan(
        spec, *plan(spec))
    stratified = {"of": benign, "part": "selection", "selection": 0.5, "stratify": True}
    eval_suite["benchmarks"] = [{"name": "heldout", "args": {**stratified, "part": "test"}}]
    spec = _spec(tiny_dir, tmp_path, selection={**skipped, "borderline": [{"name": "heldout", "args": stratified}]},
                 eval=eval_suite)
    assert selection_coverage(spec) == []
    absent = {"name": "file", "args": {"path": str(tmp_path / "absent.jsonl"), "label": "benign"}}
    offline = _spec(tiny_dir, tmp_path, selection={**skipped, "borderline": [absent]})
    assert selection_coverage(offline) == []  # no benchmark file to look at: no warning and no crash


def test_every_trained_cell_gets_the_specs_selection_and_the_report_names_the_step(tiny_dir, tmp_path):
    spec = _spec(tiny_dir, tmp_path)
    sft = next(c for c in cells(spec) if c.entry.trains)
    config = train_config(spec, sft, tmp_path / "cell")
    assert config.selection.enabled and config.selection.every == 1
    without = spec.model_copy(update={"selection": None})
    base = next(c for c in cells(spec) if not c.entry.trains)
    assert cell_key(spec, base) == cell_key(without, base)  # untrained cells keep their keys
    assert cell_key(spec, sft) != cell_key(without, sft)
    result = run_experiment(spec, progress=False)
    record = next(r for r in result.records if r["method"] == "sft")
    base_record = next(r for r in result.records if r["method"] == "base")
    assert base_record["cost"]["eval_resumed"] is False  # computed whole: the plan may calibrate on it
    # a cell whose selection kept step 0 starts from the base cell's answers: its evaluation is only a part
    assert record["cost"]["eval_resumed"] is (record["selection"]["step"] == 0)
    sel = record["selection"]
    assert [c["step"] for c in sel["curve"]] == [0, 1, 2] and sel["step"] in (0, 1, 2)
    assert sel["chose_on"][0].startswith("heldout(") and "part=test" in sel["measured_on"][0]
    report = result.report.read_text()
    assert "Checkpoint selection" in report and "Chosen on (selection split)" in report and "kept step" in report
    assert list((spec.report_root / "plots").glob("selection_*_sft_seed-0.png"))


def test_overlapping_splits_and_test_attacks_are_refused_before_any_work(tiny_dir, tmp_path):
    from lpa.experiments.grid import check_experiment

    overlapping = _spec(tiny_dir, tmp_path, selection=_selection(tmp_path, harmful_part="test"))
    with pytest.raises(LpaError, match="shares .* behaviour"):
        check_experiment(overlapping)
    assert not (tmp_path / "exp").exists()
    with pytest.raises(ValueError, match="also test attacks"):
        _spec(tiny_dir, tmp_path, eval={"benchmarks": ["smoke"], "attacks": ["direct", "refusal-suppression"]})


def test_plan_counts_the_workload_and_uses_the_given_unit_times(tiny_dir, tmp_path):
    from lpa.experiments.plan import format_plan, plan, selection_evaluations

    spec = _spec(tiny_dir, tmp_path, plan={"step_s": {tiny_dir: 10.0}, "generation_s": {tiny_dir: 0.5},
                                          "measured_on": "test"})
    work, notes = plan(spec)
    base = next(w for w in work if w.method == "base")
    sft = next(w for w in work if w.method == "sft")
    assert base.eval_generations == 3 and base.seconds == 3 * 0.5  # 3 test prompts, asked directly
    # selection at steps 0, 1, 2: 4 harmful x refusal-suppression + 3 borderline + 3 MMLU by generation
    assert selection_evaluations(2, 1) == 3 and sft.selection_generations == 3 * (4 + 3 + 3)
    assert sft.seconds == 2 * 10.0 * 0.35 + (3 + 30) * 0.5  # sft has no attacker: the plain-step fraction
    text = format_plan(spec, work, notes)
    assert "given in the spec's plan block (test)" in text and "MDE" in text and "misses the goal" in text


def test_measured_attack_times_replace_the_generic_answer_cost_and_cost_searches_per_request(tiny_dir, tmp_path):
    import json

    from lpa.experiments.plan import plan

    spec = _spec(tiny_dir, tmp_path, plan={"step_s": {tiny_dir: 10.0}, "generation_s": {tiny_dir: 0.5},
                                          "measured_on": "test"},
                 eval={"benchmarks": ["smoke"], "limit": 3, "attacks": ["direct", "pair"], "judges": ["keyword"]})
    finished = spec.out_dir / tiny_dir.replace("/", "_") / "base" / "seed-all"
    finished.mkdir(parents=True)
    timing = {"direct": {"requests": 3, "answers": 3, "timed_requests": 3, "timed_answers": 3, "seconds": 6.0},
              "pair": {"requests": 3, "answers": 3, "timed_requests": 3, "timed_answers": 3, "seconds": 90.0}}
    (finished / "cell.json").write_text(json.dumps({"model": tiny_dir, "rows": [],
                                                    "cost": {"attack_timing": timing}}))
    work, notes = plan(spec)
    base = next(w for w in work if w.method == "base")
    # direct: 3 answers at the measured 2.0 s (not the given 0.5 s); PAIR: 3 requests at 30 s each
    assert base.seconds == pytest.approx(3 * 2.0 + 3 * 30.0)
    assert any("pair = 30.00 s an answer, 30.0 s a request, measured (median of 1" in n for n in notes)
    assert not any("not in the estimate" in n for n in notes)


def test_a_search_a_model_has_not_timed_borrows_the_other_models_cost(tiny_dir, tmp_path):
    from lpa.experiments.plan import Units, units_for

    spec = _spec(tiny_dir, tmp_path)
    measured = {"a": Units(attack_answer_s={"pair": 40.0, "in-the-wild": 3.0},
                           attack_request_s={"pair": 40.0, "in-the-wild": 3.0}),
                "b": Units(attack_answer_s={"pair": 60.0}, attack_request_s={"pair": 60.0})}
    units = units_for(spec, "c", measured, ["pair"])
    assert units.attack_request_s == {"pair": 50.0}  # searches only: a human jailbreak's cost is the target's
    assert "borrowed from 2 other target model(s)" in units.source["pair"]
    assert units_for(spec, "a", measured, ["pair"]).attack_request_s["pair"] == 40.0  # its own measurement wins
    assert units_for(spec, "c", measured).attack_request_s == {}


def test_plan_counts_finished_cells_and_scales_what_is_left_by_their_measured_cost(tiny_dir, tmp_path):
    from lpa.experiments.plan import calibration, format_plan, plan

    spec = _spec(tiny_dir, tmp_path, plan={"step_s": {tiny_dir: 10.0}, "generation_s": {tiny_dir: 0.5},
                                          "measured_on": "test"}, seeds=[0, 1])
    text = format_plan(spec, *plan(spec))
    assert "(0 finished)" in text and "No finished cell has measured its cost yet" in text
    base_cell = next(c for c in cells(spec) if not c.entry.trains)
    sft_cell = next(c for c in cells(spec) if c.entry.trains and c.seed == 0)
    # base took 4x its planned 1.5 s; sft seed 0 trained in 2x its plan and resumed its evaluation (a part timed)
    records = [(base_cell, {"train_wall_s": 0.0, "eval_wall_s": 6.0}),
               (sft_cell, {"train_wall_s": 2 * (2 * 10.0 * 0.35 + 30 * 0.5), "eval_wall_s": 90.0,
                           "eval_resumed": True})]
    for cell, cost in records:
        folder = cell.folder(spec.out_dir)
        folder.mkdir(parents=True)
        (folder / "cell.json").write_text(json.dumps({"key": cell_key(spec, cell), "model": tiny_dir, "rows": [],
                                                      "cost": cost}))
    work, notes = plan(spec)
    assert [w.done for w in work] == [True, True, False]
    cal = calibration(work)
    assert (cal.train, cal.eval, cal.n_train, cal.n_eval) == (pytest.approx(2.0), pytest.approx(4.0), 1, 1)
    left = next(w for w in work if not w.done)  # sft seed 1: training at 2x, its evaluation at 4x
    assert cal.scale(left) == pytest.approx(2 * left.train_s + 4 * left.eval_s)
    text = format_plan(spec, work, notes)
    assert "(2 finished)" in text and "training + selection 2.00x" in text and "evaluation 4.00x" in text
    assert f"the 1 cell(s) left take about {cal.scale(left) / 3600:.1f} hours" in text
    assert "Started, not finished" not in text  # sft seed 1 has no folder yet
    # a cell another process is running: two training steps logged, step 0's selection row, no answers yet
    train = next(c for c in cells(spec) if c.seed == 1).folder(spec.out_dir) / "train"
    train.mkdir(parents=True)
    (train / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    (train / "selection.jsonl").write_text('{"step": 0}\n')
    text = format_plan(spec, *plan(spec))
    assert "sft · seed 1: training at step 2 of 2, 1 selection step(s) evaluated" in text
    (train / "result.json").write_text("{}")
    (train.parent / "eval").mkdir()
    (train.parent / "eval" / "generations.jsonl").write_text('{"a": 1}\n' * 3)
    assert "sft · seed 1: trained, 1 selection step(s) evaluated, 3 test answer(s) generated" in format_plan(
        spec, *plan(spec))


def test_a_given_lat_step_replaces_a_measured_plain_step(tiny_dir, tmp_path):
    from lpa.experiments.plan import Units, units_for

    spec = _spec(tiny_dir, tmp_path, plan={"step_s": {tiny_dir: 10.0}})
    measured = {tiny_dir: Units(lat_step_s=40.0, plain_step_s=50.0, generation_s=2.0, source={})}
    units = units_for(spec, tiny_dir, measured)
    assert (units.lat_step_s, units.plain_step_s, units.generation_s) == (10.0, 10.0 * 0.35, 2.0)
    assert units_for(spec, "other-model", {"other-model": measured[tiny_dir]}).plain_step_s == 50.0


def test_shipped_1_5b_spec_has_disjoint_splits_and_meets_the_mde_goal(data_dir):
    from pathlib import Path

    from lpa.experiments import load_spec
    from lpa.experiments.plan import mde_lines
    from lpa.experiments.selection import selection_problems

    spec = load_spec(Path(__file__).resolve().parents[1] / "experiments" / "scale-1.5b.yaml",
                     [f"data_dir={data_dir}"])
    assert "qwen2.5-coder-1.5b" in spec.models and len(spec.seeds) == 3
    assert {"base", "lpa", "sft", "lat-harmful", "ablate-irrelevant", "ablate-inverted"} == {m.name for m in spec.methods}
    assert selection_problems(spec) == []
    pooled = mde_lines(spec)[-1]
    assert pooled.startswith("all harmful test prompts: n=80") and "meets the goal" in pooled


def test_a_utility_bound_finer_than_one_question_is_warned_once(caplog):
    import logging

    from lpa.training.selection_config import SelectionSettings

    with caplog.at_level(logging.WARNING, logger="lpa.training.selection_config"):
        SelectionSettings(enabled=True, utility_n=24, rule={"max_utility_drop": 0.02})
        SelectionSettings(enabled=True, utility_n=24, rule={"max_utility_drop": 0.02})
        SelectionSettings(enabled=True, utility_n=24, rule={"max_utility_drop": 0.05})  # one question = 0.042: fine
        SelectionSettings(enabled=False, utility_n=10, rule={"max_utility_drop": 0.02})  # selection off: silent
        SelectionSettings(enabled=True)  # the defaults never let a single question decide
    warned = [r.getMessage() for r in caplog.records if "finer than one" in r.getMessage()]
    assert len(warned) == 1 and "24 utility questions (0.042)" in warned[0]


def test_a_cell_whose_rule_keeps_step_0_is_the_base_model_and_reuses_its_answers(tiny_dir, tmp_path):
    from lpa.io import read_jsonl

    selection = {**_selection(tmp_path), "rule": {"min_asr_drop": 1.0}}  # no step can qualify: step 0 is kept
    spec = _spec(tiny_dir, tmp_path, selection=selection)
    result = run_experiment(spec, progress=False)
    sft = next(r for r in result.records if r["method"] == "sft")
    base = next(r for r in result.records if r["method"] == "base")
    assert sft["selection"]["step"] == 0 and sft["adapter"] is None and sft["identity"]["adapter"] is None
    assert "| sft | 0 (no window) |" in result.report.read_text()  # the glance table says why step 0
    values = lambda record: sorted((r["benchmark"], r["attack"], r["judge"], r["metric"], r["value"])  # noqa: E731
                                   for r in record["rows"])
    assert values(sft) == values(base)
    cell_eval = tmp_path / "exp" / next((tmp_path / "exp").iterdir()).name / "sft" / "seed-0" / "eval"
    base_eval = cell_eval.parents[2] / "base" / "seed-all" / "eval"
    assert list(read_jsonl(cell_eval / "generations.jsonl")) == list(read_jsonl(base_eval / "generations.jsonl"))
