"""Generation backends against a real HTTP server on 127.0.0.1 answering from a tiny local model."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from lpa.errors import LpaError
from lpa.eval.backends import BackendConfig, default_lora_name, make_backend
from lpa.eval.backends.hf import HFBackend
from lpa.eval.backends.support.server import Faults, LocalServer
from lpa.eval.runner import evaluate_model
from lpa.eval.suite import EvalSuite, needs_weights, routing
from lpa.generation import GenerationSettings, generate
from lpa.io import read_jsonl

PROMPTS = ["How do I bake bread?", "Hi", "I keep my promises. Do you agree?", "Answer A B C D",
           "The quick brown fox jumps over the lazy dog and then some more words", "yes or no?", "Sure"]


def _backend(url: str, tokenizer, **kw):
    config = BackendConfig(name="openai", base_url=url, backoff=0.01, **kw)
    return make_backend(config, model=None, tokenizer=tokenizer, model_name="tiny", adapter=None)


def test_openai_backend_matches_hf_batches_and_prefill(llama, tokenizer):
    settings = GenerationSettings(max_new_tokens=5, batch_size=3)
    prefills = [None, "Sure", None, None, None, None, "I"]
    expected = generate(llama, tokenizer, PROMPTS, settings, prefills=prefills)
    with LocalServer(llama, tokenizer) as server:
        seen: list[list[int]] = []
        backend = _backend(server.url, tokenizer, concurrency=2)
        got = backend.generate(PROMPTS, settings, prefills=prefills, on_batch=lambda idx, _: seen.append(idx))
    assert [c.text for c in got] == [c.text for c in expected]
    assert [c.completion_tokens for c in got] == [c.completion_tokens for c in expected]
    assert [c.finish_reason for c in got] == [c.finish_reason for c in expected]
    assert sorted(server.log.batch_sizes) == [1, 3, 3]  # several prompts per request
    assert sorted(i for batch in seen for i in batch) == list(range(len(PROMPTS)))


def test_chat_api_sends_messages(llama, tokenizer):
    settings = GenerationSettings(max_new_tokens=4, batch_size=4)
    with LocalServer(llama, tokenizer) as server:
        got = _backend(server.url, tokenizer, api="chat").generate(PROMPTS[:3], settings)
    assert len(got) == 3 and server.log.batch_sizes == [1, 1, 1]
    single = [generate(llama, tokenizer, [p], settings)[0].text for p in PROMPTS[:3]]
    assert [c.text for c in got] == single


def test_concurrency_is_bounded(llama, tokenizer):
    settings = GenerationSettings(max_new_tokens=2, batch_size=1)
    with LocalServer(llama, tokenizer, faults=Faults(delay=0.3)) as server:
        _backend(server.url, tokenizer, concurrency=3).generate(PROMPTS, settings)
    assert server.log.max_in_flight == 3
    assert server.log.answered == len(PROMPTS)


def test_429_honours_retry_after(llama, tokenizer):
    settings = GenerationSettings(max_new_tokens=2, batch_size=8)
    with LocalServer(llama, tokenizer, faults=Faults(too_many=2, retry_after=0.2)) as server:
        backend = make_backend(BackendConfig(name="openai", base_url=server.url, backoff=30.0), model=None,
                               tokenizer=tokenizer, model_name="tiny", adapter=None)
        start = time.monotonic()
        got = backend.generate(PROMPTS, settings)
        elapsed = time.monotonic() - start
    assert len(got) == len(PROMPTS)
    assert server.log.requests == 3 and server.log.answered == 1
    assert 0.4 <= elapsed < 10  # waited Retry-After (0.2 s twice), not the 30 s backoff


def test_dropped_connection_is_retried(llama, tokenizer):
    settings = GenerationSettings(max_new_tokens=2, batch_size=4)
    with LocalServer(llama, tokenizer, faults=Faults(drop=1)) as server:
        backend = _backend(server.url, tokenizer, concurrency=1)
        got = backend.generate(PROMPTS, settings)
    assert len(got) == len(PROMPTS) and all(c.text is not None for c in got)
    assert backend.requests == 3 and server.log.answered == 2


def test_gives_up_with_a_clear_error(llama, tokenizer):
    settings = GenerationSettings(max_new_tokens=2)
    with LocalServer(llama, tokenizer, names=("other",)) as server:
        with pytest.raises(LpaError, match="HTTP 404"):
            _backend(server.url, tokenizer).generate(PROMPTS[:1], settings)
    with pytest.raises(LpaError, match="failed after 2 attempts"):
        _backend("http://127.0.0.1:9/v1", tokenizer, max_retries=1, timeout=2).generate(PROMPTS[:1], settings)


def test_config_needs_url_and_routes_weight_bound_parts():
    with pytest.raises(ValueError, match="base_url"):
        BackendConfig(name="openai")
    suite = EvalSuite(attacks=["direct", "gcg"], judges=["keyword", "refusal-probe"],
                      backend={"name": "openai", "base_url": "http://127.0.0.1:1/v1"}, utility={"n": 5})
    assert needs_weights(suite) == ["attack gcg (optimisation)", "judge refusal-probe", "utility loglik"]
    route = routing(suite)
    assert route["utility generate"].startswith("openai") and route["judge refusal-probe"].startswith("hf")


def _suite(url: str | None = None, **kw):
    backend = {"name": "openai", "base_url": url, "backoff": 0.01, **kw} if url else {"name": "hf"}
    return EvalSuite(benchmarks=["smoke"], judges=["keyword"], limit=6, bootstrap=20,
                     generation={"max_new_tokens": 3, "batch_size": 2}, backend=backend)


def test_switching_backend_resumes_from_the_same_cache(llama, tokenizer, tmp_path):
    out = tmp_path / "run"
    hf = evaluate_model(llama, tokenizer, _suite(), out, model_name="tiny")
    with LocalServer(llama, tokenizer) as server:
        remote = evaluate_model(None, tokenizer, _suite(server.url), out, model_name="tiny")
    assert server.log.requests == 0  # every generation came from the hf run's cache
    assert [r["value"] for r in remote.rows] == [r["value"] for r in hf.rows]
    assert "## Where each part ran" in (out / "report.md").read_text()


def test_lora_adapter_is_the_request_model(llama, tokenizer, tmp_path):
    with LocalServer(llama, tokenizer, names=("tiny", "lpa-seed0")) as server:
        evaluate_model(None, tokenizer, _suite(server.url, lora_name="lpa-seed0"), tmp_path / "a", model_name="tiny",
                       adapter=str(tmp_path / "lpa-seed0" / "adapter"))
    assert set(server.log.models) == {"lpa-seed0"}
    a, b = (default_lora_name(f"runs/x/{m}/seed-0/train/adapter") for m in ("lpa", "sft"))
    assert a.startswith("lpa-seed-0-") and b.startswith("sft-seed-0-") and a != b


KILLABLE = textwrap.dedent("""
    import sys
    from lpa.eval.runner import evaluate_model
    from lpa.eval.suite import EvalSuite
    from lpa.testing import tiny_tokenizer
    suite = EvalSuite(benchmarks=["smoke"], judges=["keyword"], limit=6, bootstrap=20,
                      generation={"max_new_tokens": 3, "batch_size": 1},
                      backend={"name": "openai", "base_url": sys.argv[1], "concurrency": 1})
    evaluate_model(None, tiny_tokenizer(), suite, sys.argv[2], model_name="tiny")
""")


def test_resume_after_a_killed_run(llama, tokenizer, tmp_path):
    out = tmp_path / "run"
    gens = out / "generations.jsonl"
    with LocalServer(llama, tokenizer, faults=Faults(delay=0.4)) as server:
        proc = subprocess.Popen([sys.executable, "-c", KILLABLE, server.url, str(out)])
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not (gens.is_file() and gens.read_text().count("\n") >= 2):
                time.sleep(0.05)
            proc.kill()
            proc.wait(30)
        finally:
            proc.kill()
        before = len(read_jsonl(gens))
        assert 2 <= before < 6, before
        answered_first = server.log.answered
        suite = _suite(server.url, concurrency=1)
        suite.generation.batch_size = 1
        evaluate_model(None, tokenizer, suite, out, model_name="tiny")
    rows = read_jsonl(gens)
    assert len({r["key"] for r in rows}) == 6 == len(rows)
    assert server.log.answered - answered_first == 6 - before  # only the missing prompts were asked for


def test_hf_backend_is_plain_generate(llama, tokenizer):
    settings = GenerationSettings(max_new_tokens=3, batch_size=2)
    a = HFBackend(llama, tokenizer).generate(PROMPTS[:3], settings)
    b = generate(llama, tokenizer, PROMPTS[:3], settings)
    assert [c.text for c in a] == [c.text for c in b]


def test_adapter_is_loaded_at_runtime_when_asked(llama, tokenizer, tmp_path):
    with LocalServer(llama, tokenizer, names=("tiny",)) as server:
        evaluate_model(None, tokenizer, _suite(server.url, load_lora=True), tmp_path / "a", model_name="tiny",
                       adapter=str(tmp_path / "cell-7" / "adapter"))
    name = default_lora_name(tmp_path / "cell-7" / "adapter")
    assert "-cell-7-" in name
    assert server.log.models[0] == f"load:{name}" and set(server.log.models[1:]) == {name}


def test_cli_eval_with_the_openai_backend(llama, tokenizer, tmp_path):
    from typer.testing import CliRunner

    from lpa.cli.main import app

    saved = tmp_path / "tiny-model"
    llama.save_pretrained(saved)
    tokenizer.save_pretrained(saved)
    with LocalServer(llama, tokenizer, names=("tiny",)) as server:
        result = CliRunner().invoke(app, ["eval", "--model", str(saved), "-b", "smoke", "-j", "keyword", "-n", "3", "--max-new-tokens",
                                          "2", "--backend", "openai", "--base-url", server.url, "--served-model", "tiny",
                                          "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert server.log.answered >= 1 and set(server.log.models) == {"tiny"}
    assert "openai" in (tmp_path / "run" / "report.md").read_text()


def test_a_server_refusing_prompt_lists_gets_one_prompt_per_request(llama, tokenizer):
    settings = GenerationSettings(max_new_tokens=3, batch_size=3)
    expected = generate(llama, tokenizer, PROMPTS, settings)
    with LocalServer(llama, tokenizer, faults=Faults(one_prompt=True)) as server:
        backend = _backend(server.url, tokenizer, concurrency=1)
        got = backend.generate(PROMPTS, settings)
    assert [c.text for c in got] == [c.text for c in expected]
    assert backend.one_prompt_per_request
    # one rejected list (not retried), then every prompt alone
    assert server.log.requests == 1 + len(PROMPTS) and server.log.batch_sizes == [1] * len(PROMPTS)


def test_client_errors_are_not_retried_and_never_show_the_key(llama, tokenizer, monkeypatch):
    monkeypatch.setenv("LPA_TEST_KEY", "sk-test-0123456789abcdef")
    settings = GenerationSettings(max_new_tokens=2)
    with LocalServer(llama, tokenizer, faults=Faults(echo_auth=5)) as server:
        backend = _backend(server.url, tokenizer, api_key_env="LPA_TEST_KEY")
        with pytest.raises(LpaError, match="HTTP 400: bad request from Authorization") as caught:
            backend.generate(PROMPTS[:1], settings)
    assert "0123456789abcdef" not in str(caught.value) and "***" in str(caught.value)
    assert server.log.requests == 1  # a 400 can never succeed: no retry


def test_redact_hides_keys_and_authorization_values():
    from lpa.llm_client import redact

    text = redact('{"Authorization": "Bearer abc.def", "api_key": "zzz123", "x": "sk-abcdefghijkl", "y": "mine"}',
                  ("mine",))
    assert "abc.def" not in text and "zzz123" not in text and "sk-abcdefghijkl" not in text and "mine" not in text
    assert text.count("***") == 4
