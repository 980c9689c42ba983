# weightshare: one virtual environment at .venv with every package in packages/ installed editable.
#   make demo   set up .venv and run the main job
#   make test   set up .venv and run the whole test suite
# Only python3 (>= 3.10) and the package registry are needed. A package is a folder in packages/;
# each is installed with its `test` extra (the optional dependencies its tests exercise).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := $(sort $(wildcard packages/*))
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml $(wildcard packages/*/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet $(foreach p,$(PACKAGES),-e "$(p)[test]") --group dev
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m ws_core tour

# Passive OpenMP waiting keeps the small CPU kernels of the tests from spinning against each other
# on small machines (see docs/benchmarks.md); it does not change results.
test: $(STAMP)
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/actuation.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
