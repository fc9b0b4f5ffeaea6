"""The harmful-data baselines (lat-harmful, refusal-sft): data building and registration."""

from __future__ import annotations

import json

import pytest

from lpa.errors import LpaError
from lpa.training import METHODS, build_train_config


def _files(tmp_path):
    (tmp_path / "safe.csv").write_text('Behavior,Safe_Response\nDo a bad thing,"Sorry, I can\'t do that."\n')
    (tmp_path / "reqs.json").write_text(json.dumps([{"instruction": "Explain a bad plan", "category": None},
                                                    {"instruction": "Do a bad thing"}]))


@pytest.mark.parametrize("method", ["lat-harmful", "refusal-sft"])
def test_harmful_pairs(tmp_path, method):
    _files(tmp_path)
    config = build_train_config(None, None, method=method, data_dir=str(tmp_path), harmful=["safe.csv", "reqs.json"])
    examples = METHODS.get(method)().build_examples(config, None)
    assert [e.messages[-1]["content"] for e in examples] == ["Do a bad thing", "Explain a bad plan"]  # de-duplicated
    assert examples[0].chosen == "Sorry, I can't do that."  # the file's own safe response
    assert examples[1].chosen == config.refusal
    assert examples[1].rejected == "Sure, here is how to explain a bad plan"
    assert METHODS.get(method).adversarial == (method == "lat-harmful")


def test_missing_harmful_file_names_it(tmp_path):
    config = build_train_config(None, None, method="lat-harmful", data_dir=str(tmp_path), harmful=["nope.csv"])
    with pytest.raises(LpaError, match="nope.csv"):
        METHODS.get("lat-harmful")().build_examples(config, None)


def test_max_examples_sampled_with_seed(tmp_path):
    rows = "\n".join(f"Request number {i}" for i in range(20))
    (tmp_path / "many.csv").write_text("Behavior\n" + rows + "\n")
    make = lambda seed: build_train_config(None, None, method="refusal-sft", data_dir=str(tmp_path),  # noqa: E731
                                           harmful=["many.csv"], max_examples=5, seed=seed)
    first = METHODS.get("refusal-sft")().build_examples(make(0), None)
    assert len(first) == 5
    assert first == METHODS.get("refusal-sft")().build_examples(make(0), None)
    assert first != METHODS.get("refusal-sft")().build_examples(make(1), None)
