# Two entry points (see README): `make pipeline` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

.PHONY: setup pipeline test lint
setup: $(STAMP)

## Run the whole DVC pipeline (download -> ... -> evaluate) on the built-in demo dataset.
pipeline: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

## Run the test suite (and lint).
test: $(STAMP)
	$(BIN)/ruff check panda stages tests benchmarks
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check panda stages tests benchmarks
