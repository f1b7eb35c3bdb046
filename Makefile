# Two commands matter: `make demo` and `make test`. Everything else is a step they use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# What is installed: the runtime set (make demo and the pipeline) or that plus the dev extras.
RUNTIME_STAMP := $(VENV)/.runtime-stamp
DEV_STAMP := $(VENV)/.dev-stamp

# Env vars win when set, so the same targets can point at another catalogue or data dir.
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export PIPELINE_DATA_DIR ?= $(CURDIR)/data
export CATALOGUE_URI ?= demo
export MODEL_PRESET ?= tiny
export WANDB_MODE ?= offline
# `make refresh GROUPS=ingest,images,curation` limits the refresh to some asset groups.
GROUPS ?=
export DAGSTER_CELERY_QUEUE ?= dagster

.PHONY: bench setup setup-dev instance demo refresh stale trace gc ui worker lint format test \
	test-fast clean

setup: $(RUNTIME_STAMP)
setup-dev: $(DEV_STAMP)

$(RUNTIME_STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e .
	touch $(RUNTIME_STAMP)

# The dev extras include the runtime set (and the deploy extras the service tests use).
$(DEV_STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(RUNTIME_STAMP) $(DEV_STAMP)

# Writes $(DAGSTER_HOME)/dagster.yaml once (an existing file is the operator's): the local
# profile, or the postgres one when DAGSTER_PG_URL is set. The CLI's ensure_instance_config
# chooses; every CLI command runs it first, so demo/refresh/stale need no separate step.
instance: setup
	$(BIN)/python -m dagster_project.cli instance

demo: setup
	$(BIN)/python -m dagster_project.cli demo

refresh: setup
	$(BIN)/python -m dagster_project.cli refresh $(if $(GROUPS),--groups $(GROUPS))

stale: setup
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
	$(BIN)/python -m dagster_project.cli gc $(if $(DRY_RUN),--dry-run) \
		$(if $(OP_VALUES_DAYS),--op-values-days $(OP_VALUES_DAYS))

ui: setup instance
	$(BIN)/dagster dev -m dagster_project.definitions

# A Celery worker for DAGSTER_EXECUTOR=celery runs (broker: DAGSTER_CELERY_BROKER_URL).
worker: setup instance
	$(BIN)/python -m pip install --quiet -e '.[deploy]'
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dagster-celery worker start -A dagster_celery.app \
		-y deploy/celery-worker.yaml -q $(DAGSTER_CELERY_QUEUE) -- --prefetch-multiplier=1 -O fair

lint: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# pytest exits 5 when it collects nothing; that is not a failure of the code. TEST_WORKERS=N
# runs the suite on N pytest-xdist workers, a test file per worker (its module fixtures, such as
# a built pipeline, stay on one worker), longest files first (tests/conftest.py). The default is
# one process: on 2 cores the full demo's training shares them with the other worker's steps,
# and torch's threads then slow it several-fold, past the demo test's time limit.
TEST_WORKERS ?= 0
XDIST := $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder,)
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider $(XDIST)
test: lint
	$(PYTEST); rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

# The inner loop: everything but the end-to-end and service tests marked `slow`.
test-fast: lint
	$(PYTEST) -m "not slow"; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

# CPU benchmarks (ratios vs same-run baselines); the table lands in bench/RESULTS.md.
bench: setup
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(PIPELINE_DATA_DIR) $(DAGSTER_HOME)
