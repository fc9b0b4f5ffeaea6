"""Coherence statistics, the OpenAI-compatible client and plugin creation."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from lpa.coherence import coherence_stats, distinct_n, is_refusal, is_template_leak
from lpa.errors import LpaError
from lpa.eval.attacks import ATTACKS
from lpa.llm_client import LLMClient, weighted_number
from lpa.plugins import create


def test_refusal_and_collapse_statistics():
    assert is_refusal("I'm sorry, but I can't help with that.")
    assert not is_refusal("Sure! Here is a recipe for bread.")
    assert is_template_leak("I do not agree with this statement. Also...")
    assert distinct_n("the cat the cat the cat the cat") < 0.5
    stats = coherence_stats(["", "I agree with this statement.", "Paris is the capital of France."])
    assert stats.empty_rate == pytest.approx(1 / 3)
    assert stats.template_leak_rate == pytest.approx(1 / 3)


def test_weighted_number():
    import math

    assert weighted_number({"80": math.log(0.5), "60": math.log(0.5)}) == pytest.approx(70)
    assert weighted_number({"I": math.log(0.9), "50": math.log(0.05)}) is None


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        reply = {
            "choices": [
                {
                    "message": {"content": f"echo {body['messages'][-1]['content']}"},
                    "logprobs": {"content": [{"top_logprobs": [{"token": "42", "logprob": 0.0}]}]},
                }
            ]
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_llm_client_against_local_fake_server(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        client = LLMClient(f"http://127.0.0.1:{server.server_port}/v1", "fake")
        result = client.chat([{"role": "user", "content": "hi"}], top_logprobs=5)
        assert result.text == "echo hi"
        assert weighted_number(result.first_token_logprobs) == 42
        assert "key" not in json.dumps(client.args()).lower()
    finally:
        server.shutdown()


def test_missing_api_key_for_remote_endpoint(monkeypatch):
    monkeypatch.delenv("SOME_KEY", raising=False)
    with pytest.raises(LpaError, match="SOME_KEY"):
        LLMClient("https://api.example.invalid/v1", "m", api_key_env="SOME_KEY").chat([])


def test_plugin_creation_by_name_and_spec():
    attack = create(ATTACKS, {"name": "direct", "args": {}})
    assert attack.spec() == {"name": "direct", "args": {}}
    with pytest.raises(LpaError, match="Valid choices"):
        create(ATTACKS, "no-such-attack")
