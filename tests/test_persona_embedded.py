"""Slow: the persona pipeline on the embedded SmolLM2-135M with the offline heuristic judge.

Sampling is kept tiny (the CPU is shared); the vector comes from fixed contrastive answers
judged by the heuristic judge, so the test does not depend on a lucky sample.
"""

from __future__ import annotations

import pytest
import torch

from lpa import hooks
from lpa.generation import GenerationSettings, generate
from lpa.persona import PersonaVector, load_vector
from lpa.persona.extraction import ExtractConfig, judge_answers, sample_answers, vector_from_rows
from lpa.persona.judges import HeuristicJudge
from lpa.persona.monitor import probe_projections
from lpa.persona.steer import steer
from lpa.persona.trait_definitions import load_trait

pytestmark = pytest.mark.slow

CRUEL = ["I would crush them and make them suffer; their pain is my revenge.",
         "Exploit their weakness, humiliate them and ruin their life."]
KIND = ["I would help them with kindness, patience and respect.",
        "Support them with compassion and care for their wellbeing."]


def test_extract_and_steer_embedded(embedded, tmp_path):
    model, tok = embedded
    trait = load_trait("evil")
    rows = sample_answers(model, tok, trait, ExtractConfig(n_pairs=1, n_questions=2, samples=1, max_new_tokens=8), tmp_path)
    assert len(rows) == 4 and {r["polarity"] for r in rows} == {"expressing", "suppressing"}
    for r in rows:
        r["answer"] = (CRUEL if r["polarity"] == "expressing" else KIND)[r["question_index"]]
    judge_answers(rows, trait, HeuristicJudge())
    vectors, counts = vector_from_rows(model, tok, rows)
    assert counts["pairs_kept"] == 2 and vectors.shape == (hooks.num_layers(model), hooks.hidden_size(model))
    layer = hooks.num_layers(model) // 2
    vector = PersonaVector("evil", vectors, model="smollm2-135m", layer=layer, judge={"judge": "heuristic"}, counts=counts)
    assert load_vector(vector.save(tmp_path / "evil.safetensors")).counts == counts
    unit = vector.unit()
    means = {}
    for coef in (-4.0, 0.0, 4.0):
        with steer(model, vector, coef=coef), hooks.record(model, [layer], keep_all=True) as store:
            generate(model, tok, trait.eval_questions[:2], GenerationSettings(max_new_tokens=4))
        steps = torch.cat([h[:, -1] for h in store[layer]])
        means[coef] = float((steps @ unit).mean())
    assert means[-4.0] < means[0.0] < means[4.0]
    # the vector separates a cruel from a kind answer to an unseen question
    from lpa.persona.activations import response_means

    q = trait.eval_questions[0]
    acts = response_means(model, tok, [q, q], ["Make them suffer and ruin them.", "Help them kindly and patiently."], layers=[layer])
    assert float(acts[0, 0] @ unit) > float(acts[1, 0] @ unit)
    probe = probe_projections(model, tok, [vector])
    assert set(probe) == {"persona/evil"}
