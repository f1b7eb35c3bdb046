# Two commands matter: `make demo` and `make test`. Everything else is a step they use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# Env vars win when set, so the same targets can point at another catalogue or data dir.
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export PIPELINE_DATA_DIR ?= $(CURDIR)/data
export CATALOGUE_URI ?= demo
export MODEL_PRESET ?= tiny
export WANDB_MODE ?= offline

.PHONY: setup demo refresh ui lint format test clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(DAGSTER_HOME):
	mkdir -p $(DAGSTER_HOME)
	test -f $(DAGSTER_HOME)/dagster.yaml || printf 'telemetry:\n  enabled: false\n' > $(DAGSTER_HOME)/dagster.yaml

demo: setup $(DAGSTER_HOME)
	$(BIN)/python -m dagster_project.cli demo

refresh: setup $(DAGSTER_HOME)
	$(BIN)/python -m dagster_project.cli refresh

ui: setup $(DAGSTER_HOME)
	$(BIN)/dagster dev -m dagster_project.definitions

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# pytest exits 5 when it collects nothing; that is not a failure of the code.
test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

clean:
	rm -rf $(PIPELINE_DATA_DIR) $(DAGSTER_HOME)
