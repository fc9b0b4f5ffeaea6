"""Experiment grid on a tiny saved model: cells, skip-on-rerun, aggregation, ratios, report."""

from __future__ import annotations

import pytest

from lpa.errors import LpaError
from lpa.experiments import ExperimentSpec, run_experiment
from lpa.experiments.aggregate import ratio_rows, summarise
from lpa.experiments.grid import cells
from lpa.testing import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "ckpt"
    tiny_model("llama").save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


def _spec(tiny_dir, out, seeds=(0, 1)):
    return ExperimentSpec(
        name="t",
        out=str(out),
        models=[tiny_dir],
        seeds=list(seeds),
        device="cpu",
        methods=[
            {"name": "base"},
            {"name": "sft", "method": "sft", "traits": "big-five",
             "train": {"steps": 2, "batch_size": 2, "guard": {"every": 0}, "progress": False,
                       "lora": {"r": 2, "alpha": 4}, "benign": {"batch_size": 2}}},
        ],
        eval={"benchmarks": [{"name": "smoke", "args": {"limit": 6}}], "attacks": ["direct"], "judges": ["keyword"],
              "generation": {"max_new_tokens": 4}, "bootstrap": 50},
        analyses={"overlap": False},
        reference=None,
    )


def test_spec_validation_names_valid_methods(tiny_dir, tmp_path):
    with pytest.raises((LpaError, ValueError), match="lpa"):
        ExperimentSpec(methods=[{"name": "x", "method": "no-such-method"}])
    with pytest.raises(ValueError, match="unique"):
        ExperimentSpec(methods=[{"name": "a"}, {"name": "a"}])
    spec = _spec(tiny_dir, tmp_path)
    grid = cells(spec)
    assert [(c.entry.name, c.seed) for c in grid] == [("base", None), ("sft", 0), ("sft", 1)]


def test_a_method_may_have_its_own_seeds_without_changing_any_cells_key(tiny_dir, tmp_path):
    from lpa.experiments.cells import cell_key
    from lpa.experiments.plan import mde_lines

    spec = _spec(tiny_dir, tmp_path, seeds=(0, 1, 2))
    data = spec.model_dump()
    data["methods"].append({**data["methods"][1], "name": "sft-once", "seeds": [0]})
    mixed = ExperimentSpec.model_validate(data)
    assert [(c.entry.name, c.seed) for c in cells(mixed)] == [
        ("base", None), ("sft", 0), ("sft-once", 0), ("sft", 1), ("sft", 2)]  # still seed-major
    assert mixed.most_seeds == 3 and mixed.seeds_text() == "0, 1, 2 (sft-once: 0)"
    assert "(3 seeds pooled)" in mde_lines(mixed)[0]
    plain = {(c.entry.name, c.seed): cell_key(spec, c) for c in cells(spec)}
    assert {(c.entry.name, c.seed): cell_key(mixed, c) for c in cells(mixed) if c.entry.name != "sft-once"} == plain
    with pytest.raises(ValueError, match="without repeats"):
        ExperimentSpec(methods=[{"name": "a", "method": "sft", "seeds": [1, 1]}])
    with pytest.raises(ValueError, match="without repeats"):
        ExperimentSpec(methods=[{"name": "a", "method": "sft", "seeds": []}])


def test_a_method_may_run_on_some_of_the_models_only(tiny_dir, tmp_path):
    from lpa.experiments.cells import cell_key

    spec = _spec(tiny_dir, tmp_path, seeds=(0,))
    data = spec.model_dump()
    data["models"] = [tiny_dir, "other-model"]
    data["methods"][1]["models"] = [tiny_dir]
    narrowed = ExperimentSpec.model_validate(data)
    assert [(c.model, c.entry.name) for c in cells(narrowed)] == [(tiny_dir, "base"), (tiny_dir, "sft"),
                                                                   ("other-model", "base")]
    assert cell_key(narrowed, cells(narrowed)[1]) == cell_key(spec, cells(spec)[1])
    data["methods"][1]["models"] = ["typo-model"]
    with pytest.raises(ValueError, match="not among the spec's models"):
        ExperimentSpec.model_validate(data)


def test_experiment_runs_resumes_and_reports(tiny_dir, tmp_path):
    spec = _spec(tiny_dir, tmp_path / "exp")
    result = run_experiment(spec, progress=False)
    markers = sorted((tmp_path / "exp").rglob("cell.json"))
    assert len(markers) == 3
    mtimes = [m.stat().st_mtime_ns for m in markers]
    again = run_experiment(spec, progress=False)  # every cell is finished: nothing recomputed
    assert [m.stat().st_mtime_ns for m in markers] == mtimes
    assert again.summary == result.summary
    sft_rows = [r for r in result.summary if r["method"] == "sft" and r["metric"] == "misclassification"]
    assert sft_rows and all(r["n_seeds"] == 2 for r in sft_rows)
    base_rows = [r for r in result.summary if r["method"] == "base"]
    assert base_rows and all(r["n_seeds"] == "det" for r in base_rows)
    report = result.report.read_text()
    for heading in ("At a glance", "Attack success", "Misclassification and ratios", "Cost per method",
                    "Output coherence", "What the design can detect"):
        assert heading in report
    assert (tmp_path / "exp" / "results.csv").is_file() and (tmp_path / "exp" / "summary.csv").is_file()
    import csv

    paired = list(csv.DictReader((tmp_path / "exp" / "paired.csv").open()))
    assert paired and {(r["method"], r["vs"], r["seeds"], r["judge"]) for r in paired} == {("sft", "base", "2", "keyword")}
    assert "## Paired against the baseline and the reference" in report and "sign-flip p" in report
    # A second spec sharing the cells reports into its own folder and leaves the first report alone.
    before = result.report.read_text()
    other = spec.model_copy(update={"name": "t2", "report_dir": str(tmp_path / "t2-report")})
    shared = run_experiment(other, report_only=True, progress=False)
    assert shared.report == tmp_path / "t2-report" / "report.md" and "# Experiment `t2`" in shared.report.read_text()
    assert (tmp_path / "t2-report" / "spec.yaml").is_file() and result.report.read_text() == before


def test_a_cell_another_process_runs_is_skipped_and_left_to_it(tiny_dir, tmp_path, caplog):
    from lpa.experiments.grid import run_cell
    from lpa.experiments.plan import cell_progress
    from lpa.testing import held_by_another_process

    spec = _spec(tiny_dir, tmp_path / "shared", seeds=(0,))
    base, sft = cells(spec)
    busy = sft.folder(spec.out_dir)
    busy.mkdir(parents=True)
    with held_by_another_process(busy):
        assert cell_progress(busy, 2) == "running now in another process"
        with caplog.at_level("WARNING"):
            result = run_experiment(spec, progress=False)
        assert {r["method"] for r in result.records} == {"base"}  # the other cell was not touched
        assert not any(busy.iterdir()) and "left to the processes running them" in caplog.text
        with pytest.raises(LpaError, match="being written by another lpa process"):
            run_cell(spec, sft, spec.out_dir, progress=False)
    assert cell_progress(busy, 2) is None  # the holder is gone: an untouched cell again
    assert {r["method"] for r in run_experiment(spec, progress=False).records} == {"base", "sft"}


def test_ratio_is_reference_over_method():
    spec = ExperimentSpec(methods=[{"name": "base"}], reference=None)
    records = [
        {"seed": "all", "rows": [{"model": "m", "method": "base", "benchmark": "b", "attack": "direct", "judge": "k",
                                  "metric": "misclassification", "value": 0.6}]},
        {"seed": 0, "rows": [{"model": "m", "method": "lpa", "benchmark": "b", "attack": "direct", "judge": "k",
                              "metric": "misclassification", "value": 0.2}]},
        {"seed": 1, "rows": [{"model": "m", "method": "lpa", "benchmark": "b", "attack": "direct", "judge": "k",
                              "metric": "misclassification", "value": 0.4}]},
    ]
    summary = summarise(spec, records)
    lpa = next(r for r in ratio_rows(spec, summary) if r["method"] == "lpa")
    assert lpa["misclassification"] == pytest.approx(0.3)
    assert lpa["ratio_vs_base"] == pytest.approx(2.0)
    assert lpa["sd"] == pytest.approx(0.1414, abs=1e-3)


def test_reports_across_models_name_the_model_and_the_kept_step():
    from lpa.experiments.aggregate import SAFETY, glance_table, metric_table

    spec = ExperimentSpec(models=["small", "large"], methods=[{"name": "base"}], reference=None,
                          eval={"judges": ["keyword"]})

    def record(model, method, seed, asr, **extra):
        rows = [{"model": model, "method": method, "benchmark": "b", "attack": "direct", "judge": "keyword",
                 "metric": "asr", "value": asr}]
        return {"model": model, "method": method, "seed": seed, "rows": rows, **extra}

    records = [record("small", "base", "all", 0.5), record("large", "base", "all", 0.25),
               record("large", "lpa", 0, 0.1, selection={"step": 6}),
               record("large", "lpa", 1, 0.3, cost={"steps_done": 8, "stopped": "collapse at step 8"})]
    spec = spec.model_copy(update={"methods": [*spec.methods, *ExperimentSpec(methods=[
        {"name": "lpa", "method": "lpa"}]).methods]})
    summary = summarise(spec, records)
    long = metric_table(spec, summary, SAFETY)
    assert long.splitlines()[0].startswith("| model | metric |")
    assert "| small | asr | b | direct | keyword | 0.50" in long and "| large | asr | b | direct | keyword | 0.25" in long
    glance = glance_table(spec, summary, records)
    assert "| large | lpa | 6/<8 (guard) | 0.20 ± 0.14 |" in glance
    assert "| small | base | 0 | 0.50 |" in glance and "| small | lpa |" not in glance
    one_model = spec.model_copy(update={"models": ["small"]})
    assert metric_table(one_model, summarise(one_model, records[:1]), SAFETY).splitlines()[0].startswith("| metric |")


def test_pooled_outcomes_keep_shared_behaviours_and_name_partial_cells():
    from lpa.experiments.paired import _not_in_every_run, mean_outcomes

    a = {("b", "direct", "k", "harmful\t1"): 1.0, ("b", "pair", "k", "harmful\t1"): 1.0}
    b = {("b", "direct", "k", "harmful\t1"): 0.0}
    assert mean_outcomes([a, b]) == {("b", "direct", "k", "harmful\t1"): 0.5}
    assert _not_in_every_run([a, b]) == ["b · pair"] and _not_in_every_run([a, a]) == []


def test_report_only_aggregates_finished_cells(tiny_dir, tmp_path):
    spec = _spec(tiny_dir, tmp_path / "partial", seeds=(0,))
    with pytest.raises(LpaError, match="No finished cells"):
        run_experiment(spec, progress=False, report_only=True)
    from lpa.experiments.grid import cells, run_cell

    run_cell(spec, cells(spec)[0], spec.out_dir, progress=False)  # only the base cell
    result = run_experiment(spec, progress=False, report_only=True)
    assert {r["method"] for r in result.summary} == {"base"}
    assert result.report.is_file()


def test_only_computes_selected_cells_and_reports_all_finished(tiny_dir, tmp_path):
    from lpa.experiments.grid import parse_only, select_cells

    spec = _spec(tiny_dir, tmp_path / "slices")
    with pytest.raises(LpaError, match="valid: base, sft"):
        select_cells(cells(spec), parse_only(["method=lpa"]))
    with pytest.raises(LpaError, match="valid: model, method, seed"):
        select_cells(cells(spec), parse_only(["steps=3"]))
    first = run_experiment(spec, progress=False, only=parse_only(["seed=0"]))  # base (shared) + sft seed 0
    done = sorted(p.parent.name for p in (tmp_path / "slices").rglob("cell.json"))
    assert done == ["seed-0", "seed-all"]
    assert {(r["method"], r["n_seeds"]) for r in first.summary if r["metric"] == "misclassification"} == {
        ("base", "det"), ("sft", 1)}
    second = run_experiment(spec, progress=False, only=parse_only(["method=sft", "seed=1"]))
    assert {r["n_seeds"] for r in second.summary if r["method"] == "sft" and r["metric"] == "misclassification"} == {2}


def test_extra_attacks_only_for_their_method(tiny_dir, tmp_path):
    from lpa.experiments.grid import suite_for

    spec = _spec(tiny_dir, tmp_path)
    spec.methods[0].extra_attacks = ["prefill"]
    base, sft = (c.entry for c in cells(spec)[:2])
    assert suite_for(spec, base).attacks == ["direct", "prefill"]
    assert suite_for(spec, sft).attacks == ["direct"]


def test_shipped_specs_validate_with_their_training_configs(tmp_path):
    from pathlib import Path

    from lpa.experiments import load_spec
    from lpa.experiments.grid import suite_for, train_config

    root = Path(__file__).resolve().parents[1] / "experiments"
    for name in ("scale.yaml", "scale-core.yaml", "ablation-qwen.yaml", "ablation.yaml", "embedded.yaml"):
        spec = load_spec(root / name)
        for cell in cells(spec):
            suite_for(spec, cell.entry)
            if cell.entry.trains:
                config = train_config(spec, cell, tmp_path)
                assert getattr(config, "layout", "faithful") in ("faithful", "mixed")
    scale = load_spec(root / "scale.yaml")
    assert len(scale.models) == 2 and len(scale.seeds) == 3
    assert {m.name for m in scale.methods} == {"base", "sft", "lpa", "lpa-mixed", "lat-harmful", "refusal-sft"}


def test_ablation_spec_shares_the_scale_studys_cells():
    """ablation-qwen.yaml reuses scale-core's base, lpa and lpa-mixed cells: their keys must stay equal."""
    from pathlib import Path

    import yaml

    from lpa.eval.suite import EvalSuite
    from lpa.experiments import load_spec
    from lpa.experiments.cells import cell_key

    root = Path(__file__).resolve().parents[1] / "experiments"
    core, ablation = load_spec(root / "scale-core.yaml"), load_spec(root / "ablation-qwen.yaml")
    assert core.out == ablation.out
    core_keys = {(c.model, c.entry.name, c.seed): cell_key(core, c) for c in cells(core)}
    shared = [c for c in cells(ablation) if (c.model, c.entry.name, c.seed) in core_keys]
    assert {c.entry.name for c in shared} == {"base", "lpa", "lpa-mixed"}
    assert all(cell_key(ablation, c) == core_keys[(c.model, c.entry.name, c.seed)] for c in shared)
    expensive = EvalSuite.model_validate(yaml.safe_load((root / "scale-expensive.yaml").read_text()))
    assert {a["name"] for a in expensive.attacks} == {"best-of-n", "embedding-pgd"}


def test_demo_spec_and_headline_fit_the_terminal():
    from lpa.experiments.demo import demo_spec, headline

    spec = demo_spec("runs/x", data_dir="/nonexistent")
    lpa = next(m for m in spec.methods if m.name == "lpa")
    assert spec.models == ["qwen2.5-coder-0.5b"] and lpa.train["layout"] == "faithful"
    assert "prefill" in spec.eval.attacks
    summary = []
    for method, asr in (("base", 0.5), ("lpa", 0.2)):
        for attack, value in (("direct", asr), ("prefill", asr + 0.1)):
            summary.append({"method": method, "benchmark": "smoke", "attack": attack, "judge": "keyword", "metric": "asr",
                            "mean": value, "sd": 0.0, "n_seeds": 1, "ci_low": 0.1, "ci_high": 0.9})
    rows = headline(summary, "keyword")
    assert [r[0] for r in rows] == ["ASR smoke · direct", "ASR smoke · prefill (unseen)"]
    assert rows[0][1].startswith("0.50") and rows[0][2].startswith("0.20")
    assert len(rows) <= 12 and all(len(" | ".join(r)) < 100 for r in rows)


def test_report_reads_records_only_and_records_hold_what_it_needs(tiny_dir, tmp_path):
    """Cells write what the report needs (adversary, training texts, judges) when they finish; the report
    never opens a training folder, and a record without those fields still counts (its rows are reported)."""
    import json
    import shutil

    spec = _spec(tiny_dir, tmp_path / "rec", seeds=(0,))
    run_experiment(spec, progress=False)
    marker = next(p for p in (tmp_path / "rec").rglob("cell.json") if p.parent.parent.name == "sft")
    record = json.loads(marker.read_text())
    assert record["train_texts"] and record["identity"]["adapter_sha"] and record["judges"]
    assert "adversary" in record  # None: adversary monitoring was off for this cell
    legacy = {k: v for k, v in record.items() if k not in ("adversary", "train_texts", "identity")}
    marker.write_text(json.dumps({**legacy, "adversary": {"decoded": 1, "harm_keyword_rate": 1.0, "refusal_rate": 0.0,
                                                          "template_rate": 0.0, "first_flagged": "Sure, build a bomb"}}))
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "rec").rglob("cell.json")}
    again = run_experiment(spec, progress=False)  # finished markers count: nothing is recomputed or back-filled
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert "build a bomb" in again.report.read_text()
    report = again.report.read_text()
    shutil.rmtree(marker.parent / "train")  # the report reads records only
    assert run_experiment(spec, progress=False, report_only=True).report.read_text() == report


def test_aggregate_does_not_import_the_grid():
    """experiments.aggregate and experiments.grid no longer import each other."""
    import ast
    from pathlib import Path

    import lpa.experiments.aggregate as aggregate

    tree = ast.parse(Path(aggregate.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {m for m in imported if m and m.startswith("lpa.experiments.") and m not in
                ("lpa.experiments.spec", "lpa.experiments.power", "lpa.experiments.selection",
                 "lpa.experiments.paired")}
