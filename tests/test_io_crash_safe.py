"""Issue 25 §1: one crash-safe appender, run locks and run keys for every JSONL cache."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from lpa.errors import LpaError
from lpa.generation import GenerationSettings, generate_jsonl, read_prompts
from lpa.io import JsonlCache, append_jsonl, read_jsonl, run_lock


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_append_cuts_a_torn_last_line_and_reports_it(tmp_path, caplog):
    path = tmp_path / "cache.jsonl"
    path.write_text('{"key": "a"}\n{"key": "b"}\n{"key": "c", "text": "half a ro')
    append_jsonl(path, [{"key": "d"}])
    assert [r["key"] for r in _lines(path)] == ["a", "b", "d"]  # every line parses: nothing glued on
    assert "partial last line" in caplog.text


def test_a_failed_append_rolls_back_to_the_last_whole_line(tmp_path):
    """A full disk (here: a file-size limit) mid-append leaves no torn line behind."""
    path = tmp_path / "cache.jsonl"
    path.write_text('{"key": "a"}\n')
    script = textwrap.dedent(f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))
        from lpa.io import append_jsonl
        try:
            append_jsonl({str(path)!r}, [{{"key": str(i), "text": "x" * 40}} for i in range(10)])
        except OSError as exc:
            print("failed", exc.errno)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("failed")
    assert path.read_text() == '{"key": "a"}\n'


def test_generate_resumes_cleanly_after_a_torn_line(tmp_path, llama, tokenizer):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Say {i}"}) + "\n" for i in range(6)))
    clean, torn = tmp_path / "clean.jsonl", tmp_path / "torn.jsonl"
    settings = GenerationSettings(max_new_tokens=3, batch_size=2)
    assert generate_jsonl(llama, tokenizer, prompts, clean, settings, progress=False) == 6
    lines = clean.read_text().splitlines(keepends=True)
    torn.write_text("".join(lines[:3]) + lines[3][:60])
    assert generate_jsonl(llama, tokenizer, prompts, torn, settings, progress=False) == 3
    rows = read_jsonl(torn, strict=True)  # no corrupt line anywhere
    assert sorted(r["id"] for r in rows) == [f"p{i}" for i in range(6)]
    assert generate_jsonl(llama, tokenizer, prompts, torn, settings, progress=False) == 0


def test_out_equal_to_prompts_or_holding_foreign_rows_is_refused(tmp_path, llama, tokenizer):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "a", "prompt": "Hi"}) + "\n")
    with pytest.raises(LpaError, match="is the prompts file"):
        generate_jsonl(llama, tokenizer, prompts, prompts, GenerationSettings(max_new_tokens=2), progress=False)
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "a", "prompt": "something else"}) + "\n")  # colliding id, not an answer
    with pytest.raises(LpaError, match="other.jsonl:1 holds rows lpa did not write"):
        generate_jsonl(llama, tokenizer, prompts, other, GenerationSettings(max_new_tokens=2), progress=False)
    assert _lines(other) == [{"id": "a", "prompt": "something else"}]  # untouched


def test_a_cache_of_another_kind_or_run_is_refused(tmp_path):
    path = tmp_path / "c.jsonl"
    with JsonlCache(path, "eval.generations") as cache:
        cache.add([{"key": "k", "text": "t"}])
    with pytest.raises(LpaError, match="'eval.generations' rows, not a 'persona.answers' cache"):
        JsonlCache(path, "persona.answers")
    run = tmp_path / "r.jsonl"
    with JsonlCache(run, "generate", key="id", run_key="A") as cache:
        cache.add([{"id": "1", "model": "m"}])
    with pytest.raises(LpaError, match="another run"):
        JsonlCache(run, "generate", key="id", run_key="B")
    with JsonlCache(run, "generate", key="id", run_key="A") as cache:
        assert "1" in cache


def test_a_second_writer_gets_a_clear_error(tmp_path):
    path = tmp_path / "gen.jsonl"
    script = f"from lpa.io import JsonlCache\nJsonlCache({str(path)!r}, 'generate', key='id')"
    with run_lock(path):
        busy = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        with run_lock(path):  # re-entrant in the process that holds it
            pass
    assert busy.returncode != 0 and "being written by another lpa process" in busy.stderr
    free = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert free.returncode == 0, free.stderr


def test_input_files_are_read_strictly(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "prompt": "Hi"}\n{"id": "b", "prompt": "Ho')  # truncated LAST line
    with pytest.raises(LpaError, match=r"p.jsonl:2: not valid JSON"):
        read_prompts(path)
    path.write_text('{"id": "a", "prompt": "Hi"}\n{"id": "a", "prompt": "Ho"}\n')
    with pytest.raises(LpaError, match="duplicate ids a"):
        read_prompts(path)
    for bad in ('{"prompt": null}', '{"prompt": 3}', '{"messages": "hi"}', "[1, 2]"):
        path.write_text(bad + "\n")
        with pytest.raises(LpaError, match="p.jsonl"):
            read_prompts(path)
    path.write_bytes(b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(LpaError, match="not UTF-8"):
        read_prompts(path)


def test_an_eval_folder_being_written_is_refused(tmp_path, llama, tokenizer):
    from lpa.eval.runner import evaluate_model
    from lpa.eval.suite import EvalSuite
    from lpa.testing import held_by_another_process

    out = tmp_path / "run"
    out.mkdir()
    with held_by_another_process(out):
        suite = EvalSuite(benchmarks=["smoke"], judges=["keyword"], limit=2, generation={"max_new_tokens": 2})
        with pytest.raises(LpaError, match="being written by another lpa process"):
            evaluate_model(llama, tokenizer, suite, out)
        assert not (out / "generations.jsonl").exists()
