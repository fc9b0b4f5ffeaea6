"""The runner on a tiny model: files, caching, resume, re-judging, optimiser attacks, reports, utility."""

from __future__ import annotations

import json

import pytest

from lpa.errors import LpaError
from lpa.eval.attacks import ATTACKS, Attack, register_attack
from lpa.eval.runner import evaluate_model
from lpa.eval.suite import EvalSuite
from lpa.io import read_jsonl
from lpa.records import Generation


def _suite(**kw):
    base = dict(benchmarks=["smoke"], judges=["keyword"], limit=4, bootstrap=50,
                generation={"max_new_tokens": 3, "batch_size": 4})
    return EvalSuite(**{**base, **kw})


@pytest.fixture
def count_generate(monkeypatch):
    calls = []
    import lpa.generation

    real = lpa.generation.generate

    def counting(model, tok, conversations, *args, **kwargs):
        calls.append(len(conversations))
        return real(model, tok, conversations, *args, **kwargs)

    monkeypatch.setattr(lpa.generation, "generate", counting)  # what the hf backend calls
    return calls


def test_run_writes_files_and_rerun_skips(llama, tokenizer, tmp_path, count_generate):
    out = tmp_path / "run"
    results = evaluate_model(llama, tokenizer, _suite(), out)
    for name in ("results.json", "results.csv", "report.md", "generations.jsonl", "judgements.jsonl", "config.yaml"):
        assert (out / name).is_file(), name
    assert (out / "plots" / "asr_by_benchmark.png").is_file()
    assert results.value("smoke", "asr", judge="keyword") is not None
    header = (out / "results.csv").read_text().splitlines()[0]
    assert header == "model,adapter,benchmark,attack,judge,metric,value,ci_low,ci_high,n,errors"
    assert count_generate == [4]
    evaluate_model(llama, tokenizer, _suite(), out)
    assert count_generate == [4]  # nothing regenerated
    assert len(read_jsonl(out / "generations.jsonl")) == 4


def test_resume_after_interruption(llama, tokenizer, tmp_path, count_generate):
    out = tmp_path / "run"
    evaluate_model(llama, tokenizer, _suite(), out)
    lines = (out / "generations.jsonl").read_text().splitlines()
    (out / "generations.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:25])  # killed mid-append
    evaluate_model(llama, tokenizer, _suite(), out)
    assert count_generate == [4, 2]
    rows = read_jsonl(out / "generations.jsonl")
    assert len({r["key"] for r in rows}) == 4


def test_new_judge_rejudges_without_regenerating(llama, tokenizer, tmp_path, count_generate):
    out = tmp_path / "run"
    evaluate_model(llama, tokenizer, _suite(), out)
    results = evaluate_model(llama, tokenizer, _suite(judges=["keyword", "refusal-probe:min_mass=0"]), out)
    assert count_generate == [4]
    assert {r["judge"] for r in results.rows} >= {"keyword", "refusal-probe"}
    assert len(read_jsonl(out / "judgements.jsonl")) == 8


def test_rejudge_a_stored_run_without_a_model(llama, tokenizer, tmp_path):
    from lpa.eval.rejudge import rejudge_run
    from lpa.eval.stats import load_outcomes

    run = tmp_path / "run"
    original = evaluate_model(llama, tokenizer, _suite(attacks=["direct", "prefill"]), run)
    again = rejudge_run(run, ["keyword"], tmp_path / "rejudged")

    def pick(rows):
        return sorted((r["benchmark"], r["attack"], r["metric"], r["value"]) for r in rows if r["judge"] == "keyword")

    assert pick(again.rows) == pick([r for r in original.rows if r["metric"] in {x["metric"] for x in again.rows}])
    assert load_outcomes(tmp_path / "rejudged") == load_outcomes(run)  # `lpa compare` reads it like any run
    assert again.meta["rejudged_from"] == str(run) and (tmp_path / "rejudged" / "report.md").is_file()
    with pytest.raises(LpaError, match="need the evaluated model"):
        rejudge_run(run, ["refusal-probe"], tmp_path / "probe")
    with pytest.raises(LpaError, match="new folder"):
        rejudge_run(run, ["keyword"], run)
    with pytest.raises(LpaError, match="not an evaluation run"):
        rejudge_run(tmp_path / "nothing", ["keyword"], tmp_path / "x")


def test_probe_only_suite_needs_no_generation(llama, tokenizer, tmp_path, count_generate):
    results = evaluate_model(llama, tokenizer, _suite(judges=["refusal-probe:min_mass=0"], limit=None), tmp_path / "run")
    assert count_generate == []
    assert results.value("smoke", "probe_misclassification", judge="refusal-probe") is not None
    assert results.value("smoke", "asr", judge="refusal-probe") is None  # a probe is never reported as ASR


class _FakeOptimiser(Attack):
    name = "test-optimiser"
    needs_model = True
    description = "test only"

    def run(self, samples, ctx):
        texts = ctx.generate([p for s in samples for p in [self._prompt(s)]])
        score = ctx.judge(samples[0], "I'm sorry, I cannot.")
        assert score == 0.0
        return [Generation(sample_id=s.id, benchmark=s.benchmark, attack=self.name, model=ctx.model_name,
                           text=t, variant=0) for s, t in zip(samples, texts, strict=True)]

    def _prompt(self, sample):
        from lpa.eval.attacks import AttackedPrompt

        return AttackedPrompt(messages=sample.as_messages())


def test_optimiser_attack_and_any_row(llama, tokenizer, tmp_path, monkeypatch):
    # registered only for this test, so registry listings elsewhere never see it
    ATTACKS.names()  # load the built-in attacks first, then register on a copy restored after the test
    monkeypatch.setattr(ATTACKS, "_items", dict(ATTACKS._items))
    register_attack(_FakeOptimiser)
    results = evaluate_model(llama, tokenizer, _suite(attacks=["direct", "test-optimiser"]), tmp_path / "run")
    attacks = {r["attack"] for r in results.rows}
    assert {"direct", "test-optimiser", "any"} <= attacks
    assert results.value("smoke", "asr", attack="any") >= results.value("smoke", "asr", attack="direct")


def test_every_answer_records_its_engine_time_and_the_timing_survives_a_resume(llama, tokenizer, tmp_path,
                                                                                monkeypatch):
    ATTACKS.names()
    monkeypatch.setattr(ATTACKS, "_items", dict(ATTACKS._items))
    register_attack(_FakeOptimiser)
    out = tmp_path / "run"
    first = evaluate_model(llama, tokenizer, _suite(attacks=["direct", "test-optimiser"]), out)
    rows = read_jsonl(out / "generations.jsonl")
    assert rows and all(isinstance(r["gen_s"], float) and r["gen_s"] >= 0 for r in rows)
    timing = first.meta["timing"]
    assert set(timing) == {"direct", "test-optimiser"}
    assert timing["direct"]["requests"] == 4 and timing["direct"]["timed_answers"] == timing["direct"]["answers"] == 4
    assert timing["direct"]["seconds"] == pytest.approx(sum(r["gen_s"] for r in rows if r["attack"] == "direct"),
                                                        abs=1e-3)
    assert "## Time per attack" in (out / "report.md").read_text()
    again = evaluate_model(llama, tokenizer, _suite(attacks=["direct", "test-optimiser"]), out)  # all cached
    assert again.meta["timing"] == timing  # read back from the rows, not the rerun's (zero) time
    assert "gen_s" not in Generation.model_fields  # bookkeeping, never a field of the answer


def test_report_compare_and_utility(llama, tokenizer, tmp_path):
    from lpa.report import compare

    mmlu = tmp_path / "mmlu.jsonl"
    mmlu.write_text("".join(json.dumps({"question": f"Q{i}?", "answer_a": "a", "answer_b": "b", "answer_c": "c",
                                        "answer_d": "d", "correct_answer": "ABCD"[i % 4]}) + "\n" for i in range(4)))
    suite = _suite(utility={"file": str(mmlu), "n": 4, "max_new_tokens": 2}, examples=1)
    a = evaluate_model(llama, tokenizer, suite, tmp_path / "a")
    accuracy = [r for r in a.rows if r["metric"] == "accuracy"]
    assert {r["judge"] for r in accuracy} == {"loglik", "generate"} and all(0 <= r["value"] <= 1 for r in accuracy)
    assert "## Examples (truncated)" in (tmp_path / "a" / "report.md").read_text()
    evaluate_model(llama, tokenizer, _suite(), tmp_path / "b", model_name="other")
    text = compare([tmp_path / "a", tmp_path / "b"], tmp_path / "cmp")
    assert "## asr" in text and "other" in text and (tmp_path / "cmp" / "compare.md").is_file()
    with pytest.raises(LpaError):
        compare([tmp_path / "missing"])


def test_suite_validates_names():
    with pytest.raises(LpaError, match="Valid choices"):
        EvalSuite(benchmarks=["nope"])
    assert EvalSuite(benchmarks="smoke,xstest").benchmarks == ["smoke", "xstest"]
    assert EvalSuite(benchmarks="harmbench:split=val,limit=3;xstest").benchmarks == ["harmbench:split=val,limit=3", "xstest"]


def test_utility_parsing_and_loading(tmp_path):
    from lpa.eval.utility import load_mmlu, parse_letter

    assert parse_letter("The answer is C.") == "C" and parse_letter("(B) because") == "B"
    assert parse_letter("I think it is Paris", ["Rome", "Paris", "Oslo", "Bern"]) == "B"
    assert parse_letter("no idea") is None
    questions = load_mmlu(n=5, seed=1)
    assert len(questions) == 5 and all(q.answer in "ABCD" for q in questions)
    assert [q.question for q in questions] == [q.question for q in load_mmlu(n=5, seed=1)]


def test_cli_eval_with_suite_file_and_compare(llama, tokenizer, tmp_path):
    from typer.testing import CliRunner

    from lpa.cli.main import app

    model_dir = tmp_path / "tiny"
    llama.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: tiny\nbenchmarks: [smoke]\njudges: [keyword]\nbootstrap: 10\n"
                     "generation: {max_new_tokens: 2, batch_size: 8}\n")
    cli = CliRunner()
    result = cli.invoke(app, ["eval", "--model", str(model_dir), "--config", str(suite), "--limit", "3",
                              "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "smoke" in result.output and (tmp_path / "run" / "results.csv").is_file()
    result = cli.invoke(app, ["compare", str(tmp_path / "run")])
    assert result.exit_code == 0 and "## asr" in result.output
    result = cli.invoke(app, ["benchmarks", "list"])
    assert result.exit_code == 0 and "harmbench" in result.output


def test_aggregate_over_seed_runs(tmp_path):
    from lpa.io import atomic_write_json
    from lpa.report import aggregate

    for seed, value in ((0, 0.2), (1, 0.4)):
        row = {"model": "m", "adapter": f"runs/seed-{seed}/adapter", "benchmark": "b", "attack": "direct", "judge": "k", "metric": "asr",
               "value": value, "ci_low": None, "ci_high": None, "n": 10, "errors": 0}
        atomic_write_json(tmp_path / f"s{seed}" / "results.json", {"meta": {}, "rows": [row]})
    text = aggregate([tmp_path / "s0", tmp_path / "s1"])
    assert "0.300 ± 0.141" in text and "| 2 |" in text


def test_attack_benchmarks_restricts_an_attack(llama, tokenizer, tmp_path, data_dir):
    suite = _suite(benchmarks=["smoke", "xstest"], attacks=["direct", "prefill"], limit=2, data_dir=str(data_dir),
                   attack_benchmarks={"prefill": ["smoke"]})
    results = evaluate_model(llama, tokenizer, suite, tmp_path / "run")
    pairs = {(r["benchmark"], r["attack"]) for r in read_jsonl(tmp_path / "run" / "generations.jsonl")}
    assert pairs == {("smoke", "direct"), ("smoke", "prefill"), ("xstest", "direct")}
    assert results.value("smoke", "asr", attack="prefill") is not None
    with pytest.raises(LpaError):
        from lpa.config import validate_config

        validate_config(EvalSuite, {"attack_benchmarks": {"prefill": ["no-such-bench"]}})
