"""Crash safety: `kill -9` a real `lpa` process mid-run, rerun the same command, and get what an
uninterrupted run gets.

The subprocess runs the real CLI through a small wrapper that only slows down the append of one
JSONL file (so the kill lands mid-run, deterministically); product code is untouched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lpa.testing import tiny_model, tiny_tokenizer

WRAPPER = """
import os, sys, time
import lpa.io as io
_append = io.append_jsonl
def _slow_append(path, rows):
    _append(path, rows)
    if os.path.basename(str(path)) == os.environ.get("LPA_TEST_SLOW_FILE"):
        time.sleep(float(os.environ.get("LPA_TEST_SLOW_SECONDS", "0")))
io.append_jsonl = _slow_append
if os.environ.get("LPA_TEST_SLOW_FILE") == "state_saves.jsonl":  # stop between lpa_state.json and Trainer's files
    import lpa.training.state as state
    _save = state.save
    def _noted_save(folder, value):
        _save(folder, value)
        io.append_jsonl(os.path.join(os.path.dirname(str(folder)), "state_saves.jsonl"), [{"folder": str(folder)}])
    state.save = _noted_save
if os.environ.get("LPA_TEST_JUDGE_CHUNK"):  # several judge appends even on a tiny suite
    import lpa.eval.runner as runner
    runner.JUDGE_CHUNK = int(os.environ["LPA_TEST_JUDGE_CHUNK"])
from lpa.cli.main import main
sys.argv = ["lpa", *sys.argv[1:]]
main()
"""


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny")
    tiny_model("llama").save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def _env(slow_file: str | None = None, seconds: float = 0.0) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
           "LPA_TEST_JUDGE_CHUNK": "2", "LPA_PROGRESS": "0"}
    if slow_file:
        env.update(LPA_TEST_SLOW_FILE=slow_file, LPA_TEST_SLOW_SECONDS=str(seconds))
    return env


def _run(args: list[str], wrapper: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(wrapper), *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _kill_when(args: list[str], wrapper: Path, watched: Path, lines: int, slow_seconds: float = 1.5) -> None:
    """Start the command, wait until ``watched`` has ``lines`` lines, then SIGKILL it."""
    proc = subprocess.Popen([sys.executable, str(wrapper), *args], env=_env(watched.name, slow_seconds),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if watched.exists() and len(watched.read_text().splitlines()) >= lines:
                break
            if proc.poll() is not None:
                pytest.fail(f"process ended before it could be killed: {proc.stderr.read()[-2000:]}")
            time.sleep(0.05)
        else:
            pytest.fail("the watched file never grew")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture
def wrapper(tmp_path) -> Path:
    path = tmp_path / "lpa_wrapper.py"
    path.write_text(WRAPPER)
    return path


def _losses(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    keys = [k for k in rows[-1] if k.startswith("loss") or k.startswith("defender")]
    return [(r["step"], round(float(r[keys[0]]), 5)) for r in rows if "step" in r and keys and keys[0] in r]


@pytest.mark.parametrize("killed_in", ["metrics.jsonl", "state_saves.jsonl"])
def test_kill_9_during_training_then_rerun_equals_uninterrupted(tmp_path, tiny_dir, wrapper, killed_in):
    """Killed between steps, or in the middle of writing a checkpoint (that half-written
    checkpoint-2 must be skipped and the run resumed from checkpoint-1)."""

    def args(out: Path) -> list[str]:
        return ["train", "--method", "lpa", "--model", str(tiny_dir), "--traits", "negative-only", "--preset", "embedded",
                "--out", str(out), "--steps", "6", "--batch-size", "2", "--device", "cpu", "--seed", "0",
                "--set", "guard.every=0", "--set", "progress=false", "--set", "save_every=1",
                "--set", "attack.steps=2", "--set", "defender.steps=1"]

    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    _run(args(clean), wrapper, _env())
    _kill_when(args(crashed), wrapper, crashed / killed_in, lines=3 if killed_in == "metrics.jsonl" else 2)
    assert not (crashed / "result.json").exists()
    if killed_in == "state_saves.jsonl":
        partial = crashed / "checkpoint-2"
        assert (partial / "lpa_state.json").is_file() and not (partial / "trainer_state.json").exists()
    _run(args(crashed), wrapper, _env())

    assert _losses(crashed) == _losses(clean) and len(_losses(clean)) >= 6
    a = load_file(clean / "adapter" / "adapter_model.safetensors")
    b = load_file(crashed / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_kill_9_during_generation_then_rerun_equals_uninterrupted(tmp_path, tiny_dir, wrapper):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Question number {i}?"}) + "\n" for i in range(8)))

    def args(out: Path) -> list[str]:
        return ["generate", "--prompts", str(prompts), "--out", str(out), "--model", str(tiny_dir),
                "--batch-size", "1", "--max-new-tokens", "6", "--device", "cpu"]

    clean, crashed = tmp_path / "clean.jsonl", tmp_path / "crashed.jsonl"
    _run(args(clean), wrapper, _env())
    _kill_when(args(crashed), wrapper, crashed, lines=3)
    assert 3 <= len(crashed.read_text().splitlines()) < 8
    _run(args(crashed), wrapper, _env())

    def texts(path: Path) -> dict[str, str]:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids)), "a resumed run must not duplicate finished prompts"
        return {r["id"]: r["text"] for r in rows}

    assert texts(crashed) == texts(clean) and len(texts(clean)) == 8


@pytest.mark.parametrize("killed_in", ["generations.jsonl", "judgements.jsonl"])
def test_kill_9_during_eval_then_rerun_equals_uninterrupted(tmp_path, tiny_dir, wrapper, killed_in):
    """Killed while generating, or while judging: the rerun finishes with the same generations and verdicts."""

    def args(out: Path) -> list[str]:
        return ["eval", "--model", str(tiny_dir), "--benchmarks", "smoke", "--limit", "8", "--attacks", "direct",
                "--judge", "keyword", "--max-new-tokens", "4", "--batch-size", "2", "--device", "cpu",
                "--out", str(out), "--accept-judge-errors"]

    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    _run(args(clean), wrapper, _env())
    _kill_when(args(crashed), wrapper, crashed / killed_in, lines=2 if killed_in == "generations.jsonl" else 1)
    assert not (crashed / "results.json").exists()
    _run(args(crashed), wrapper, _env())

    def rows(path: Path, field: str) -> dict[str, str]:
        items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        keys = [r["key"] for r in items]
        assert len(keys) == len(set(keys)), f"duplicated rows in {path.name}"
        return {r["key"]: r[field] for r in items}

    assert rows(crashed / "generations.jsonl", "text") == rows(clean / "generations.jsonl", "text")
    assert rows(crashed / "judgements.jsonl", "label") == rows(clean / "judgements.jsonl", "label")
    assert len(rows(clean / "judgements.jsonl", "label")) == 8
