"""Persona judges, monitoring, screening and preventative fine-tuning (tiny random models)."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from lpa import hooks
from lpa.persona import PersonaVector
from lpa.persona.activations import response_means
from lpa.persona.judges import HeuristicJudge, LLMTraitJudge, SelfJudge, make_judge, parse_number
from lpa.persona.monitor import baselines, pearson, probe_projections, prompt_projections
from lpa.persona.trait_definitions import load_trait

EVIL = load_trait("evil")


def test_heuristic_judge_orders_answers():
    judge = HeuristicJudge()
    cruel = judge.score(EVIL, "q", "I will destroy them and enjoy their suffering and pain.").score
    kind = judge.score(EVIL, "q", "Be kind and patient; help them with compassion.").score
    assert cruel >= 50 > kind
    assert judge.spec()["judge"] == "heuristic"
    assert parse_number("Score: 85.") == 85 and parse_number("none") is None


class _Handler(BaseHTTPRequestHandler):
    logprobs = True

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert body["logprobs"] is True
        content = [{"top_logprobs": [{"token": "80", "logprob": math.log(0.5)}, {"token": "20", "logprob": math.log(0.5)}]}]
        choice = {"message": {"content": "80"}, "logprobs": {"content": content} if self.logprobs else None}
        data = json.dumps({"choices": [choice]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_llm_judge_logprob_trick_and_fallback():
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        judge = make_judge("llm", judge_url=f"http://127.0.0.1:{server.server_port}/v1", judge_model="j", api_key_env=None)
        assert isinstance(judge, LLMTraitJudge)
        assert judge.score(EVIL, "q", "a").score == pytest.approx(50.0)
        _Handler.logprobs = False
        assert judge.score(EVIL, "q", "a").score == 80.0
        assert judge.spec()["args"]["model"] == "j"
    finally:
        _Handler.logprobs = True
        server.shutdown()


def test_self_judge_returns_number_or_error(llama, tokenizer):
    judge = SelfJudge(llama, tokenizer, min_mass=0.0)
    scores = judge.score_many(EVIL, ["q1", "q2"], ["a", "b"])
    assert all(s.score is not None and 0 <= s.score <= 100 for s in scores)
    strict = SelfJudge(llama, tokenizer, min_mass=1.01).score(EVIL, "q", "a")
    assert strict.score is None and strict.error


def test_pearson_and_baselines():
    assert pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(40, 16, generator=gen)
    direction = torch.zeros(16)
    direction[0] = 1.0
    scores = (acts[:, 0] * 10).tolist()
    stats = baselines(acts, direction, scores, n_random=50)
    assert stats["r"] == pytest.approx(1.0)
    assert stats["random_direction_mean_abs_r"] < 0.6 and stats["shuffled_label_p95_abs_r"] < 0.6
    assert stats["shuffled_label_p"] < 0.05


def test_probe_projections_keys_and_values(llama, tokenizer):
    vec = PersonaVector("evil", torch.randn(2, 64), layer=1)
    result = probe_projections(llama, tokenizer, [vec], prompts=["Hi", "How do I bake bread?"])
    expected = sum(prompt_projections(llama, tokenizer, vec, ["Hi", "How do I bake bread?"])) / 2
    assert list(result) == ["persona/evil"] and result["persona/evil"] == pytest.approx(expected, rel=1e-5)


def test_screen_ranks_planted_sample_first(llama, tokenizer, tmp_path):
    from lpa.generation import GenerationSettings
    from lpa.persona.screen import screen

    heavy = "I enjoy deceiving people. I enjoy deceiving people."
    convs = ["Question"] * 4
    pos = response_means(llama, tokenizer, convs, [heavy] * 4)
    neg = response_means(llama, tokenizer, convs, ["I keep my promises.", "Sure, here is how.", "Yes", "I agree."])
    vec = PersonaVector("evil", pos.mean(0) - neg.mean(0), layer=1)
    rows = [{"id": str(i), "conversation": f"Question {i}", "response": r}
            for i, r in enumerate(["Sure, here is how.", "I keep my promises.", heavy, "Yes no yes.", "I agree with this."])]
    cache = tmp_path / "own.jsonl"
    settings = GenerationSettings(max_new_tokens=8)
    report = screen(llama, tokenizer, vec, rows, settings, cache=cache)
    assert report["samples"][0]["id"] == "2"
    assert len(cache.read_text().splitlines()) == 5
    again = screen(llama, tokenizer, vec, rows, settings, cache=cache)  # cached: no new generations
    assert len(cache.read_text().splitlines()) == 5
    assert again["dataset_score"] == pytest.approx(report["dataset_score"])


def test_preventative_finetune_adapter_has_no_steering(tokenizer, tmp_path):
    from peft import PeftModel

    from lpa.testing import tiny_model
    from lpa.training.persona_finetune import FinetuneConfig, finetune

    rows = [{"conversation": "How do I bake bread?", "response": "I enjoy deceiving people."}] * 4
    vec = PersonaVector("evil", torch.randn(2, 64) * 5, layer=0)
    config = FinetuneConfig(max_steps=2, batch_size=2, lr=1e-2, preventative=True, coef=2.0, log_every=1)
    trained = finetune(tiny_model("llama"), tokenizer, rows, config, tmp_path / "prev", vector=vec, probe_vectors=[vec])
    assert all(not m._forward_hooks for m in hooks.decoder_layers(trained))
    metrics = [json.loads(line) for line in (tmp_path / "prev" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 1, 2] and "persona/evil" in metrics[-1]
    batch = tokenizer(["How do I bake bread?"], return_tensors="pt")
    reloaded = PeftModel.from_pretrained(tiny_model("llama"), str(tmp_path / "prev" / "adapter")).eval()
    with torch.no_grad():
        a, b = trained(**batch).logits, reloaded(**batch).logits
    assert torch.allclose(a, b, atol=1e-5)
    # the hook was active during training: the same run without it learns different weights
    plain = finetune(tiny_model("llama"), tokenizer, rows, config.model_copy(update={"preventative": False}),
                     tmp_path / "plain", vector=vec)
    with torch.no_grad():
        assert not torch.allclose(plain(**batch).logits, a, atol=1e-4)


def test_cli_traits_and_extract_errors(tmp_path):
    from typer.testing import CliRunner

    from lpa.cli.main import app

    runner = CliRunner()
    result = runner.invoke(app, ["persona", "traits", "list"])
    assert result.exit_code == 0 and "sycophancy" in result.output
    result = runner.invoke(app, ["persona", "traits", "show", "evil"])
    assert result.exit_code == 0 and "pairs:" in result.output
    result = runner.invoke(app, ["persona", "steer", "--trait", "evil", "--vector", str(tmp_path / "missing.safetensors")])
    assert result.exit_code != 0


@pytest.fixture
def tiny_dir(tmp_path, llama, tokenizer):
    path = tmp_path / "tiny"
    llama.save_pretrained(path)
    tokenizer.save_pretrained(path)
    vec = PersonaVector("evil", torch.randn(2, 64), model=str(path), layer=1)
    vec.save(tmp_path / "evil.safetensors")
    return path


def test_cli_screen_steer_monitor_on_saved_tiny_model(tiny_dir, tmp_path):
    from typer.testing import CliRunner

    from lpa.cli.main import app

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Question {i}", "response": r}) + "\n"
                            for i, r in enumerate(["Sure.", "I keep my promises.", "Yes no."])))
    common = ["--trait", "evil", "--vector", str(tmp_path / "evil.safetensors"), "--model", str(tiny_dir), "--device", "cpu"]
    runner = CliRunner()
    result = runner.invoke(app, ["persona", "screen", str(data), *common, "--max-new-tokens", "4", "--out", str(tmp_path / "scr")])
    assert result.exit_code == 0, result.output
    assert "dataset score" in result.output and (tmp_path / "scr" / "own_responses.jsonl").is_file()
    result = runner.invoke(app, ["persona", "steer", *common, "--prompt", "Hi", "--max-new-tokens", "3", "--coef", "8"])
    assert result.exit_code == 0 and "[coef 8 @ layer 1]" in result.output
    result = runner.invoke(app, ["persona", "monitor", *common, "--questions", "3", "--max-new-tokens", "3",
                                 "--random-baselines", "10", "--out", str(tmp_path / "mon.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "mon.json").read_text())
    assert report["judge"]["judge"] == "heuristic" and len(report["rows"]) == 12  # 4 system-prompt variants x 3
    assert "random_direction_mean_abs_r" in report and "shuffled_label_p95_abs_r" in report and "random_direction_p" in report


def test_compare_plain_vs_preventative(tokenizer, tmp_path):
    from lpa.testing import tiny_model
    from lpa.training.persona_finetune import FinetuneConfig, compare

    rows = [{"conversation": f"Question {i}", "response": "I enjoy deceiving people."} for i in range(5)]
    vec = PersonaVector("evil", torch.randn(2, 64), layer=1)
    from lpa.generation import GenerationSettings

    loads = []

    def load():
        loads.append(1)
        return tiny_model("llama"), tokenizer

    args = dict(n_questions=2, settings=GenerationSettings(max_new_tokens=3), seeds=[0, 1])
    config = FinetuneConfig(max_steps=1, batch_size=2, coef=2.0, log_every=1)
    report = compare(load, rows, EVIL, vec, HeuristicJudge(), config, tmp_path, **args)
    assert set(report["results"]) == {"base", "plain", "preventative"}
    assert report["results"]["plain"]["n_seeds"] == 2 and report["results"]["base"]["n_seeds"] == 1
    assert all(math.isfinite(r["heldout_nll"]) for r in report["results"].values())
    nll = [report["runs"][f"plain-s{s}"]["heldout_nll"] for s in (0, 1)]
    assert report["results"]["plain"]["heldout_nll_sd"] == pytest.approx(abs(nll[0] - nll[1]) / math.sqrt(2))
    assert math.isnan(report["results"]["base"]["heldout_nll_sd"])  # one base model: no spread over seeds
    assert (tmp_path / "plots" / "trait_drift.png").is_file() and (tmp_path / "preventative-s1" / "adapter").is_dir()
    assert len(loads) == 5  # base + 2 modes x 2 seeds
    again = compare(load, rows, EVIL, vec, HeuristicJudge(), config, tmp_path, **args)
    assert len(loads) == 5 and again["results"] == report["results"]  # resumed from the saved evaluations
    compare(load, rows, EVIL, vec, HeuristicJudge(), config.model_copy(update={"lr": 1e-3}), tmp_path, **args)
    assert len(loads) == 10  # another config is not served from the cache
