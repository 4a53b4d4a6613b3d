# The README's two commands: `make demo` and `make test`. Both set up a fresh machine first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch goes in first, from the pinned CPU wheel: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=

.PHONY: setup setup-dev setup-bench demo test test-all bench results lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	@touch $@

# Everything the README's commands need: the package, the search index and server (faiss, fastapi,
# uvicorn) and Parquet manifests (pyarrow).
USER_EXTRAS ?= search,parquet

$(VENV)/.core: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install -q -e '.[$(USER_EXTRAS)]'
	@touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install -q -e '.[dev]'
	bash scripts/install_browser.sh
	@touch $@

$(VENV)/.bench: pyproject.toml $(VENV)/.dev
	$(BIN)/pip install -q -e '.[dev,bench]'
	# OpenCLIP is the CLIP benchmark's peer; --no-deps keeps its torchvision requirement (a CUDA build
	# here) out: the benchmark gives it a stand-in, it only calls create_model.
	$(BIN)/pip install -q --no-deps open-clip-torch==3.3.0
	@touch $@

setup: $(VENV)/.core
setup-dev: $(VENV)/.dev
setup-bench: $(VENV)/.bench

demo: setup
	$(BIN)/polymodal demo

test: setup-dev
	$(BIN)/python -m pytest -q

test-all: setup-dev
	$(BIN)/python -m pytest -q -m ''

bench: setup-bench
	$(BIN)/python benchmarks/run_all.py

# Recompute the headline figures of docs/ and compare them with docs/results.json (long; SUITE=avclips for one).
SUITE ?= all
results: setup-dev
	$(BIN)/python scripts/results.py --suite $(SUITE)

lint: setup-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src/polymodal

clean:
	rm -rf $(VENV) build dist src/*.egg-info
