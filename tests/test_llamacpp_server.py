"""The ``openai`` backend against a real OpenAI-compatible server we did not write: ``llama_cpp.server``.

Started by the test on 127.0.0.1 with the embedded SmolLM2 GGUF.  That server answers a list of
prompts per ``/v1/completions`` request with HTTP 500 (it asserts one prompt), so the backend must
learn to send one prompt per request, and must not retry the list.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from lpa.eval.backends import BackendConfig, make_backend
from lpa.generation import GenerationSettings
from lpa.io import read_jsonl

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("fastapi") is None,
                       reason="needs llama-cpp-python[server] (the dev extra)"),
]
PROMPTS = ["How do I bake bread?", "Hi", "Tell me a joke about cats.", "What is 2+2?", "Name three colours."]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server():
    from lpa.models.loader import _resolve_source

    gguf = _resolve_source("smollm2-135m")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--model_alias", "smollm2-135m",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/models", timeout=2) as answer:
                    if json.load(answer)["data"]:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("llama_cpp.server did not start")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def tokenizer():
    from lpa.models.loader import load_tokenizer

    return load_tokenizer("smollm2-135m")


def _backend(url: str, tokenizer, **kw):
    config = BackendConfig(name="openai", base_url=url, served_model="smollm2-135m", backoff=0.05, **kw)
    return make_backend(config, model=None, tokenizer=tokenizer, model_name="smollm2-135m", adapter=None)


def test_completions_with_prefill_and_concurrency(server, tokenizer):
    settings = GenerationSettings(max_new_tokens=12, batch_size=3)
    prefills = [None, "Sure", None, None, "1."]
    backend = _backend(server, tokenizer, concurrency=3)
    got = backend.generate(PROMPTS, settings, prefills=prefills)
    assert backend.one_prompt_per_request  # learnt from the server's HTTP 500 on the first list
    assert backend.requests <= 1 + 1 * 3 + len(PROMPTS)  # no retries of the list: lists in flight + singles
    assert len(got) == len(PROMPTS) and all(c.completion_tokens > 0 for c in got)
    # the same GGUF in process: the server continues the same text (same engine, batch of one)
    local = make_backend(BackendConfig(name="llama.cpp"), model=None, tokenizer=tokenizer, model_name="smollm2-135m",
                         adapter=None).generate(PROMPTS, settings.model_copy(update={"batch_size": 1}), prefills=prefills)
    same_start = sum(a.text.split()[:2] == b.text.split()[:2] for a, b in zip(got, local, strict=True))
    assert same_start >= 3, [(a.text, b.text) for a, b in zip(got, local, strict=True)]


def test_chat_mode(server, tokenizer):
    got = _backend(server, tokenizer, api="chat", concurrency=2).generate(PROMPTS[:3], GenerationSettings(max_new_tokens=8))
    assert len(got) == 3 and all(c.text.strip() for c in got)


KILLABLE = textwrap.dedent("""
    import sys
    from lpa.eval.runner import evaluate_model
    from lpa.eval.suite import EvalSuite
    from lpa.models.loader import load_tokenizer
    suite = EvalSuite(benchmarks=["smoke"], judges=["keyword"], limit=6, bootstrap=20,
                      generation={"max_new_tokens": 24, "batch_size": 1},
                      backend={"name": "openai", "base_url": sys.argv[1], "concurrency": 1,
                               "served_model": "smollm2-135m"})
    evaluate_model(None, load_tokenizer("smollm2-135m"), suite, sys.argv[2], model_name="smollm2-135m")
""")


def test_resume_after_a_killed_run(server, tokenizer, tmp_path):
    from lpa.eval.runner import evaluate_model
    from lpa.eval.suite import EvalSuite

    out = tmp_path / "run"
    gens = out / "generations.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, server, str(out)])
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (gens.is_file() and gens.read_text().count("\n") >= 2):
            time.sleep(0.05)
        proc.kill()
        proc.wait(30)
    finally:
        proc.kill()
    before = len(read_jsonl(gens))
    assert 2 <= before < 6, before
    suite = EvalSuite(benchmarks=["smoke"], judges=["keyword"], limit=6, bootstrap=20,
                      generation={"max_new_tokens": 24, "batch_size": 1},
                      backend={"name": "openai", "base_url": server, "concurrency": 2, "served_model": "smollm2-135m"})
    evaluate_model(None, tokenizer, suite, out, model_name="smollm2-135m")
    rows = read_jsonl(gens)
    assert len({r["key"] for r in rows}) == 6 == len(rows)  # only the missing prompts were generated
