"""Paired statistics: known values, vectorised speed, and `lpa compare` on two real runs."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from lpa.eval.stats import (
    _binom_two_sided,
    load_outcomes,
    mcnemar_exact,
    min_detectable_difference,
    paired_bootstrap,
    paired_rows,
    pooled_paired_rows,
    sign_flip_p,
)


def test_mcnemar_exact_known_values():
    # 10 discordant pairs split 9/1: p = 2 * (C(10,0) + C(10,1)) / 2**10 = 22/1024
    a = [1] * 9 + [0] * 1 + [1] * 5
    b = [0] * 9 + [1] * 1 + [1] * 5
    test = mcnemar_exact(a, b)
    assert (test.a_only, test.b_only, test.n) == (9, 1, 15)
    assert test.p_value == pytest.approx(22 / 1024)
    assert mcnemar_exact([1, 0], [1, 0]).p_value == 1.0
    assert _binom_two_sided(0, 2000) > 0 or _binom_two_sided(0, 2000) == 0.0  # no overflow at large n
    assert _binom_two_sided(1000, 2000) == 1.0


def test_paired_bootstrap_is_tighter_than_unpaired():
    rng = np.random.default_rng(1)
    base = (rng.random(200) < 0.6).astype(float)
    method = base.copy()
    flip = rng.choice(200, 30, replace=False)
    method[flip[:25]] = 0  # 25 behaviours newly refused, 5 newly answered
    method[flip[25:]] = 1 - base[flip[25:]]
    diff = paired_bootstrap(base, method, n_boot=5000)
    assert diff.diff == pytest.approx(method.mean() - base.mean())
    assert diff.ci_low < diff.diff < diff.ci_high < 0
    assert diff.p_value < 0.01
    width_paired = diff.ci_high - diff.ci_low
    width_unpaired = 2 * 1.96 * math.sqrt(base.var() / 200 + method.var() / 200)
    assert width_paired < 0.6 * width_unpaired


def test_identical_runs_and_errors():
    same = paired_bootstrap([1, 0, 1], [1, 0, 1])
    assert same.diff == 0 and same.p_value == 1.0 and same.ci_low == same.ci_high == 0
    with pytest.raises(ValueError):
        paired_bootstrap([1, 0], [1])
    assert paired_bootstrap([], []).n == 0


def test_vectorised_speed():
    rng = np.random.default_rng(0)
    a, b = rng.random(2000) < 0.5, rng.random(2000) < 0.4
    start = time.perf_counter()
    paired_bootstrap(a, b, n_boot=10_000)
    assert time.perf_counter() - start < 10  # generous: ~0.3 s on one core


def test_holm_adjustment_matches_the_step_down_by_hand():
    from lpa.eval.stats import holm_adjust

    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04); returned in input order
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0]) and holm_adjust([]) == []


def test_min_detectable_difference_shrinks_with_n():
    assert min_detectable_difference(60) > min_detectable_difference(240)
    assert min_detectable_difference(100, p=0.5) == pytest.approx(2.8016 * math.sqrt(0.5 / 100), rel=1e-3)


def test_compare_runs_paired(llama, tokenizer, tmp_path):
    from lpa.cli.main import app
    from lpa.eval.runner import evaluate_model
    from lpa.eval.suite import EvalSuite
    from lpa.testing import tiny_model

    suite = EvalSuite(benchmarks=["smoke"], judges=["keyword"], limit=6, bootstrap=20,
                      generation={"max_new_tokens": 3, "batch_size": 6})
    evaluate_model(llama, tokenizer, suite, tmp_path / "base", model_name="a")
    evaluate_model(tiny_model("llama", seed=1), tokenizer, suite, tmp_path / "other", model_name="b")
    a, b = load_outcomes(tmp_path / "base"), load_outcomes(tmp_path / "other")
    rows = paired_rows(a, b, n_boot=200)
    assert {r["metric"] for r in rows} == {"asr", "refusal_rate"} and sum(r["n"] for r in rows) == len(a) == 6
    assert all(r["mcnemar_p"] <= r["holm_p"] <= 1.0 for r in rows)
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "base"), str(tmp_path / "other"),
                                      "--out", str(tmp_path / "cmp"), "--n-boot", "200"])
    assert result.exit_code == 0, result.output
    assert "McNemar p" in result.output and "Holm p" in result.output and (tmp_path / "cmp" / "paired.md").is_file()
    pooled = CliRunner().invoke(app, ["compare", str(tmp_path / "other"), str(tmp_path / "other"), "--seeds",
                                      "--base", str(tmp_path / "base"), "--n-boot", "200"])
    assert pooled.exit_code == 0, pooled.output
    assert "2 seeds pooled vs" in pooled.output and "sign-flip p" in pooled.output
    lonely = CliRunner().invoke(app, ["compare", str(tmp_path / "other"), "--base", str(tmp_path / "base")])
    assert "A base run is for seeds" in str(lonely.exception)


def test_sign_flip_p_exact_and_sampled():
    assert sign_flip_p([0, 0, 0]) == 1.0
    assert sign_flip_p([1, 1, 1]) == pytest.approx(2 / 8)  # all-plus or all-minus of 3 signs
    assert sign_flip_p([1, -1, 1, -1]) == 1.0
    assert sign_flip_p([1.0] * 20, n_perm=4000) == pytest.approx(1 / 4001)  # sampled: never 0, at least 1/(n+1)
    # differences of +-1 make it the sign test: 20 of 24 positive
    assert sign_flip_p([1, 1, 1, 1, 1, -1] * 4, n_perm=20000) == pytest.approx(_binom_two_sided(4, 24), abs=0.002)


def test_pooled_seeds_use_the_behaviour_as_unit():
    """Three seeds that each fix the same 2 of 10 behaviours (one seed a third): the stacked 7/0 pairs would give
    McNemar p 0.016, but only 3 behaviours moved: the exact sign-flip p is 2/8; the difference is the seeds'
    mean minus the base."""
    key = lambda i: ("hb", "direct", "kw", f"harmful\ts{i}")  # noqa: E731
    base = {key(i): 1.0 for i in range(10)}
    seeds = [{**base, key(0): 0.0, key(1): 0.0} for _ in range(3)]
    seeds[2][key(5)] = 0.0  # one seed also fixes a third behaviour
    (row,) = pooled_paired_rows(base, seeds, n_boot=500)
    assert row["metric"] == "asr" and row["n"] == 10 and row["seeds"] == 3
    assert row["mean_a"] == 1.0 and row["diff"] == pytest.approx(-(2 + 1 / 3) / 10)
    assert row["perm_p"] == pytest.approx(0.25) and row["holm_p"] == row["perm_p"]
    assert mcnemar_exact([1.0] * 7, [0.0] * 7).p_value < 0.05
    del seeds[1][key(9)]  # behaviours some seed did not judge are left out
    assert pooled_paired_rows(base, seeds, n_boot=100)[0]["n"] == 9


def test_compare_labels_stay_distinct_when_every_run_folder_is_named_eval(tmp_path):
    """Study cells are all ``<method>/seed-<s>/eval``: each run needs its own column, not one per model+adapter."""
    from lpa.report.tables import distinguishing_paths, run_labels

    dirs = [tmp_path / m / s / "eval" for m, s in (("base", "seed-all"), ("lpa", "seed-0"), ("lpa", "seed-1"),
                                                   ("sft", "seed-0"))]
    assert distinguishing_paths(dirs) == ["seed-all/eval", "lpa/seed-0/eval", "seed-1/eval", "sft/seed-0/eval"]
    results = [{"meta": {"model": "m"}}] + [{"meta": {"model": "m", "adapter": str(d / "adapter")}} for d in dirs[1:]]
    labels = run_labels(dirs, results)
    assert labels[0] == "m" and len(set(labels)) == 4
    assert labels[1] == "m+adapter (lpa/seed-0/eval)"
