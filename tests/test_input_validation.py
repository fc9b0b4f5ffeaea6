"""Issue 25 §3: an input file that is wrong is never read as right; mistakes fail before any model loads."""

from __future__ import annotations

import json
import os
import time

import pytest

from lpa.errors import LpaError
from lpa.plugins import create


def _file_bench(path, **args):
    from lpa.eval.benchmarks import BENCHMARKS

    return create(BENCHMARKS, "file", path=str(path), **args).load()


def test_file_benchmark_refuses_a_torn_last_line(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"prompt": "one"}\n{"prompt": "two"}\n{"prompt": "thr')
    with pytest.raises(LpaError, match=r"b.jsonl:3: not valid JSON"):
        _file_bench(path)


def test_file_benchmark_refuses_duplicate_and_missing_ids(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text("".join(json.dumps({"id": i, "prompt": f"p{n}"}) + "\n" for n, i in enumerate(["a", "b", "a"])))
    with pytest.raises(LpaError, match="duplicate ids in 'id': a"):
        _file_bench(path, id_column="id")
    with pytest.raises(LpaError, match="row 1: no id in column 'uid'"):
        _file_bench(path, id_column="uid")


@pytest.mark.parametrize("prompt", [None, 3, ["a"]])
def test_file_benchmark_refuses_a_prompt_that_is_not_text(tmp_path, prompt):
    path = tmp_path / "b.jsonl"
    path.write_text(json.dumps({"prompt": "fine"}) + "\n" + json.dumps({"prompt": prompt}) + "\n")
    with pytest.raises(LpaError, match="row 2"):
        _file_bench(path)


def test_non_utf8_config_and_trait_files_are_one_line_errors(tmp_path):
    from lpa.config import read_yaml
    from lpa.traits.schema import load_trait_file

    bad = tmp_path / "c.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(LpaError, match="c.yaml: not UTF-8"):
        read_yaml(bad)
    traits = tmp_path / "t.yaml"
    traits.write_bytes(b"items:\n- statement: caf\xe9\n")
    with pytest.raises(LpaError, match="t.yaml: not UTF-8"):
        load_trait_file(traits)


def test_a_trait_csv_with_a_huge_field_is_read(tmp_path):
    from lpa.traits.schema import load_trait_file

    path = tmp_path / "t.csv"
    long = "I enjoy " + "very " * 30_000 + "long walks."  # > csv's default 131,072-character limit
    path.write_text(f"statement,target,family,polarity\n{long},agree,openness,desirable\n")
    assert load_trait_file(path).items[0].statement == long


def test_eval_out_that_is_a_file_fails_before_the_model_loads(tmp_path, monkeypatch):
    import lpa.models.loader as loader
    from lpa.eval.runner import evaluate
    from lpa.eval.suite import build_eval_suite

    monkeypatch.setattr(loader, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    out = tmp_path / "results.txt"
    out.write_text("not a folder")
    suite = build_eval_suite(None, None, benchmarks="smoke", judges="keyword")
    with pytest.raises(LpaError, match="is a file; give a folder"):
        evaluate(suite, "smollm2-135m", out_dir=out)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_is_refused(tmp_path):
    from lpa.io import writable_dir

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(LpaError, match="not writable"):
            writable_dir(folder)
    finally:
        folder.chmod(0o700)


def test_generate_out_that_is_a_folder_is_refused(tmp_path):
    from lpa.generation import check_generate_paths

    with pytest.raises(LpaError, match="is a folder; give a file name"):
        check_generate_paths(tmp_path / "p.jsonl", tmp_path)


def test_unknown_hub_model_fails_fast_offline_with_the_aliases(monkeypatch):
    from lpa.models.loader import load_model

    monkeypatch.setenv("LPA_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(LpaError, match=r"Unknown model 'someone/no-such-model'.*offline.*smollm2-135m"):
        load_model("someone/no-such-model")
    assert time.monotonic() - start < 5


def test_persona_extract_bad_numbers_fail_before_the_model_loads(monkeypatch):
    from typer.testing import CliRunner

    import lpa.models as models
    from lpa.cli.main import app

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    result = CliRunner().invoke(app, ["persona", "extract", "--trait", "evil", "--samples", "0"])
    assert isinstance(result.exception, LpaError)
    assert "Invalid extraction options: samples" in str(result.exception)


def test_unknown_trait_set_leaves_no_empty_run_folder(tmp_path):
    from lpa.testing import save_tiny_checkpoint
    from lpa.training import build_train_config, train

    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt")
    out = tmp_path / "run"
    cfg = build_train_config(None, None, method="lpa", model=str(checkpoint), traits="big-fiv", out=str(out),
                             steps=1, device="cpu")
    with pytest.raises(LpaError, match="Unknown trait set 'big-fiv'"):
        train(cfg)
    assert not out.exists()
