"""Shared fixtures: tiny random models (fast) and the embedded model (slow, session-scoped)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from lpa.testing import TINY_ARCHITECTURES, tiny_model, tiny_tokenizer

# Peer libraries with conflicting metadata (steering-vectors pins transformers<5) live outside site-packages
# so that `pip check` passes; only the tests that compare against them see them (see the Makefile).
_PEER_DIR = Path(sys.prefix) / "peer"
if _PEER_DIR.is_dir() and str(_PEER_DIR) not in sys.path:
    sys.path.append(str(_PEER_DIR))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmarks"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared local benchmark copies (tests may use them; the product never assumes them)."""
    env = os.environ.get("LPA_DATA_DIR")
    path = Path(env) if env else SHARED_DATA
    if not path.is_dir():
        pytest.skip(f"benchmark data folder not found: {path}")
    return path


@pytest.fixture
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture
def llama():
    return tiny_model("llama")


@pytest.fixture(params=sorted(TINY_ARCHITECTURES))
def any_arch_model(request):
    return tiny_model(request.param)


@pytest.fixture(scope="session")
def embedded():
    """(model, tokenizer) of the embedded SmolLM2-135M-Instruct; converted once, then cached."""
    from lpa.models import load_model

    try:
        return load_model("smollm2-135m", device="cpu")
    except Exception as exc:  # the package is missing: a setup problem, shown as a skip reason
        pytest.skip(f"embedded model unavailable: {exc}")


@pytest.fixture
def interruptible_children():
    """Child processes that a SIGINT reaches, even when pytest itself was started in the background.

    A shell starts a background job (``make test &``, ``nohup … &``) with SIGINT ignored, and an ignored signal
    stays ignored across ``exec``: every ``lpa`` a test spawns would then shrug off Ctrl-C and a job cancel.
    A handled signal is reset to the default on ``exec``, so installing Python's handler here gives the children
    the default (terminal-like) behaviour; the pytest process gets its own handler back afterwards."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
