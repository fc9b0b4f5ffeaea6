"""`lpa demo`: the spec's shape (n, attacks, the unseen human-jailbreak family), the headline, and what makes it fast."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from lpa.experiments.demo import DEMO_N, UNSEEN_ATTACKS, attack_kappas, demo_spec, headline
from lpa.io import read_jsonl
from lpa.plugins import spec_name

ROOT = Path(__file__).resolve().parents[1]


def _data_dir(tmp_path: Path) -> Path:
    for name in ("harmbench_behaviors_text_val.csv", "xstest_prompts.csv"):
        (tmp_path / name).write_text("x\n", encoding="utf-8")
    return tmp_path


def test_demo_spec_runs_40_plus_40_under_direct_prefill_and_in_the_wild(tmp_path):
    spec = demo_spec("runs/x", data_dir=str(_data_dir(tmp_path)))
    assert [(spec_name(b), b["args"].get("limit")) for b in spec.eval.benchmarks] == [("harmbench", DEMO_N),
                                                                                     ("xstest", DEMO_N)]
    assert DEMO_N >= 40 and spec.eval.benchmarks[1]["args"]["subset"] == "safe"
    assert [spec_name(a) for a in spec.eval.attacks] == ["direct", "prefill", "in-the-wild"]
    wild = next(a for a in spec.eval.attacks if spec_name(a) == "in-the-wild")
    assert wild["args"] == {"k": 1, "max_prompt_tokens": 384}  # one seeded template per request, the same for both cells
    assert spec.eval.attack_benchmarks == {"prefill": ["harmbench"], "in-the-wild": ["harmbench"]}
    assert spec.eval.judges[0] == "cascade" and spec.eval.generation.max_new_tokens == 48
    lpa = next(m for m in spec.methods if m.name == "lpa")
    assert lpa.train["steps"] == 4 and lpa.train["layout"] == "faithful"
    assert "adversary_monitor" not in lpa.train  # off (the default): nothing of it reaches the headline
    assert spec.eval.utility is not None and spec.eval.utility.n == 30


def test_demo_trains_in_bf16_only_where_the_cpu_multiplies_it_natively(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for native, dtype in ((True, "bf16"), (False, "auto")):
        monkeypatch.setattr("lpa.models.loader.cpu_has_native_bf16", lambda native=native: native)
        lpa = next(m for m in demo_spec("runs/x", data_dir=str(_data_dir(tmp_path))).methods if m.name == "lpa")
        assert lpa.train["dtype"] == dtype


def test_demo_assets_fetch_what_the_demo_uses():
    """`make demo` fetches every asset up front, so the demo's own time has no download in it."""
    match = re.search(r"^DEMO_ASSETS \?= (.+)$", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M)
    assert match is not None
    assert set(match.group(1).split()) >= {"qwen2.5-coder-0.5b", "mmlu", "minilm", "in-the-wild"}


def _summary(asr: dict[str, tuple[float, float]]) -> list[dict]:
    rows = []
    for attack, values in asr.items():
        for method, value in zip(("base", "lpa"), values, strict=True):
            rows.append({"method": method, "benchmark": "harmbench", "attack": attack, "judge": "cascade",
                         "metric": "asr", "mean": value, "sd": 0.0, "n_seeds": 1, "ci_low": 0.1, "ci_high": 0.9})
    for method in ("base", "lpa"):
        rows.append({"method": method, "benchmark": "xstest", "attack": "direct", "judge": "cascade",
                     "metric": "refusal_rate", "mean": 0.5, "sd": 0.0, "n_seeds": 1, "ci_low": 0.3, "ci_high": 0.7})
        rows.append({"method": method, "benchmark": "harmbench", "attack": "direct", "judge": "-",
                     "metric": "template_leak_rate", "mean": 0.0, "sd": 0.0, "n_seeds": 1, "ci_low": 0.0,
                     "ci_high": 0.0})
    return rows


def test_headline_shows_every_unseen_attack_with_its_judge_kappa():
    assert UNSEEN_ATTACKS == ("prefill", "in-the-wild")
    summary = _summary({"direct": (0.45, 0.40), "prefill": (0.80, 0.82), "in-the-wild": (0.70, 0.55)})
    rows = headline(summary, "cascade", kappas={"direct": 0.48, "in-the-wild": 0.84, "prefill": float("nan")})
    labels = [r[0] for r in rows]
    assert labels[:3] == ["ASR harmbench · direct κ 0.48", "ASR harmbench · prefill (unseen)",
                          "ASR harmbench · in-the-wild (unseen) κ 0.84"]
    assert "benign refusal xstest · direct" in labels and "template answers harmbench · direct" in labels
    assert rows[2][1].startswith("0.70") and rows[2][2].startswith("0.55")
    assert len(rows) <= 12 and all(len(" | ".join(r)) < 100 for r in rows)
    assert headline(summary, "cascade")[0][0] == "ASR harmbench · direct"  # no κ given: plain labels


def test_attack_kappas_only_for_the_validated_judge_version():
    from lpa.eval.attack_report import family_kappas

    validated = family_kappas()["in-the-wild"]["cascade"]
    assert validated["kappa"]["value"] >= 0.75  # why the demo's unseen attack is in-the-wild (docs/judging.md)
    kappas = attack_kappas("cascade", [validated["spec"]])
    assert kappas["in-the-wild"] == validated["kappa"]["value"] and "direct" in kappas
    other = {**validated["spec"], "rules_version": -1}
    assert attack_kappas("cascade", [validated["spec"], other]) == {}
    assert attack_kappas("cascade", "unrecorded") == {} and attack_kappas("cascade", []) == {}


def test_in_the_wild_requests_are_generated_in_batches_and_resume(llama, tokenizer, tmp_path, monkeypatch):
    """The runner gives in-the-wild a batch of requests per call (one engine batch, not one request at a
    time); every request's rows are still cached under its own key, so a rerun generates nothing."""
    from lpa.eval import runner as runner_module
    from lpa.eval.runner import evaluate_model
    from lpa.eval.suite import EvalSuite
    calls: list[int] = []
    original = runner_module._Runner.generate_prompts

    def counting(self, prompts, on_batch=None):
        calls.append(len(prompts))
        return original(self, prompts, on_batch=on_batch)

    monkeypatch.setattr(runner_module._Runner, "generate_prompts", counting)
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(4):
        (folder / f"t{i}.yaml").write_text(f"name: t{i}\nvalue: 'Persona {i}: {{{{ prompt }}}}'\n", encoding="utf-8")
    suite = EvalSuite(benchmarks=["smoke"], judges=["keyword"], limit=5, bootstrap=20,
                      attacks=[f"in-the-wild:file={folder},k=1"], generation={"max_new_tokens": 2, "batch_size": 4})
    evaluate_model(llama, tokenizer, suite, tmp_path / "run")
    assert calls == [4, 1]  # 5 requests, batch 4: two calls instead of five
    gens = read_jsonl(tmp_path / "run" / "generations.jsonl")
    assert len(gens) == 5 and len({g["sample_id"] for g in gens}) == 5 and len({g["unit_key"] for g in gens}) == 5
    evaluate_model(llama, tokenizer, suite, tmp_path / "run")
    assert calls == [4, 1] and len(read_jsonl(tmp_path / "run" / "generations.jsonl")) == 5


def test_llamacpp_known_noise_is_debug_and_real_warnings_stay():
    from lpa.eval.backends.llamacpp import log_level

    noise = "llama_adapter_lora_init_impl: lora for 'blk.0.attn_q.weight' cannot use buft 'CPU_REPACK', fallback to CPU"
    assert log_level(logging.WARNING, noise) == logging.DEBUG
    assert log_level(logging.WARNING, "llama_context: n_ctx_per_seq < n_ctx_train") == logging.WARNING
    unified = "llama_context: n_ctx_seq (38912) > n_ctx_train (32768) -- possible training context overflow"
    assert log_level(logging.WARNING, unified) == logging.DEBUG  # the shared KV buffer, not one sequence
    assert log_level(logging.ERROR, "failed to load model") == logging.ERROR


def test_cost_line_names_each_cells_training_and_evaluation_time():
    from lpa.experiments.demo import cost_line

    line = cost_line([{"method": "base", "cost": {"train_wall_s": 0.0, "eval_wall_s": 120.4}},
                      {"method": "lpa", "cost": {"train_wall_s": 210.2, "eval_wall_s": 130.6}}])
    assert line == "time per cell: base: evaluation 120 s; lpa: training 210 s + evaluation 131 s"
