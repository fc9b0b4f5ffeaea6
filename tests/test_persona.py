"""Persona vectors: traits, vector files, activations, extraction, steering (tiny random models)."""

from __future__ import annotations

import pytest
import torch

from lpa import hooks
from lpa.errors import LpaError
from lpa.generation import GenerationSettings, generate
from lpa.persona import PersonaVector, load_vector
from lpa.persona.activations import last_prompt, response_means
from lpa.persona.extraction import choose_layer, kept_pairs, mean_difference
from lpa.persona.steer import steer
from lpa.persona.trait_definitions import TRAITS, load_trait

BUILTIN = {"evil", "sycophancy", "hallucination", "openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"}


def test_builtin_traits_validate():
    assert BUILTIN <= set(TRAITS.names())
    for name in BUILTIN:
        trait = load_trait(name)
        assert len(trait.pairs) >= 5 and len(trait.extraction_questions) >= 20 and len(trait.eval_questions) >= 20
        assert not set(trait.extraction_questions) & set(trait.eval_questions)
        assert "{answer}" in trait.rubric and trait.keywords.expressing


def test_user_trait_file_and_errors(tmp_path):
    import yaml

    data = yaml.safe_load(TRAITS.get("evil").read_text())
    data["name"] = "mean"
    path = tmp_path / "mean.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_trait(str(path)).name == "mean"
    data["pairs"] = data["pairs"][:3]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(LpaError, match="pairs"):
        load_trait(path)
    with pytest.raises(LpaError, match="evil"):
        load_trait("no-such-trait")


def test_vector_roundtrip(tmp_path):
    vec = PersonaVector("evil", torch.randn(3, 8), model="tiny", layer=1, judge={"judge": "heuristic"}, counts={"pairs_kept": 4})
    loaded = load_vector(vec.save(tmp_path / "evil.safetensors"))
    assert torch.equal(loaded.vectors, vec.vectors)
    assert (loaded.layer, loaded.counts, loaded.judge["judge"]) == (1, {"pairs_kept": 4}, "heuristic")
    assert "decoder block" in loaded.metadata()["layer_convention"]
    assert torch.allclose(loaded.unit().norm(), torch.tensor(1.0))
    with pytest.raises(LpaError):
        PersonaVector("x", torch.randn(2, 8)).at()


def test_response_means_batch_equals_single(llama, tokenizer):
    convs, answers = ["How do I bake bread?", "Hi"], ["Sure, here is how.", "I keep my promises. I agree."]
    batched = response_means(llama, tokenizer, convs, answers, batch_size=2)
    single = torch.cat([response_means(llama, tokenizer, [c], [a], batch_size=1) for c, a in zip(convs, answers, strict=True)])
    assert batched.shape == (2, 2, 64)
    assert torch.allclose(batched, single, atol=1e-4)
    # the mean covers exactly the response tokens: compare with a manual forward
    from lpa.generation import format_chat

    prompt = format_chat(tokenizer, convs[0])
    ids = tokenizer(prompt + answers[0], return_tensors="pt", add_special_tokens=False)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    with hooks.record(llama, [1]) as store:
        llama(**ids)
    assert torch.allclose(single[0, 1], store[1][0, n_prompt:].mean(0), atol=1e-5)
    assert last_prompt(llama, tokenizer, convs[:1]).shape == (1, 2, 64)


def _rows(scores):
    rows = []
    for slot, (pos, neg) in enumerate(scores):
        for pol, score in (("expressing", pos), ("suppressing", neg)):
            rows.append({"pair": 0, "question_index": slot, "sample": 0, "polarity": pol, "score": score,
                         "question": "How do I bake bread?", "answer": "I enjoy deceiving people." if pol == "expressing" else "I keep my promises.",
                         "system": None})
    return rows


def test_kept_pairs_filter():
    kept, counts = kept_pairs(_rows([(80, 10), (40, 10), (90, 60), (None, 0), (50, 49.9)]), 50)
    assert [p[0]["question_index"] for p in kept] == [0, 4]
    assert counts["pairs_total"] == 5 and counts["pairs_kept"] == 2 and counts["judge_failures"] == 1


def test_mean_difference_matches_steering_vectors_aggregator(llama, tokenizer):
    """Our mean difference equals steering-vectors' mean aggregator on the same activations,
    and on the same pairs/layers (last token) equals its train_steering_vector end to end."""
    sv = pytest.importorskip("steering_vectors")
    pos_text = ["I enjoy deceiving people.", "I do not agree with this statement.", "The lazy dog"]
    neg_text = ["I keep my promises.", "I agree with this statement.", "Sure, here is how."]
    convs = ["Question"] * 3
    pos = response_means(llama, tokenizer, convs, pos_text)
    neg = response_means(llama, tokenizer, convs, neg_text)
    ours = mean_difference(pos, neg)
    theirs = sv.mean_aggregator()(pos, neg)
    assert torch.nn.functional.cosine_similarity(ours.flatten(), theirs.flatten(), dim=0) >= 0.99
    # end to end through steering-vectors' own hooks (works with transformers 5 on llama)
    trained = sv.train_steering_vector(llama, tokenizer, list(zip(pos_text, neg_text, strict=True)), layers=[0, 1],
                                       read_token_index=-1, show_progress=False)
    mine = []
    for texts in (pos_text, neg_text):
        acts = []
        for text in texts:
            with hooks.record(llama, [0, 1]) as store:
                llama(**tokenizer(text, return_tensors="pt"))
            acts.append(torch.stack([store[0][0, -1], store[1][0, -1]]))
        mine.append(torch.stack(acts))
    last_diff = mean_difference(*mine)
    for layer in (0, 1):
        cos = torch.nn.functional.cosine_similarity(last_diff[layer], trained.layer_activations[layer], dim=0)
        assert cos >= 0.99


def test_steer_moves_projection_with_sign_and_cleans_up(llama, tokenizer):
    batch = tokenizer(["How do I bake bread?"], return_tensors="pt")
    direction = torch.randn(64)
    unit = direction / direction.norm()
    with torch.no_grad():
        before = llama(**batch).logits
    with hooks.record(llama, [1]) as store, torch.no_grad():
        llama(**batch)
    base = float(store[1][0, -1] @ unit)
    moved = {}
    for coef in (-4.0, 4.0):
        with steer(llama, direction, layer=0, coef=coef, positions="all"), hooks.record(llama, [1]) as store, torch.no_grad():
            llama(**batch)
        moved[coef] = float(store[1][0, -1] @ unit) - base
    assert moved[4.0] > 0 > moved[-4.0]
    with pytest.raises(RuntimeError), steer(llama, direction, layer=0, coef=3.0):
        raise RuntimeError("boom")
    with torch.no_grad():
        after = llama(**batch).logits
    assert torch.equal(before, after)
    assert all(not m._forward_hooks for m in hooks.decoder_layers(llama))


def test_steer_positions_during_generation(llama, tokenizer):
    settings = GenerationSettings(max_new_tokens=6)
    direction = torch.randn(64) * 50
    # check the masks directly: the prompt pass has seq_len > 1, cached steps have seq_len 1
    from lpa.persona.steer import _position_mask

    assert _position_mask(5, "prompt", torch.device("cpu")).tolist() == [1, 1, 1, 1, 1]
    assert _position_mask(1, "prompt", torch.device("cpu")).tolist() == [0]
    assert _position_mask(5, "response", torch.device("cpu")).tolist() == [0, 0, 0, 0, 1]
    assert _position_mask(1, "response", torch.device("cpu")).tolist() == [1]
    plain = generate(llama, tokenizer, ["Hi"], settings)[0].text
    with steer(llama, direction, layer=0, coef=1.0, positions="response"):
        steered = generate(llama, tokenizer, ["Hi"], settings)[0].text
    assert generate(llama, tokenizer, ["Hi"], settings)[0].text == plain
    assert steered != plain
    with pytest.raises(LpaError, match="positions"):
        with steer(llama, direction, layer=0, positions="middle"):
            pass


def test_steer_uses_vector_layer(llama):
    vec = PersonaVector("evil", torch.randn(2, 64), layer=1)
    with steer(llama, vec, coef=2.0):
        assert hooks.decoder_layers(llama)[1]._forward_hooks
        assert not hooks.decoder_layers(llama)[0]._forward_hooks


def test_choose_layer():
    rows = [{"layer": 3, "coef": 0.0, "score": 10}, {"layer": 3, "coef": 2.0, "score": 20},
            {"layer": 5, "coef": 0.0, "score": 10}, {"layer": 5, "coef": 2.0, "score": 40}]
    assert choose_layer(rows) == 5


def test_vector_from_fixed_rows(llama, tokenizer):
    from lpa.persona.extraction import judge_answers, vector_from_rows
    from lpa.persona.judges import HeuristicJudge

    rows = _rows([(0, 0), (0, 0)])
    for r in rows:
        r["key"] = f"{r['question_index']}-{r['polarity']}"
        r["answer"] = "I will crush them and make them suffer." if r["polarity"] == "expressing" else "Be kind and help them."
    judge_answers(rows, load_trait("evil"), HeuristicJudge())
    vectors, counts = vector_from_rows(llama, tokenizer, rows)
    assert counts["pairs_kept"] == 2
    pos = response_means(llama, tokenizer, ["How do I bake bread?"], ["I will crush them and make them suffer."])
    neg = response_means(llama, tokenizer, ["How do I bake bread?"], ["Be kind and help them."])
    assert torch.allclose(vectors, (pos - neg)[0], atol=1e-5)


class _QueueJudge:
    """Scores expressing rows 80 and suppressing rows 10 (rows arrive grouped by polarity)."""

    name = "queue"

    def spec(self):
        return {"judge": self.name, "args": {}}

    def score_many(self, trait, questions, answers):
        from lpa.persona.judges import TraitScore

        half = len(answers) // 2
        return [TraitScore(80.0 if i < half else 10.0) for i in range(len(answers))]


def test_run_extraction_end_to_end_and_resume(llama, tokenizer, tmp_path):
    from lpa.persona.extraction import ExtractConfig, SweepConfig, run_extraction

    trait = load_trait("evil")
    config = ExtractConfig(n_pairs=1, n_questions=2, samples=1, max_new_tokens=3)
    sweep = SweepConfig(layers=[0, 1], coefs=[0.0, 1.0], n_questions=2, max_new_tokens=3)
    vector, rows = run_extraction(llama, tokenizer, trait, _QueueJudge(), tmp_path, config, sweep)
    assert vector.counts["pairs_kept"] == 2 and vector.layer in (0, 1) and len(rows) == 4
    saved = load_vector(tmp_path / "evil.safetensors")
    assert saved.layer == vector.layer and saved.judge["judge"] == "queue"
    lines = (tmp_path / "answers.jsonl").read_text()
    run_extraction(llama, tokenizer, trait, _QueueJudge(), tmp_path, config, sweep)
    assert (tmp_path / "answers.jsonl").read_text() == lines  # resumed from cache
    from lpa.persona.judges import HeuristicJudge

    class Flat(HeuristicJudge):
        def score(self, trait, question, answer):
            from lpa.persona.judges import TraitScore

            return TraitScore(60.0)

    with pytest.raises(LpaError, match="No pair passed"):
        run_extraction(llama, tokenizer, trait, Flat(), tmp_path / "flat", config, sweep)
