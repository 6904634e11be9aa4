# The two commands of the README: `make demo` (the main job end to end) and `make test`.
# Both create the virtualenv on first use; torch is pinned to the local CPU wheel in pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo demo-quick test bench bench-layer study
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/minimoe demo

demo-quick: setup
	$(BIN)/minimoe demo --quick

test: setup
	$(BIN)/python -m pytest -q

bench: setup  # docs/performance.md, about 5 minutes
	$(BIN)/python benchmarks/run.py

bench-layer: setup  # the single MoE layer vs dense check, under a minute
	$(BIN)/python benchmarks/moe_layer.py

study: setup  # docs/results.md: the capacity-gap grid, about 2 hours, resumable
	$(BIN)/minimoe study --output_dir runs/study
