"""Registry, config, crash-safe IO and the CLI's error handling."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import BaseModel

from lpa.config import apply_overrides, build_config
from lpa.errors import LpaError
from lpa.io import append_jsonl, atomic_write_json, read_jsonl
from lpa.registry import Registry, parse_names


def test_registry_rejects_duplicates_and_lists_choices():
    reg: Registry[int] = Registry("widget")
    reg.register("a", 1)
    reg.register("b-2", 2)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", 3)
    with pytest.raises(LpaError, match="Valid choices: a, b-2"):
        reg.get("zzz")
    assert parse_names("a,b-2", reg) == ["a", "b-2"]
    with pytest.raises(LpaError, match="Unknown widget 'c'"):
        parse_names("a,c", reg)


class Inner(BaseModel):
    steps: int = 10
    lr: float = 1e-3


class Outer(BaseModel):
    name: str = "x"
    train: Inner = Inner()


def test_build_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: y\ntrain:\n  steps: 5\n")
    config = build_config(Outer, path, ["train.lr=0.5"])
    assert config == Outer(name="y", train=Inner(steps=5, lr=0.5))
    with pytest.raises(LpaError, match="train.steps"):
        build_config(Outer, path, ["train.steps=abc"])
    with pytest.raises(LpaError, match="key=value"):
        apply_overrides({}, ["oops"])
    with pytest.raises(LpaError, match="not found"):
        build_config(Outer, tmp_path / "missing.yaml")


def test_jsonl_survives_truncated_last_line(tmp_path):
    path = tmp_path / "x.jsonl"
    append_jsonl(path, [{"a": 1}, {"a": 2}])
    with path.open("a") as handle:
        handle.write('{"a": 3')  # a crash mid-write
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    atomic_write_json(tmp_path / "r.json", {"b": 1})
    assert json.loads((tmp_path / "r.json").read_text()) == {"b": 1}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "lpa.cli.main", *args], capture_output=True, text=True, timeout=120)


def test_cli_help_and_user_errors_without_traceback(tmp_path):
    result = _cli("--help")
    assert result.returncode == 0 and "generate" in result.stdout
    result = _cli("generate", "--prompts", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o.jsonl"))
    assert result.returncode == 2
    assert "Prompts file not found" in result.stderr and "Traceback" not in result.stderr
    result = _cli("chat", "--model", "./no/such/model")
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_atomic_writes_are_readable_like_ordinary_files(tmp_path):
    import os
    import stat

    import torch

    from lpa.io import atomic_write_text
    from lpa.persona.vector import PersonaVector

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.json", "{}")
        vector = PersonaVector(trait="t", model="m", vectors=torch.ones(2, 3), layer=1)
        vector.save(tmp_path / "t.safetensors")  # safetensors itself creates 0600 files
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "t.safetensors").stat().st_mode) == 0o644
