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
# Instance profile: deploy/dagster.$(DAGSTER_PROFILE).yaml; PostgreSQL when DAGSTER_PG_URL is set.
DAGSTER_PROFILE ?= $(if $(DAGSTER_PG_URL),postgres,local)
# `make refresh GROUPS=ingest,images,curation` limits the refresh to some asset groups.
GROUPS ?=
export DAGSTER_CELERY_QUEUE ?= dagster

.PHONY: bench setup instance demo refresh stale trace gc ui worker lint format test clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Writes $(DAGSTER_HOME)/dagster.yaml from the profile once; an existing file is the operator's.
instance:
	mkdir -p "$(DAGSTER_HOME)"
	test -f "$(DAGSTER_HOME)/dagster.yaml" || cp deploy/dagster.$(DAGSTER_PROFILE).yaml "$(DAGSTER_HOME)/dagster.yaml"

demo: setup instance
	$(BIN)/python -m dagster_project.cli demo

refresh: setup instance
	$(BIN)/python -m dagster_project.cli refresh $(if $(GROUPS),--groups $(GROUPS))

stale: setup instance
	$(BIN)/python -m dagster_project.cli stale $(if $(GROUPS),--groups $(GROUPS))

# `make trace MODEL=<model dir or run id>` / `make trace ROW=<row_id>`: what trained a checkpoint,
# and which checkpoints a row trained (read from the files beside each checkpoint).
MODEL ?=
ROW ?=
trace: setup
	$(if $(MODEL)$(ROW),,$(error usage: make trace MODEL=<model dir or run id> | ROW=<row_id>))
	$(BIN)/python -m dagster_project.cli trace $(if $(MODEL),--model $(MODEL),--row $(ROW))

# Delete dataset snapshots and images that no kept checkpoint (or the current pipeline) needs.
gc: setup
	$(BIN)/python -m dagster_project.cli gc $(if $(DRY_RUN),--dry-run)

ui: setup instance
	$(BIN)/dagster dev -m dagster_project.definitions

# A Celery worker for DAGSTER_EXECUTOR=celery runs (broker: DAGSTER_CELERY_BROKER_URL).
worker: setup instance
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dagster-celery worker start -A dagster_celery.app \
		-y deploy/celery-worker.yaml -q $(DAGSTER_CELERY_QUEUE)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# pytest exits 5 when it collects nothing; that is not a failure of the code.
test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

# CPU benchmarks (ratios vs same-run baselines); the table lands in bench/RESULTS.md.
bench: setup
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(PIPELINE_DATA_DIR) $(DAGSTER_HOME)
