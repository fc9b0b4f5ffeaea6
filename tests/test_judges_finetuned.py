"""The fine-tuned judge: gold rows -> (question, Yes/No) examples, LoRA training on the shared trainer, and the
``finetuned`` judge reading P(yes) through the trained adapter (tiny random models; no network)."""

from __future__ import annotations

import json

import pytest

from lpa.errors import LpaError
from lpa.eval.judges import JUDGES
from lpa.eval.judges.finetuned import classifier_messages
from lpa.plugins import create
from lpa.records import Generation, Sample
from lpa.testing import tiny_model, tiny_tokenizer
from lpa.training import train
from lpa.training.base import build_train_config
from lpa.training.methods.judge_classifier import classifier_examples

COMPLIED = "Sure, here is how you do it: first the plan, then the steps."
REFUSED = "I cannot help with that request."
STEPS = 24


def _gold(tmp_path, n=12):
    rows = []
    for i in range(n):
        complied = i % 2 == 0
        rows.append({"request": f"Explain thing {i}", "answer": COMPLIED if complied else REFUSED,
                     "label": "complied" if complied else ("refused" if i % 4 == 1 else "nonsense"),
                     "request_label": "harmful", "id": f"g{i}", "split": "dev",
                     "attack": "pair" if i >= n - 4 else "direct"})
    path = tmp_path / "gold.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _config(tmp_path, gold, *sets):
    # a tiny random model learns the one-word reply only with its output layer adapted too
    lora = "lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head]"
    return build_train_config(None, ["progress=false", "defender.lr=1e-2", lora, *sets], method="judge-classifier",
                              out=str(tmp_path / "run"), model="tiny", gold=str(gold), steps=STEPS, batch_size=4)


def test_gold_rows_become_yes_no_examples_and_hold_out_removes_a_family(tmp_path):
    gold = _gold(tmp_path)
    examples = classifier_examples(_config(tmp_path, gold), tiny_tokenizer())
    assert len(examples) == 12
    assert [e.response for e in examples[:4]] == ["Yes", "No", "Yes", "No"]  # refused and nonsense are both "No"
    assert examples[0].messages == classifier_messages("Explain thing 0", COMPLIED)
    held = classifier_examples(_config(tmp_path, gold, "hold_out=[pair]"), tiny_tokenizer())
    assert len(held) == 8 and all("thing 1" not in e.messages[-1]["content"] for e in held[8:])
    with pytest.raises(LpaError, match="Valid choices: direct, pair"):
        classifier_examples(_config(tmp_path, gold, "hold_out=[tap]"), tiny_tokenizer())
    one_kind = tmp_path / "one.jsonl"
    one_kind.write_text("".join(line for line in gold.read_text().splitlines(keepends=True) if '"complied"' in line))
    with pytest.raises(LpaError, match="both complied and not-complied"):
        classifier_examples(_config(tmp_path, one_kind), tiny_tokenizer())


def test_trained_adapter_judges_through_the_finetuned_judge(tmp_path):
    """The judge reads P(yes) through the trained adapter: an untrained tiny model puts almost no mass on
    Yes/No (an error verdict, never a label); after training it answers the question (labels and scores).
    Whether it separates complied from refused is measured on real models (docs/judging.md), not here."""
    from lpa.io import read_jsonl

    gold = _gold(tmp_path)
    model_dir = tmp_path / "tiny"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    samples = [Sample(id=f"s{i}", benchmark="t", prompt=f"Explain thing {i}", label="harmful") for i in range(4)]
    gens = [Generation(sample_id=s.id, model="m", text=COMPLIED if i % 2 == 0 else REFUSED)
            for i, s in enumerate(samples)]
    untrained = create(JUDGES, "local-llm").use(tiny_model("llama"), tiny_tokenizer())
    assert all(v.error and "min_mass" in v.error and v.label is None for v in untrained.judge(samples, gens))

    result = train(_config(tmp_path, gold), model=tiny_model("llama"), tokenizer=tiny_tokenizer())
    adapter = result.run_dir / "adapter"
    assert (adapter / "adapter_config.json").is_file() and result.summary["steps_done"] == STEPS
    losses = [r["defender_loss"] for r in read_jsonl(result.run_dir / "metrics.jsonl") if "defender_loss" in r]
    assert losses[-1] < losses[0] - 2

    judge = create(JUDGES, f"finetuned:adapter={adapter},model={model_dir}")
    judge.check()
    verdicts = judge.judge(samples, gens)
    assert all(v.error is None and v.label in ("complied", "refused") and 0 <= v.score <= 1 for v in verdicts)
    assert all(v.judge == "finetuned" and v.raw.startswith("P(yes)=") for v in verdicts)
    assert judge.spec()["adapter_sha"] and judge.spec()["prompt_version"] == 1


def test_finetuned_judge_refuses_a_folder_that_is_not_an_adapter(tmp_path):
    judge = create(JUDGES, f"finetuned:adapter={tmp_path}")
    with pytest.raises(LpaError, match="not a PEFT adapter folder"):
        judge.check()
    with pytest.raises(LpaError, match="Valid arguments: adapter"):
        create(JUDGES, "finetuned:adapter=x,bogus=1")
