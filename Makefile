# dominant-patterns: `make demo` runs the embedded default, `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# glibc's malloc returns freed buffers to the OS every step, which made the CPU loop ~5x slower.
export MALLOC_MMAP_MAX_ := 0
export MALLOC_TRIM_THRESHOLD_ := 100000000000
ARGS ?=

.PHONY: help venv demo test test-all lint clean

help:  ## list targets
	@grep -E '^[a-zA-Z_-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

venv: $(VENV)/.installed  ## create .venv and install the package with its pinned deps

demo: venv  ## the main job on the embedded default (EfficientNet-Lite0 + scikit-image photos, CPU)
	$(PY) -m dominant_patterns $(ARGS)

test: venv  ## fast tests (no slow, no GPU)
	$(PY) -m pytest -q -m "not slow and not gpu" $(ARGS)

test-all: venv  ## every test, slow ones included
	$(PY) -m pytest -q $(ARGS)

lint: venv  ## ruff
	$(VENV)/bin/ruff check dominant_patterns tests experiments

clean:  ## remove outputs and caches (keeps .venv)
	rm -rf outputs .pytest_cache .ruff_cache
