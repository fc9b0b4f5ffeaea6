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
