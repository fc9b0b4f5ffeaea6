"""The Python API: the README's train -> evaluate -> compare block runs as written, on a tiny random model."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import lpa
from lpa.persona.judges import TRAIT_JUDGES, TraitJudge, TraitScore
from lpa.testing import save_tiny_checkpoint

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_api_block() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- python-api .*?-->\n```python\n(.*?)```", text, re.S)
    assert match, "README lost its Python API block"
    return match.group(1)


def test_import_lpa_is_lazy_and_exports_the_verbs():
    code = "import sys, lpa; print(sorted(m for m in ('torch', 'transformers', 'lpa.api') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    assert {"train", "evaluate", "compare", "load", "persona"} <= set(lpa.__all__)
    assert callable(lpa.persona.extract) and lpa.compare.__module__ == "lpa.api"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lpa.nope  # noqa: B018


def test_bad_api_arguments_fail_before_any_compute(tmp_path):
    with pytest.raises(lpa.LpaError, match="Unknown attack 'nope'"):
        lpa.evaluate(model="unused", attacks=["nope"], out=tmp_path / "e")
    with pytest.raises(lpa.LpaError, match="Unknown training method 'nope'"):
        lpa.train(method="nope", out=tmp_path / "t")


def test_readme_train_evaluate_compare_runs_on_a_tiny_model(tmp_path, monkeypatch):
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny")
    block = readme_api_block()
    # the same code on a tiny random model, a short run and short answers
    code = (block.replace('"smollm2-135m"', repr(str(checkpoint)))
                 .replace("steps=20", "steps=2, batch_size=2, lora={'r': 4, 'alpha': 8}, attack={'steps': 2}, "
                                      "defender={'steps': 1}, guard={'every': 0}, progress=False")
                 .replace("max_new_tokens=64", "max_new_tokens=8, limit=3"))
    assert code != block
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    run, base, tuned = namespace["run"], namespace["base"], namespace["tuned"]
    assert run.steps_done == 2 and (tmp_path / "runs/lpa/adapter/adapter_config.json").is_file()
    assert isinstance(base, type(tuned)) and base.value("smoke", "asr", "prefill") is not None
    comparison = lpa.compare([base.out_dir, tuned.out_dir])
    assert "prefill" in comparison.table and comparison.paired is not None
    assert (tmp_path / "runs/compare/compare.md").is_file() and (tmp_path / "runs/compare/paired.md").is_file()


class _HalfJudge(TraitJudge):
    """Scores the first half of each batch (the trait-expressing answers) high: a random model passes the filter."""

    name = "half"

    def score_many(self, trait, questions, answers):
        return [TraitScore(80.0 if i < len(answers) // 2 else 10.0) for i in range(len(answers))]


def test_persona_extract_function_and_command(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from lpa.cli.main import app

    checkpoint = save_tiny_checkpoint(tmp_path / "tiny")
    small = dict(pairs=1, questions=2, samples=1, max_new_tokens=4, batch_size=4)
    result = lpa.persona.extract(trait="evil", model=str(checkpoint), judge=_HalfJudge(), out=tmp_path / "py",
                                 sweep=False, **small)
    assert result.path == tmp_path / "py" / "evil.safetensors" and result.path.is_file() and result.sweep == []
    assert lpa.persona.load_vector(result.path).layer == result.vector.layer
    monkeypatch.setitem(TRAIT_JUDGES._items, "half", lambda options: _HalfJudge())  # a judge the CLI can name
    args = ["persona", "extract", "--trait", "evil", "--model", str(checkpoint), "--out", str(tmp_path / "cli"),
            "--judge", "half", "--no-sweep", *[f"--{k.replace('_', '-')}={v}" for k, v in small.items()]]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert f"saved {tmp_path / 'cli' / 'evil.safetensors'}" in out.output.replace("\n", "")
