# The commands people and CI share. `make quickstart` trains and registers a model; `make test`
# runs the whole suite. Both create the virtualenv and install what they need on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# The venv's tools first, so `mlflow run --env-manager local` finds the venv's python.
export PATH := $(BIN):$(PATH)
# Contract: the embedded SQLite store unless the caller points elsewhere.
export MLFLOW_TRACKING_URI ?= sqlite:///mlflow.db
EXPERIMENT ?= mnist-cnn
PYTEST_ARGS ?=
# The suite runs in two pytest-xdist worker processes (most tests wait on servers, Spark or
# subprocesses, and one process kept about one of two cores busy), a whole test file to a worker,
# so module fixtures (a model server, a photo folder) are built once. TEST_WORKERS=0: one process.
# Files are handed out in the order they are collected (--no-loadscope-reorder): the longest one
# (the quick benchmark, about 5 minutes) first, the many short unit-test files last, where they
# fill in. xdist's default order, most tests per file first, started the benchmark last.
TEST_WORKERS ?= 2

.PHONY: help quickstart test lint format bench bench-quick serve ui clean install install-test install-spark system-deps

help:
	@echo "make quickstart   create the venv, train with 'mlflow run', register the model (EPOCHS=2: a first look)"
	@echo "make test         create the venv with test extras and run the whole test suite"
	@echo "make lint         ruff"
	@echo "make bench        full benchmarks (bench-quick: a few seconds each)"
	@echo "make serve        mlflow models serve the champion on port 5001"
	@echo "make ui           mlflow ui on port 5000"

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "python3.11 not found"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-core: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --progress-bar off -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --progress-bar off -e '.[test]'
	@touch $@ $(VENV)/.installed-core

$(VENV)/.installed-spark: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --progress-bar off -e '.[spark]'
	@touch $@

install: $(VENV)/.installed-core
install-test: $(VENV)/.installed-test
install-spark: $(VENV)/.installed-spark

# Training parameters for `make quickstart`, spelled in capitals: make quickstart EPOCHS=2
TRAIN_PARAMETERS := EPOCHS:epochs BATCH_SIZE:batch_size LR:lr WEIGHT_DECAY:weight_decay SEED:seed \
	VAL_SAMPLES:val_samples DATA_DIR:data_dir MAX_TRAIN_SAMPLES:max_train_samples MODEL_NAME:model_name \
	REGISTER:register CARD_SAMPLES:card_samples
variable = $(word 1,$(subst :, ,$(1)))
TRAIN_ARGS = $(foreach pair,$(TRAIN_PARAMETERS),$(if $($(call variable,$(pair))),-P $(word 2,$(subst :, ,$(pair)))=$($(call variable,$(pair)))))

quickstart: install
	mlflow run . --env-manager local --experiment-name $(EXPERIMENT) $(TRAIN_ARGS)
	@echo
	@echo "Next: source $(VENV)/bin/activate  (the commands below are the venv's)"
	@echo "      mnist-registry list        (versions, aliases, stages)"
	@echo "      make serve                 (mlflow models serve -m models:/mnist-cnn@champion -p 5001)"
	@echo "      make ui                    (mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI))"

test: install-test system-deps
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# From Debian's packages: wrk (the load generator), PostgreSQL (the team server's tests start
# a private cluster with its initdb/pg_ctl, found on PATH or in /usr/lib/postgresql/*/bin) and
# docker-compose (checks deploy/compose.yaml; no container runs) and chromium (the web pages'
# tests drive it with Playwright; Playwright never downloads a browser here).
APT_INSTALL = SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q $(1) >/dev/null 2>&1 || { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q $(1) >/dev/null; }
system-deps:
	@command -v wrk >/dev/null || { $(call APT_INSTALL,wrk); }
	@command -v wrk >/dev/null || { echo "could not install wrk (apt-get install wrk)"; exit 1; }
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(call APT_INSTALL,postgresql); }
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "could not install PostgreSQL (apt-get install postgresql)"; exit 1; }
	@command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || { $(call APT_INSTALL,docker-compose); }
	@command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || { echo "could not install docker-compose (apt-get install docker-compose)"; exit 1; }
	@command -v chromium >/dev/null || { $(call APT_INSTALL,chromium); }
	@command -v chromium >/dev/null || { echo "could not install chromium (apt-get install chromium)"; exit 1; }

bench: install-test system-deps
	$(BIN)/python -m bench $(if $(ONLY),--only $(ONLY))

bench-quick: install-test system-deps
	$(BIN)/python -m bench --quick $(if $(ONLY),--only $(ONLY))

PORT ?= 5001
serve: install
	@$(BIN)/python -m mnist_mlops.serve.preflight --model_uri models:/mnist-cnn@champion --port $(PORT)
	mlflow models serve -m models:/mnist-cnn@champion -p $(PORT) --env-manager local

ui: install
	@$(BIN)/python -m mnist_mlops.registry.ui --port 5000

clean:
	rm -rf mlruns mlflow.db .pytest_cache
