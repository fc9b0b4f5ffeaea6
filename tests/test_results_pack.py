"""Archived result folders: packed answers (X.jsonl.gz) read like plain ones, and a packed run resumes."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest
from typer.testing import CliRunner

from lpa.errors import LpaError
from lpa.io import (
    JsonlCache,
    append_jsonl,
    existing_jsonl,
    jsonl_exists,
    pack_jsonl,
    packed_path,
    read_jsonl,
    run_lock,
    unpack_jsonl,
)
from lpa.report.archive import ANSWER_FILES, answer_files, pack, redraw_plots

ROWS = [{"key": f"k{i}", "text": f"answer {i} – ünïcode"} for i in range(5)]


def _write(path, rows=ROWS):
    append_jsonl(path, rows)
    return path


def test_a_packed_file_reads_like_the_plain_one(tmp_path):
    plain = _write(tmp_path / "generations.jsonl")
    before = plain.read_bytes()
    packed = pack_jsonl(plain)
    assert packed == tmp_path / "generations.jsonl.gz" and not plain.exists()
    assert gzip.decompress(packed.read_bytes()) == before
    assert existing_jsonl(plain) == packed and jsonl_exists(plain)
    assert read_jsonl(plain) == ROWS  # the plain name is what readers ask for
    assert read_jsonl(packed) == ROWS
    assert not jsonl_exists(tmp_path / "missing.jsonl") and read_jsonl(tmp_path / "missing.jsonl") == []


def test_packing_is_deterministic_like_gzip_n(tmp_path):
    first = pack_jsonl(_write(tmp_path / "a" / "outcomes.jsonl")).read_bytes()
    second = pack_jsonl(_write(tmp_path / "b" / "outcomes.jsonl")).read_bytes()
    assert first == second  # no file name, no time stamp in the header
    assert first[4:8] == b"\0\0\0\0"  # gzip MTIME field


def test_the_plain_file_wins_when_it_holds_rows(tmp_path):
    plain = _write(tmp_path / "g.jsonl")
    pack_jsonl(plain)
    _write(plain, [{"key": "new"}])  # a rerun's plain file beside an old archive
    assert existing_jsonl(plain) == plain and read_jsonl(plain) == [{"key": "new"}]
    plain.write_text("")  # an empty plain file (a lock created it) hides nothing
    assert existing_jsonl(plain) == packed_path(plain) and read_jsonl(plain) == ROWS


def test_unfinished_or_busy_files_are_not_packed(tmp_path):
    torn = tmp_path / "torn.jsonl"
    torn.write_text('{"key": "a"}\n{"key": "b", "te')
    with pytest.raises(LpaError, match="partial line"):
        pack_jsonl(torn)
    assert torn.exists() and not packed_path(torn).exists()
    busy = _write(tmp_path / "busy.jsonl")
    import subprocess
    import sys

    script = f"from lpa.io import pack_jsonl\npack_jsonl({str(busy)!r})"
    with run_lock(busy):
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode != 0 and "being written by another lpa process" in result.stderr
    assert busy.exists() and not packed_path(busy).exists()
    with pytest.raises(LpaError, match="File not found"):
        pack_jsonl(tmp_path / "nothing.jsonl")


def test_a_corrupt_archive_is_one_clear_error(tmp_path):
    bad = tmp_path / "g.jsonl.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(LpaError, match="Cannot read"):
        read_jsonl(tmp_path / "g.jsonl")
    with pytest.raises(LpaError, match="Cannot unpack"):
        unpack_jsonl(tmp_path / "g.jsonl")


def test_a_cache_on_a_packed_file_unpacks_and_appends(tmp_path):
    path = tmp_path / "judgements.jsonl"
    with JsonlCache(path, "eval.judgements") as cache:
        cache.add(ROWS)
    pack_jsonl(path)
    with JsonlCache(path, "eval.judgements") as cache:
        assert all(r["key"] in cache for r in ROWS)  # nothing would be recomputed
        cache.add([{"key": "more"}])
    assert not packed_path(path).exists()
    assert [r["key"] for r in read_jsonl(path)] == [r["key"] for r in ROWS] + ["more"]


def test_untagged_rows_count_only_where_allowed(tmp_path):
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps({"key": "a", "text": "t"}) + "\n")  # written before rows were tagged
    with JsonlCache(path, "eval.generations") as cache:
        assert "a" in cache
    with pytest.raises(LpaError, match="holds rows lpa did not write"):
        JsonlCache(path, "generate", key="key", untagged=False)


def test_pack_a_folder_packs_only_answer_files_and_refuses_a_torn_one_whole(tmp_path):
    for cell in ("lpa/seed-0/eval", "base/seed-all/eval"):
        for name in ANSWER_FILES:
            _write(tmp_path / cell / name)
    _write(tmp_path / "lpa" / "seed-0" / "train-metrics.jsonl")
    (tmp_path / "base" / "seed-all" / "eval" / "utility.jsonl").write_text('{"key": "x"')
    with pytest.raises(LpaError, match="partial line.*nothing was packed"):
        pack(tmp_path)
    assert len(answer_files(tmp_path)) == 8
    (tmp_path / "base" / "seed-all" / "eval" / "utility.jsonl").write_text('{"key": "x"}\n')
    done = pack(tmp_path)
    assert len(done) == 8 and answer_files(tmp_path) == []
    assert all(f.packed_bytes < f.plain_bytes for f in done if "utility" not in f.path.name)
    assert (tmp_path / "lpa" / "seed-0" / "train-metrics.jsonl").exists()  # not an answer file
    assert pack(tmp_path) == []  # packing again is a no-op
    with pytest.raises(LpaError, match="not a folder"):
        pack(tmp_path / "nope")


def test_a_packed_run_reports_compares_and_resumes_as_before(llama, tokenizer, tmp_path):
    from lpa.cli.main import app
    from lpa.eval.runner import evaluate_model
    from lpa.eval.stats import load_outcomes
    from lpa.eval.suite import EvalSuite
    from lpa.testing import tiny_model

    suite = EvalSuite(benchmarks=["smoke"], judges=["keyword"], limit=6, bootstrap=20, examples=2,
                      generation={"max_new_tokens": 3, "batch_size": 6})
    evaluate_model(llama, tokenizer, suite, tmp_path / "base", model_name="a")
    evaluate_model(tiny_model("llama", seed=1), tokenizer, suite, tmp_path / "other", model_name="b")
    runner = CliRunner()

    def compare_output() -> str:
        result = runner.invoke(app, ["compare", str(tmp_path / "base"), str(tmp_path / "other"), "--n-boot", "200"])
        assert result.exit_code == 0, result.output
        return result.output

    plain_compare, plain_outcomes = compare_output(), load_outcomes(tmp_path / "base")
    answers = runner.invoke(app, ["compare", str(tmp_path / "base"), str(tmp_path / "other"), "--answers"]).output
    shutil.rmtree(tmp_path / "base" / "plots")
    result = runner.invoke(app, ["results", "pack", str(tmp_path / "base"), str(tmp_path / "other")])
    assert result.exit_code == 0, result.output
    assert "packed 3 file(s)" in result.output  # generations, judgements, outcomes (no utility asked)
    assert not any((tmp_path / "base").glob("*.jsonl"))

    assert compare_output() == plain_compare and "McNemar p" in plain_compare
    assert load_outcomes(tmp_path / "base") == plain_outcomes
    assert runner.invoke(app, ["compare", str(tmp_path / "base"), str(tmp_path / "other"), "--answers"]).output \
        == answers
    result = runner.invoke(app, ["results", "plots", str(tmp_path)])
    assert result.exit_code == 0 and "drew 4 plot(s)" in result.output, result.output
    assert (tmp_path / "base" / "plots" / "asr_by_benchmark.png").is_file()
    assert {p.name for p in redraw_plots(tmp_path / "base")} == {p.name for p in (tmp_path / "base" / "plots").iterdir()}

    texts = [r["text"] for r in read_jsonl(tmp_path / "base" / "generations.jsonl")]
    report = (tmp_path / "base" / "report.md").read_text()
    # other weights under the same name: only answers read back from the archive keep the report unchanged
    evaluate_model(tiny_model("llama", seed=1), tokenizer, suite, tmp_path / "base", model_name="a")
    assert (tmp_path / "base" / "report.md").read_text() == report
    assert [r["text"] for r in read_jsonl(tmp_path / "base" / "generations.jsonl")] == texts
    assert not packed_path(tmp_path / "base" / "generations.jsonl").exists()
    assert not packed_path(tmp_path / "base" / "outcomes.jsonl").exists()


def test_results_commands_give_one_clear_error(tmp_path):
    from lpa.cli.main import app

    result = CliRunner().invoke(app, ["results", "plots", str(tmp_path)])
    assert result.exit_code != 0
    assert "No evaluation run" in str(result.exception) + result.output
