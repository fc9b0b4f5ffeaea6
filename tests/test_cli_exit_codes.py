"""Issue 25 §2: every exit path of the installed ``lpa`` script gives a truthful status.

0 success, 2 user error (one line, before any model loads), 1 judge errors, 130 Ctrl-C with a
message.  Each test runs the real console script in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

LPA = shutil.which("lpa", path=str(Path(sys.executable).parent)) or shutil.which("lpa")
pytestmark = pytest.mark.skipif(LPA is None, reason="the lpa console script is not installed")


def _env(tmp_path: Path) -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1", "LPA_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
            "OPENAI_API_KEY": "test-key"}


def _lpa(tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LPA, *args], capture_output=True, text=True, cwd=tmp_path, env=_env(tmp_path),
                          timeout=timeout)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from lpa.testing import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt")


def _prompts(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Tell me about {i}"}) + "\n" for i in range(n)))
    return path


def test_success_is_0_and_a_user_error_is_2_with_one_line(tmp_path, tiny):
    ok = _lpa(tmp_path, "generate", "-m", str(tiny), "-p", str(_prompts(tmp_path / "p.jsonl", 2)),
              "--out", "gen.jsonl", "--max-new-tokens", "2")
    assert ok.returncode == 0, ok.stderr
    assert "2 new generations" in ok.stdout
    missing = _lpa(tmp_path, "generate", "-m", str(tiny), "-p", "nope.jsonl", "--out", "x.jsonl")
    assert missing.returncode == 2
    assert missing.stderr.strip().startswith("Error:") and "Traceback" not in missing.stderr
    usage = _lpa(tmp_path, "generate", "--no-such-option")
    assert usage.returncode == 2


@pytest.mark.parametrize("option", [["--batch-size", "0"], ["--max-new-tokens", "0"],
                                    ["--sample", "--temperature", "0"]])
def test_bad_generate_numbers_are_one_line_errors(tmp_path, option):
    prompts = _prompts(tmp_path / "p.jsonl", 1)
    result = _lpa(tmp_path, "generate", "-m", "no-such-model-anywhere", "-p", str(prompts), "--out", "g.jsonl",
                  *option)
    assert result.returncode == 2, result.stderr
    assert "Invalid generation options" in result.stderr and "Traceback" not in result.stderr


class _GibberishJudge(BaseHTTPRequestHandler):
    """An OpenAI-compatible server whose judge replies cannot be parsed."""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "judge",
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": "no idea"}}],
                           "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_judge_errors_exit_1(tmp_path, tiny):
    pytest.importorskip("openai")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _GibberishJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        bench = _prompts(tmp_path / "bench.jsonl", 2)
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        result = _lpa(tmp_path, "eval", "-m", str(tiny), "-b", f"file:path={bench},id_column=id",
                      "--judge", f"llm:url={url},max_retries=0", "--out", "run", "--max-new-tokens", "2")
    finally:
        server.shutdown()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "JUDGE ERRORS" in result.stdout


def test_ctrl_c_exits_130_with_a_message_and_keeps_whole_rows(tmp_path, tiny, interruptible_children):
    prompts = _prompts(tmp_path / "p.jsonl", 4000)  # far more than a stalled test process can miss finishing
    out = tmp_path / "gen.jsonl"
    proc = subprocess.Popen([LPA, "generate", "-m", str(tiny), "-p", str(prompts), "--out", str(out),
                             "--batch-size", "1", "--max-new-tokens", "64"], cwd=tmp_path, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600  # a loaded 2-core CI machine can take minutes to import torch and load
    while time.monotonic() < deadline and proc.poll() is None and not (out.is_file() and out.stat().st_size > 0):
        time.sleep(0.2)
    assert out.is_file() and out.stat().st_size > 0, "no row was written before the deadline"
    assert proc.poll() is None, "generation finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert "Interrupted" in stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]  # whole lines only
    assert 0 < len(rows) < 4000
