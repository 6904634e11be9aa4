# The two commands of the README: `make demo` (the main job end to end) and `make test`.
# Both create the virtualenv on first use; constraints.txt pins torch to the local CPU wheel.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo demo-quick test lint format bench bench-layer study
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/minimoe demo

demo-quick: setup
	$(BIN)/minimoe demo --quick

test: setup lint
	$(BIN)/python -m pytest -q

lint: setup  # ruff: lint rules and formatting, checked (`make format` applies them)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: setup
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

bench: setup  # docs/performance.md, 8-18 minutes on 2 cores
	$(BIN)/python benchmarks/run.py

bench-layer: setup  # the single MoE layer vs dense check, under a minute
	$(BIN)/python benchmarks/moe_layer.py

study: setup  # docs/results.md: the capacity-gap grid, about 2 hours, resumable
	$(BIN)/minimoe study --output_dir runs/study
