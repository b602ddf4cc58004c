# Parley: `make run` and `make test` each work on a fresh clone by themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-slow lint typecheck bench vectors vectors-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,plot]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/mesh-node demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check protocols mesh

typecheck: $(STAMP)
	$(BIN)/mypy protocols mesh
	$(BIN)/mypy node simulations

test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q -m "not slow"

# The 20 chaos seeds at 1,000 nodes, one per core at a time (SLOW_WORKERS=N to choose).
SLOW_WORKERS ?= auto
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow -n $(SLOW_WORKERS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_wire.py
	$(BIN)/mesh-node bench

vectors: $(STAMP)
	$(BIN)/python docs/make_test_vectors.py

vectors-check: $(STAMP)
	$(BIN)/python docs/make_test_vectors.py --check

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
