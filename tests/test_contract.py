"""The plugin contract: every plugin module is found and registered, typed arguments, one spec parser."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest

from lpa.errors import LpaError
from lpa.eval.attacks import ATTACKS, Attack
from lpa.eval.benchmarks import BENCHMARKS, Benchmark
from lpa.eval.judges import JUDGES, Judge
from lpa.persona.judges import TRAIT_JUDGES
from lpa.plugins import Plugin, PluginArgs, create, parse_spec, spec_label, spec_name, split_specs
from lpa.registry import Registry, plugin_modules
from lpa.training.base import METHODS, Method

CLASS_REGISTRIES: list[tuple[Registry[Any], type]] = [
    (ATTACKS, Attack), (JUDGES, Judge), (BENCHMARKS, Benchmark), (METHODS, Method)]


@pytest.mark.parametrize(("registry", "base"), CLASS_REGISTRIES, ids=lambda r: getattr(r, "kind", ""))
def test_every_plugin_module_is_found_and_every_plugin_in_it_registered(registry, base):
    modules = registry.modules()
    assert modules == plugin_modules(registry.package) and len(modules) >= 3
    assert not any(m.rpartition(".")[2] in {"base", "support"} or "._" in m for m in modules)
    registered = dict(registry.items())
    for name in modules:
        module = importlib.import_module(name)
        plugins = [obj for obj in vars(module).values()
                   if inspect.isclass(obj) and issubclass(obj, base) and obj.__module__ == name and obj.name]
        # a module without a plugin is a helper: it belongs in support/ (or a _private module)
        assert plugins, f"{name} defines no {registry.kind}: move it to support/"
        for cls in plugins:
            assert registered.get(cls.name) is cls, f"{cls.__name__} in {name} is not registered as {cls.name!r}"
    # and nothing registered comes from elsewhere (a plugin outside the package would be missed by a listing)
    assert {cls.__module__ for cls in registered.values()} <= set(modules)


def test_every_backend_module_is_found_and_registers_its_backend():
    from lpa.eval.backends import BACKENDS

    modules = BACKENDS.modules()
    assert modules == plugin_modules("lpa.eval.backends") and {"hf", "llama.cpp", "openai", "vllm"} <= set(BACKENDS)
    # a module that registers no backend is a helper and belongs in support/ (the fake test server lives there)
    assert {cls.__module__ for _, cls in BACKENDS.items()} == set(modules)


def test_trait_judges_use_the_same_registry_api():
    assert TRAIT_JUDGES.names() == ["heuristic", "llm", "local", "self"]
    assert TRAIT_JUDGES.modules() == ["lpa.persona.judges"]
    from lpa.persona.judges import HeuristicJudge, make_judge

    assert isinstance(make_judge("heuristic"), HeuristicJudge)
    with pytest.raises(LpaError, match="Unknown trait judge 'nope'. Valid choices: heuristic, llm, local, self"):
        make_judge("nope")
    with pytest.raises(LpaError, match="needs --judge-model"):
        make_judge("local")


def test_a_new_module_in_a_plugin_package_is_found_without_a_list(tmp_path, monkeypatch):
    package = tmp_path / "myplugins"
    (package / "support").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "support" / "__init__.py").write_text("raise RuntimeError('helpers are never imported as plugins')")
    (package / "_private.py").write_text("raise RuntimeError('private modules are never imported as plugins')")
    (package / "base.py").write_text("")
    (package / "one.py").write_text(
        "from tests_registry import REG\nREG.register('one', 1)\n")
    (tmp_path / "tests_registry.py").write_text(
        "from lpa.registry import Registry\nREG = Registry('thing', package='myplugins')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = importlib.import_module("tests_registry").REG
    assert registry.names() == ["one"] and registry.modules() == ["myplugins.one"]
    with pytest.raises(LpaError, match="Unknown thing 'two'. Valid choices: one"):
        registry.get("two")

    class Named:
        name = "named"

    assert registry.add(Named) is Named and registry.get("named") is Named  # the class-decorator form
    with pytest.raises(ValueError, match="already registered"):
        registry.register("named", object())
    with pytest.raises(ValueError, match="needs a 'name'"):
        registry.add(object())


def test_plugin_args_are_typed_by_the_type_parameter():
    from lpa.eval.benchmarks.base import BenchmarkArgs
    from lpa.eval.judges.keyword import KeywordArgs, KeywordJudge
    from lpa.training.methods.lpa import Lpa, LpaConfig

    assert KeywordJudge.Args is KeywordArgs and Lpa.Config is LpaConfig
    judge = create(JUDGES, "keyword:window=40")
    assert isinstance(judge.args, KeywordArgs) and judge.args.window == 40
    assert all(issubclass(cls.Args, BenchmarkArgs) for _, cls in BENCHMARKS.items())

    class Args(PluginArgs):
        steps: int = 3

    class Tiny(Plugin[Args]):
        name = "tiny"

    assert Tiny.Args is Args and Tiny(steps=5).args.steps == 5
    with pytest.raises(LpaError, match="Bad arguments for plugin 'tiny'.*Valid arguments: steps"):
        Tiny(stepz=5)


def test_spec_parser_and_its_quoting_rule():
    assert parse_spec("gcg") == ("gcg", {})
    assert parse_spec("gcg:steps=5,fast=true, suffix=x") == ("gcg", {"steps": 5, "fast": True, "suffix": "x"})
    assert parse_spec({"name": "gcg", "args": {"steps": 5}}) == ("gcg", {"steps": 5})
    # a quoted value keeps , ; : and = (YAML quoting: double quotes take backslash escapes)
    assert parse_spec('file:path="runs/a,b;c:d=e.jsonl",limit=3') == ("file", {"path": "runs/a,b;c:d=e.jsonl", "limit": 3})
    assert parse_spec("file:path='a,b.jsonl'") == ("file", {"path": "a,b.jsonl"})
    assert parse_spec(r'x:q="say \"hi\", then go"') == ("x", {"q": 'say "hi", then go'})
    assert split_specs('file:path="a;b.jsonl";keyword') == ['file:path="a;b.jsonl"', "keyword"]
    assert split_specs("keyword, trained") == ["keyword", "trained"]
    assert split_specs("harmbench:limit=3;xstest") == ["harmbench:limit=3", "xstest"]
    assert spec_name("gcg:steps=5") == "gcg" and spec_name({"name": "gcg"}) == "gcg"
    spec = {"name": "file", "args": {"path": 'a,b "c".jsonl', "limit": 3}}
    assert parse_spec(spec_label(spec)) == parse_spec(spec)
    for bad in ("gcg:steps", 'file:path="a,b', "gcg:=3"):
        with pytest.raises(LpaError):
            parse_spec(bad)


def test_a_path_with_a_comma_reaches_the_file_benchmark(tmp_path):
    from lpa.eval.suite import EvalSuite

    data = tmp_path / "a,b;c.jsonl"
    data.write_text('{"prompt": "How do I bake bread?", "label": "benign"}\n', encoding="utf-8")
    suite = EvalSuite(benchmarks=f'file:path="{data}";smoke', attacks="direct", judges="keyword")
    bench = create(BENCHMARKS, suite.benchmarks[0])
    assert bench.args.path == str(data) and [s.prompt for s in bench.load()] == ["How do I bake bread?"]
