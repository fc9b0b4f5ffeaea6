"""Every example of docs/extending.md is a working plugin: it registers, validates its arguments and runs."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from lpa.errors import LpaError
from lpa.eval.attacks import ATTACKS
from lpa.eval.benchmarks import BENCHMARKS
from lpa.eval.judges import JUDGES
from lpa.persona.judges import TRAIT_JUDGES, make_judge
from lpa.plugins import create
from lpa.records import Generation, Sample
from lpa.training.base import METHODS, config_from_dict

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def examples() -> dict[str, str]:
    """First-line file comment -> code, for every python block of the doc."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    return {block.splitlines()[0].lstrip("# ").split(" ")[0]: block for block in blocks}


@pytest.fixture
def load_example(tmp_path, monkeypatch):
    """Import one doc example as a module; unregister what it registered afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = {id(r): dict(r._items) for r in (ATTACKS, JUDGES, BENCHMARKS, METHODS, TRAIT_JUDGES)}
    registries = (ATTACKS, JUDGES, BENCHMARKS, METHODS, TRAIT_JUDGES)
    for registry in registries:
        registry.names()  # load the shipped plugins first

    def load(path: str):
        name = "doc_" + Path(path).stem
        (tmp_path / f"{name}.py").write_text(examples()[path], encoding="utf-8")
        return importlib.import_module(name)

    yield load
    for registry in registries:
        registry._items = {**before[id(registry)], **{k: v for k, v in registry._items.items()
                                                      if not getattr(v, "__module__", "").startswith("doc_")}}


def test_the_doc_shows_one_file_per_kind():
    assert set(examples()) >= {"src/lpa/eval/attacks/shout.py", "src/lpa/eval/judges/short.py",
                               "src/lpa/eval/benchmarks/greetings.py", "src/lpa/training/methods/pairs_only.py"}


def test_attack_example(load_example):
    load_example("src/lpa/eval/attacks/shout.py")
    attack = create(ATTACKS, "shout:suffix='?'")
    prompt = attack.transform(Sample(id="1", benchmark="b", prompt="hello", label="benign"))[0]
    assert prompt.messages[-1]["content"] == "HELLO?"
    with pytest.raises(LpaError, match="Valid arguments: suffix"):
        create(ATTACKS, "shout:loud=1")


def test_judge_example(load_example):
    load_example("src/lpa/eval/judges/short.py")
    judge = create(JUDGES, {"name": "short", "args": {"min_chars": 5}})
    samples = [Sample(id=str(i), benchmark="b", prompt="q", label="harmful") for i in range(2)]
    gens = [Generation(sample_id=s.id, model="m", text=t) for s, t in zip(samples, ["No.", "Sure, here it is"], strict=True)]
    assert [v.label for v in judge.judge(samples, gens)] == ["refused", "complied"]
    with pytest.raises(LpaError, match="needs generations"):
        judge.judge(samples, None)


def test_benchmark_example(load_example):
    load_example("src/lpa/eval/benchmarks/greetings.py")
    samples = create(BENCHMARKS, "greetings:language=French,limit=2").load()
    assert [s.prompt for s in samples] == ["Say hello in French.", "Write a short welcome note in French."]


def test_method_example(load_example):
    load_example("src/lpa/training/methods/pairs_only.py")
    config = config_from_dict({"method": "pairs-only", "traits": "big-five"})
    method = METHODS.get("pairs-only")()
    assert method.adversarial is False and method.build_examples(config, None)


def test_trait_judge_example(load_example):
    load_example("in")  # the block whose first line is '# in src/lpa/persona/judges.py ...'
    from lpa.persona.trait_definitions import load_trait

    judge = make_judge("length")
    assert judge.score(load_trait("evil"), "q?", "x" * 500).score == 50.0
