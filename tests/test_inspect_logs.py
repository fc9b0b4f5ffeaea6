"""Issue 25 §5: every evaluation is also an inspect_ai eval log that inspect_ai itself reads back."""

from __future__ import annotations

import pytest

from lpa.eval.runner import evaluate_model
from lpa.eval.suite import EvalSuite

pytest.importorskip("inspect_ai")


def test_eval_writes_one_inspect_log_per_benchmark_and_attack(llama, tokenizer, tmp_path):
    from inspect_ai.log import read_eval_log

    suite = EvalSuite(benchmarks=["smoke"], attacks=["direct", "prefill"], judges=["keyword", "refusal-probe"],
                      limit=3, bootstrap=20, generation={"max_new_tokens": 3, "batch_size": 4},
                      system="Be brief.")
    results = evaluate_model(llama, tokenizer, suite, tmp_path / "run")
    logs = sorted((tmp_path / "run" / "logs").glob("*.eval"))
    assert len(logs) == 2 and logs[0].name.endswith("_smoke_direct.eval") and logs[1].name.endswith("_smoke_prefill.eval")

    log = read_eval_log(str(logs[0]))
    assert log.status == "success" and log.eval.model == results.meta["model"]
    assert log.eval.metadata["lpa_identity"] == results.meta["identity"]
    assert set(log.eval.metadata["judges"]) == {"keyword", "refusal-probe"}
    assert "κ" in log.eval.metadata["judges"]["keyword"]["kappa"]
    assert len(log.samples) == 3
    sample = log.samples[0]
    roles = [m.role for m in sample.messages]
    assert roles[0] == "system" and roles[-1] == "assistant"  # the messages sent, then the answer
    assert sample.input[0].content == "Be brief."
    assert sample.metadata["model"] == results.meta["identity"]  # who answered, on every sample
    assert set(sample.scores) == {"keyword", "refusal-probe"}
    keyword = sample.scores["keyword"]
    assert keyword.value in ("refused", "complied", "partial", "error") and keyword.metadata["label"] == keyword.value
    assert keyword.answer == sample.output.completion  # the viewer's Answer column shows the model's answer
    assert sample.output.usage.output_tokens <= 3
    assert sample.metadata["attack"] == "direct"
    asr = results.value("smoke", "asr", judge="keyword")
    metrics = {s.name: s.metrics for s in log.results.scores}
    assert metrics["keyword"]["asr"].value == pytest.approx(asr)
    prefill = read_eval_log(str(logs[1]))
    assert prefill.samples[0].metadata["prefill"]  # the attack's prefill is shown with the answer


@pytest.mark.slow
def test_inspect_view_serves_the_run_logs(llama, tokenizer, tmp_path):
    """`inspect view` (a user's way in) lists every log of a run with its task name."""
    import json
    import os
    import shutil
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    inspect = shutil.which("inspect", path=str(Path(sys.executable).parent)) or shutil.which("inspect")
    if inspect is None:
        pytest.skip("the inspect console script is not installed")
    suite = EvalSuite(benchmarks=["smoke"], attacks=["direct", "prefill"], judges=["keyword"], limit=2,
                      bootstrap=10, generation={"max_new_tokens": 2})
    evaluate_model(llama, tokenizer, suite, tmp_path / "run")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([inspect, "view", "--log-dir", str(tmp_path / "run" / "logs"), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    try:
        listing = None
        for _ in range(300):
            try:
                listing = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/logs", timeout=5))
                break
            except OSError:
                time.sleep(0.5)
        assert listing is not None, "inspect view did not start"
        assert sorted(f["task"] for f in listing["files"]) == ["lpa/smoke/direct", "lpa/smoke/prefill"]
    finally:
        server.terminate()
        server.wait(timeout=30)
