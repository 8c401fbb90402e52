# orderflow: `make run` starts the whole system, `make test` runs the suite. Both set up
# everything they need on a fresh machine (virtualenv, locked dependencies, services, schema).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast lint fmt bench chaos services tools migrate seed clean docker image stack stack-down

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

services:
	@scripts/ensure-services.sh

# promtool and kubectl, for the offline checks of the deployment artefacts (tests/deploy)
tools: $(STAMP)
	@VENV=$(VENV) scripts/ensure-tools.sh

# The Docker engine and Compose v2, installed and started when missing (scripts/ensure-docker.sh).
docker: $(STAMP)
	@PYTHON=$(BIN)/python scripts/ensure-docker.sh

# Every image of the Compose stack, built locally with no registry (deploy/docker/build-images.sh).
image: docker
	@PYTHON=$(BIN)/python deploy/docker/build-images.sh

# The whole system under Docker Compose, offline: images built here, then `up --wait`.
COMPOSE := docker compose -f docker-compose.yml -f deploy/docker/compose.offline.yml
stack: image
	@test -f .env || deploy/docker/new-env.sh .env
	$(COMPOSE) up -d --wait --no-build
	@echo "up. First admin key: $(COMPOSE) exec api orderflow keys create --role admin"

stack-down:
	$(COMPOSE) down

migrate: $(STAMP) services
	$(BIN)/orderflow migrate

seed: migrate
	$(BIN)/orderflow seed

run: seed
	$(BIN)/orderflow up

test: $(STAMP) services tools
	$(BIN)/pytest $(PYTEST_ARGS)

# The pure layer alone (tests/unit): no service, no subprocess, a few seconds. Opening a
# connection there fails the test (tests/unit/conftest.py). The API fuzzer's plugin is not
# loaded: nothing here uses it, and it costs start-up time.
test-fast: $(STAMP)
	$(BIN)/pytest tests/unit -q -p no:schemathesis $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: $(STAMP)
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

# The standard benchmark suite (a few minutes) on a fresh database of its own; writes
# docs/bench.json and rewrites the figures block of docs/performance.md.
bench: $(STAMP) services
	$(BIN)/orderflow bench suite --json docs/bench.json --markdown docs/performance.md

# The fault suite (a minute, every fault once) on a fresh database of its own: kills the
# system's processes and restarts RabbitMQ's app, PostgreSQL and Redis (docs/reliability.md).
chaos: $(STAMP) services
	$(BIN)/orderflow chaos --duration 60 --json .chaos/last.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
