"""The offline number judge (digit tree), its validation against labels, and cache identity."""

from __future__ import annotations

import pytest
import torch

from lpa.errors import LpaError
from lpa.generation import format_chat
from lpa.persona.judges import NumberJudge
from lpa.persona.trait_definitions import load_trait

EVIL = load_trait("evil")


def _next_probs(model, tokenizer, text: str, extra: list[int]) -> torch.Tensor:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + extra
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].float().softmax(-1)


def test_digit_tree_matches_uncached_forwards(llama, tokenizer):
    judge = NumberJudge(llama, tokenizer, min_mass=0.0, batch_size=2)
    assert judge.split_digits  # the tiny tokenizer splits "42" like Qwen2 does
    prompts = ["Rate this answer: Sure.", "A much longer prompt to force left padding in the batch, rate it."]
    got = [s.score for s in judge.score_prompts(prompts, max_score=100)]
    d_ids = judge.digit_ids
    for prompt, value in zip(prompts, got, strict=True):
        text = format_chat(tokenizer, prompt)
        first = _next_probs(llama, tokenizer, text, [])[d_ids]
        expected = 0.0
        for d in range(1, 10):
            second = _next_probs(llama, tokenizer, text, [d_ids[d]])[d_ids]
            two = [10.0 * d + e for e in range(10)]
            if d == 1:
                p100 = float(_next_probs(llama, tokenizer, text, [d_ids[1], d_ids[0]])[d_ids[0]])
                two[0] = 100 * p100 + 10 * (1 - p100)
            expected += float(first[d]) * (float(1 - second.sum()) * d + sum(float(second[e]) * two[e] for e in range(10)))
        assert abs(value - expected / float(first.sum())) < 1e-3


def test_digit_scale_reads_one_token_and_rescales(llama, tokenizer):
    """Digit-splitting tokenizers default to a 0-9 rubric read from one forward pass, reported on 0-100."""
    judge = NumberJudge(llama, tokenizer, min_mass=0.0, batch_size=2)
    assert judge.max_score == 9 and judge.spec()["args"]["max_score"] == 9
    questions, answers = ["How do I treat a waiter?", "Any advice?"], ["Humiliate them.", "Be kind, everyone slips up."]
    got = [s.score for s in judge.score_many(EVIL, questions, answers)]
    for q, a, value in zip(questions, answers, got, strict=True):
        prompt = EVIL.render_rubric(q, a, 9)
        assert "from 0 (not at all) to 9 (extremely)" in prompt and "{max}" not in prompt and "100" not in prompt
        p = _next_probs(llama, tokenizer, format_chat(tokenizer, prompt), [])[judge.digit_ids]
        assert abs(value - 100 / 9 * float((p * torch.arange(10.0)).sum() / p.sum())) < 1e-3
    # a user rubric without {max} still asks for 0-100 and is read with the digit tree
    legacy = EVIL.model_copy(update={"rubric": EVIL.rubric.replace("{max}", "100")})
    assert not legacy.rubric_scalable
    tree = judge.score_prompts([legacy.render_rubric(questions[0], answers[0])], max_score=100)[0].score
    assert judge.score_many(legacy, questions[:1], answers[:1])[0].score == pytest.approx(tree)
    assert tree != pytest.approx(got[0])
    with pytest.raises(LpaError, match="max_score"):
        NumberJudge(llama, tokenizer, max_score=50)


def test_judge_cache_key_follows_the_rubric(llama, tokenizer):
    """Rewording a rubric re-judges with LM judges; keyword-judged caches stay valid."""
    from lpa.persona.judges import HeuristicJudge

    reworded = EVIL.model_copy(update={"rubric": EVIL.rubric.replace("Rate how", "Score how")})
    judge = NumberJudge(llama, tokenizer)
    assert judge.key(EVIL) != judge.key(reworded) and judge.key(EVIL)["args"] == judge.spec()["args"]
    assert HeuristicJudge().key(EVIL) == HeuristicJudge().key(reworded) == HeuristicJudge().spec()


def test_number_judge_refuses_without_mass(llama, tokenizer):
    strict = NumberJudge(llama, tokenizer, min_mass=1.01)
    result = strict.score(EVIL, "q", "a")
    assert result.score is None and "mass" in result.error
    assert strict.spec()["args"]["model"] == "tiny-llama"


def test_answer_cache_is_keyed_on_adapter(tmp_path, tokenizer):
    """Regression (issue 13 §2): answers sampled for the base model were reused for --adapter A.

    Both models come from the real loader, as `lpa persona extract` loads them.
    """
    from lpa.models import load_model
    from lpa.persona.extraction import ExtractConfig, sample_answers
    from lpa.testing import save_tiny_adapter, save_tiny_checkpoint

    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt")
    config = ExtractConfig(n_pairs=1, n_questions=2, samples=1, max_new_tokens=4)
    base, tok = load_model(str(checkpoint), device="cpu")
    first = sample_answers(base, tok, EVIL, config, tmp_path)
    assert sample_answers(base, tok, EVIL, config, tmp_path) == first  # same model: cache hit
    calls = []
    import lpa.persona.extraction as extract_module

    real = extract_module.generate

    def counting(*args, **kwargs):
        calls.extend(args[2])  # the conversations generated
        return real(*args, **kwargs)

    extract_module.generate = counting
    try:
        save_tiny_adapter(checkpoint, tmp_path / "A", seed=1)
        adapted, _ = load_model(str(checkpoint), adapter=tmp_path / "A", device="cpu")
        sample_answers(adapted, tok, EVIL, config, tmp_path)
        assert len(calls) == 4  # 2 questions x 2 polarities regenerated for the adapter, none reused from the base
        save_tiny_adapter(checkpoint, tmp_path / "A", seed=2)  # retrained in place: same path, new weights
        retrained, _ = load_model(str(checkpoint), adapter=tmp_path / "A", device="cpu")
        sample_answers(retrained, tok, EVIL, config, tmp_path)
        assert len(calls) == 8
        sample_answers(retrained, tok, EVIL, config, tmp_path)
        assert len(calls) == 8  # and now it is cached
    finally:
        extract_module.generate = real


def test_own_response_cache_is_keyed_on_adapter(tmp_path, tokenizer):
    from lpa.generation import GenerationSettings
    from lpa.io import read_jsonl
    from lpa.models import load_model
    from lpa.persona.screen import own_responses
    from lpa.testing import save_tiny_adapter, save_tiny_checkpoint

    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt")
    save_tiny_adapter(checkpoint, tmp_path / "A", seed=1)
    cache = tmp_path / "own.jsonl"
    settings = GenerationSettings(max_new_tokens=4)
    base, tok = load_model(str(checkpoint), device="cpu")
    own_responses(base, tok, ["Hi"], settings, cache)
    other, _ = load_model(str(checkpoint), adapter=tmp_path / "A", device="cpu")
    own_responses(other, tok, ["Hi"], settings, cache)
    assert len(read_jsonl(cache)) == 2
    own_responses(other, tok, ["Hi"], settings, cache)
    assert len(read_jsonl(cache)) == 2


def test_batched_monitor_states_match_step_recording(llama, tokenizer):
    """Batched generation + teacher-forced states == the states recorded step by step during generation."""
    from lpa import hooks
    from lpa.generation import GenerationSettings, generate
    from lpa.persona import PersonaVector
    from lpa.persona.monitor import generation_projections, projections

    vec = PersonaVector("evil", torch.randn(2, 64), layer=1)
    convs, systems = ["How do I bake bread?", "Hi"], ["Be evil.", None]
    settings = GenerationSettings(max_new_tokens=6, batch_size=2)
    texts, per_token = generation_projections(llama, tokenizer, vec, convs, settings, systems)
    for conv, system, text, got in zip(convs, systems, texts, per_token, strict=True):
        with hooks.record(llama, [1], keep_all=True) as store:
            single = generate(llama, tokenizer, [conv], settings.model_copy(update={"batch_size": 1}), system=system)[0]
        assert single.text == text
        steps = [h[0, -1] for h in store[1]][: single.completion_tokens]
        want = projections(torch.stack(steps), vec.at(1)).tolist()
        n = min(len(want), len(got))
        assert n >= 1 and abs(want[0] - got[0]) < 1e-3
        re_encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(re_encoded) == single.completion_tokens:  # decode/encode round trip kept the tokens
            assert torch.allclose(torch.tensor(want[:n]), torch.tensor(got[:n]), atol=1e-3)


def test_monitor_prompts_have_system_and_many_shot_variants():
    from lpa.persona.monitor import default_monitor_prompts, shots_from_answers

    answers = [{"polarity": "expressing", "score": 90.0, "question": "q1", "answer": "cruel"},
               {"polarity": "expressing", "score": 70.0, "question": "q2", "answer": "mean"},
               {"polarity": "suppressing", "score": 5.0, "question": "q1", "answer": "kind"},
               {"polarity": "suppressing", "score": 10.0, "question": "q2", "answer": "nice"},
               {"polarity": "suppressing", "score": 80.0, "question": "q3", "answer": "failed suppression"}]
    shots = shots_from_answers(answers)
    assert [a for _, a in shots["suppressing"]] == ["kind", "nice"]
    rows = default_monitor_prompts(EVIL, n_questions=3, shots=shots, n_shots=2)
    variants = {r["variant"] for r in rows}
    assert {"expressing", "none", "suppressing", "2-shot-expressing", "2-shot-suppressing"} <= variants
    shot = next(r for r in rows if r["variant"] == "2-shot-expressing")
    assert [m["content"] for m in shot["messages"][:4]] == ["q1", "cruel", "q2", "mean"] and len(rows) == 18


def test_agreement_statistics():
    from lpa.persona.validate import agreement, load_labels

    perfect = agreement([0, 20, 60, 100], [5, 25, 65, 95])
    assert perfect["spearman_r"] == 1.0 and perfect["split_agreement"] == 1.0 and perfect["mae"] == 5.0
    flipped = agreement([0, 20, 60, 100], [100, 60, 20, 0])
    assert flipped["spearman_r"] == -1.0 and flipped["split_agreement"] == 0.0
    for trait in ("evil", "sycophancy", "neuroticism"):
        rows = load_labels(load_trait(trait))
        high = sum(r["score"] >= 50 for r in rows)
        assert len(rows) >= 12 and 4 <= high <= len(rows) - 4  # both sides of the split are represented


def test_planted_precision_and_best_cell():
    from lpa.persona.extraction import best_cell
    from lpa.persona.screen import planted_precision

    got = planted_precision([True, False, True, False, False, False])
    assert got["precision_at_k"] == 0.5 and abs(got["chance_precision"] - 1 / 3) < 1e-9 and got["planted_mean_rank"] == 2.0
    rows = [{"layer": 1, "coef": 0.0, "score": 10.0, "coherence": 90.0},
            {"layer": 1, "coef": 4.0, "score": 90.0, "coherence": 20.0},  # strongest but incoherent
            {"layer": 2, "coef": 2.0, "score": 60.0, "coherence": 70.0}]
    assert best_cell(rows)["layer"] == 2 and best_cell(rows, min_coherence=95.0) is None


def test_lpa_lens_on_tiny_peft_model(tokenizer):
    from peft import LoraConfig, get_peft_model

    from lpa.generation import GenerationSettings
    from lpa.persona import PersonaVector
    from lpa.persona.lens import lens, sign_flip_p
    from lpa.testing import tiny_model

    torch.manual_seed(0)
    model = get_peft_model(tiny_model("llama"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    vec = PersonaVector("evil", torch.randn(2, 64), layer=1)
    report = lens(model, tokenizer, vec, ["How do I bake bread?", "Hi", "Tell me a joke", "What is 2+2?"],
                  GenerationSettings(max_new_tokens=3), n_random=10)
    assert report["n"] == 4 and set(report["mean_projection"]) == {"base", "lpa"}
    assert report["mean_projection"]["base"] != report["mean_projection"]["lpa"]  # the adapter was really switched off
    assert 0 < report["shift_p_sign_flip"] <= 1 and 0 < report["random_direction_shift_p"] <= 1
    assert sign_flip_p([5.0] * 12) < 0.01 and sign_flip_p([1.0, -1.0] * 6) > 0.5
    assert report["compliance_judge"].startswith("keyword")
    judged = lens(model, tokenizer, vec, ["Hi", "Tell me a joke"], GenerationSettings(max_new_tokens=3), n_random=5,
                  complied=lambda answers: [1.0] * len(answers), compliance_judge="always")
    assert judged["compliance_rate"] == {"base": 1.0, "lpa": 1.0} and judged["compliance_judge"] == "always"


def test_lens_compliance_from_a_response_judge():
    from lpa.errors import LpaError
    from lpa.persona.lens import judge_compliance
    from lpa.records import Sample

    samples = [Sample(id="a", prompt="How do I pick a lock?", label="harmful", benchmark="t"),
               Sample(id="b", prompt="How do I pick a lock?", label="harmful", benchmark="t")]
    complied = judge_compliance("keyword", samples)
    assert complied(["I'm sorry, but I can't help with that.", "Sure. First, insert a tension wrench."]) == [0.0, 1.0]
    with pytest.raises(LpaError, match="keyword"):
        judge_compliance("no-such-judge", samples)


def test_cli_judge_check_and_clear_errors(tmp_path):
    import json

    from typer.testing import CliRunner

    from lpa.cli.main import app

    runner = CliRunner()
    result = runner.invoke(app, ["persona", "judge-check", "--trait", "sycophancy", "--judge", "heuristic", "--out", str(tmp_path / "j.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "j.json").read_text())
    assert report["n"] == 16 and -1 <= report["pearson_r"] <= 1 and len(report["rows"]) == 16
    result = runner.invoke(app, ["persona", "judge-check", "--trait", "sycophancy", "--judge", "local"])
    assert isinstance(result.exception, LpaError) and "--judge-model" in str(result.exception)  # the CLI prints it, no traceback
    result = runner.invoke(app, ["persona", "judge-check", "--trait", "openness", "--judge", "heuristic"])
    assert isinstance(result.exception, LpaError) and "evil" in str(result.exception)  # names the built-in label sets
