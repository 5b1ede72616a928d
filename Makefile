# The two commands a newcomer needs: `make run` and `make test`. Each creates .venv and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
MEDIA ?= $(HOME)/Pictures
LIBRARY ?= $(CURDIR)/.clipsearch-library
MODEL ?=
HOST ?= 127.0.0.1
PORT ?= 8000
MODEL_ARG := $(if $(MODEL),--model $(MODEL),)

.PHONY: run test install install-dev lint bench mutation clean

# pip is left as the venv ships it: newer pips ignore this machine's torch constraint.
$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch/torchvision first, pinned: they install from local disk on the project's machines.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[all]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/clipsearch --library "$(LIBRARY)" index "$(MEDIA)" $(MODEL_ARG)
	$(BIN)/clipsearch --library "$(LIBRARY)" serve --host $(HOST) --port $(PORT)

test: install-dev
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check clipsearch tests benchmarks
	$(BIN)/ruff format --check clipsearch tests benchmarks
	$(BIN)/lint-imports --no-cache  # the layering of docs/architecture.md

bench: install-dev
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

# Mutation testing ([tool.mutmut] in pyproject.toml), not in CI: all six modules take
# ~1 hour with 2 workers on a shared 2-core machine; one module (a few minutes):
#   make mutation MUTATE=clipsearch.search.moments
# Workers are forked (fast); one BLAS/OpenMP thread each, so no worker inherits a busy
# thread pool. Survivors: python scripts/mutation_score.py --survivors; mutmut show NAME.
MUTATE ?= clipsearch.eval.metrics clipsearch.search.query clipsearch.store.filters \
	clipsearch.store.filter_sql clipsearch.search.video clipsearch.search.moments
MUTATION_JOBS ?= 2
mutation: install-dev
	rm -rf mutants
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMEXPR_NUM_THREADS=1 \
		nice -n 10 $(BIN)/mutmut run --max-children $(MUTATION_JOBS) $(foreach m,$(MUTATE),'$(m).*') \
		> mutants.log 2>&1 || { tail -50 mutants.log; exit 1; }
	$(BIN)/python scripts/mutation_score.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info mutants mutants.log
