"""A small OpenAI-compatible server over an in-process HF model, for tests and benches.

It speaks the subset the ``openai`` backend uses (``/v1/completions`` with a prompt list,
``/v1/chat/completions``, ``/v1/models``) and can inject faults — 429 with Retry-After,
dropped connections, slow answers — so retries and resume are tested against a real socket.
It is not a serving engine: use vLLM (docs/gpu.md) for real runs.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lpa.generation import GenerationSettings, format_chat, generate_texts


@dataclass
class Faults:
    """Faults to inject, counted down as requests arrive."""

    too_many: int = 0  # next N requests: HTTP 429 with Retry-After
    retry_after: float = 0.05
    drop: int = 0  # next N requests: close the connection without an answer
    delay: float = 0.0  # seconds added to every answer
    one_prompt: bool = False  # answer a list of prompts with HTTP 500, as llama_cpp.server does
    echo_auth: int = 0  # next N requests: HTTP 400 whose text echoes the Authorization header


@dataclass
class ServerLog:
    requests: int = 0
    answered: int = 0
    prompts: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0


class LocalServer:
    """``with LocalServer(model, tokenizer) as server: server.url`` -> ``http://127.0.0.1:PORT/v1``."""

    def __init__(self, model: Any, tokenizer: Any, *, names: tuple[str, ...] = (), faults: Faults | None = None,
                 port: int = 0) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.names = set(names)
        self.faults = faults or Faults()
        self.log = ServerLog()
        self._lock = threading.Lock()  # one generate at a time; requests still overlap in flight
        self._count = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        settings = GenerationSettings(
            max_new_tokens=int(body.get("max_tokens") or 16),
            do_sample=float(body.get("temperature") or 0) > 0,
            temperature=float(body.get("temperature") or 1.0),
            top_p=float(body.get("top_p") or 1.0),
            seed=int(body.get("seed") or 0),
            batch_size=1024,
        )
        if path.endswith("/chat/completions"):
            messages = body["messages"]
            prefill = None
            if messages and messages[-1]["role"] == "assistant" and body.get("continue_final_message"):
                prefill, messages = messages[-1]["content"], messages[:-1]
            prompts = [format_chat(self.tokenizer, messages, prefill=prefill)]
        else:
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        with self._lock:
            completions = generate_texts(self.model, self.tokenizer, prompts, settings)
        self.log.prompts += len(prompts)
        self.log.batch_sizes.append(len(prompts))
        self.log.models.append(str(body.get("model")))
        finish = [("stop" if c.finish_reason == "eos" else "length") for c in completions]
        if path.endswith("/chat/completions"):
            choices = [{"index": 0, "message": {"role": "assistant", "content": completions[0].text},
                        "finish_reason": finish[0]}]
        else:
            choices = [{"index": i, "text": c.text, "finish_reason": f}
                       for i, (c, f) in enumerate(zip(completions, finish, strict=True))]
        if body.get("return_token_ids"):  # vLLM's extension: per-choice token ids
            for choice, c in zip(choices, completions, strict=True):
                choice["token_ids"] = c.token_ids
        usage = {"prompt_tokens": sum(c.prompt_tokens for c in completions),
                 "completion_tokens": sum(c.completion_tokens for c in completions)}
        return {"object": "text_completion", "model": body.get("model"), "choices": choices, "usage": usage}


def _handler(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, obj: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            self._send(200, {"object": "list", "data": [{"id": n, "object": "model"} for n in sorted(server.names)]})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            faults = server.faults
            with server._count:
                server.log.requests += 1
                if faults.too_many > 0:
                    faults.too_many -= 1
                    fault = "429"
                elif faults.drop > 0:
                    faults.drop -= 1
                    fault = "drop"
                elif faults.echo_auth > 0:
                    faults.echo_auth -= 1
                    fault = "echo"
                elif faults.one_prompt and isinstance(body.get("prompt"), list) and len(body["prompt"]) > 1:
                    fault = "list"
                else:
                    fault = ""
                server.log.in_flight += 1
                server.log.max_in_flight = max(server.log.max_in_flight, server.log.in_flight)
            try:
                if fault == "429":
                    self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": str(faults.retry_after)})
                    return
                if fault == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault == "echo":
                    text = f"bad request from Authorization: {self.headers.get('Authorization')}"
                    self._send(400, {"error": {"message": text}})
                    return
                if fault == "list":
                    self._send(500, {"error": {"message": "AssertionError: len(body.prompt) <= 1"}})
                    return
                if self.path.endswith("/load_lora_adapter"):
                    server.names.add(str(body.get("lora_name")))
                    server.log.models.append(f"load:{body.get('lora_name')}")
                    self._send(200, {"loaded": body.get("lora_name")})
                    return
                if server.names and body.get("model") not in server.names:
                    self._send(404, {"error": {"message": f"model {body.get('model')!r} not served"}})
                    return
                time.sleep(faults.delay)
                self._send(200, server.answer(self.path, body))
                server.log.answered += 1
            finally:
                with server._count:
                    server.log.in_flight -= 1

    return Handler
