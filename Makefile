# webhook-gateway — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= deploy/config/quickstart.yaml
export KAFKA_PORT ?= 9092

.PHONY: help venv tools kafka-jars kafka-up kafka-down services-up services-down services-status \
        lint fmt typecheck test test-unit run bench faults lock image clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is missing: install Python 3.11+"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

venv: $(STAMP)  ## create .venv and install the project with dev extras

kafka-jars:  ## fetch the Kafka broker jars from Maven Central (cached in .cache/)
	deploy/local/kafka.sh jars

kafka-up:  ## start the local single-node Kafka (KRaft) on 127.0.0.1:$KAFKA_PORT (idempotent)
	deploy/local/kafka.sh up

kafka-down:  ## stop the local Kafka; no JVM is left behind
	deploy/local/kafka.sh down

tools:  ## test tools: helm (Go module proxy); prometheus, promtool, chromium, podman (Debian)
	deploy/local/helm.sh install
	deploy/local/prometheus.sh install
	deploy/local/chromium.sh install
	deploy/local/image.sh tools

services-up:  ## start Kafka, Redis and PostgreSQL on loopback (idempotent)
	deploy/local/services.sh up

services-down:  ## stop all local services
	deploy/local/services.sh down

services-status:
	deploy/local/services.sh status

fmt: $(STAMP)  ## format the code
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

lint: $(STAMP)  ## ruff format check and lint
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)  ## mypy --strict, the project and the example plugins
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict examples/sink-plugin/src examples/verifier-plugin/src

test: $(STAMP) tools services-up lint typecheck  ## everything: venv, jars, services, lint, types, all tests
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)  ## unit tests only (no services)
	$(PY) -m pytest --ignore=tests/integration $(PYTEST_ARGS)

run: $(STAMP)  ## run the product on its embedded default (local Kafka, gateway, one consumer)
	deploy/local/run.sh $(CONFIG)

bench: $(STAMP) services-up  ## side-by-side benchmark (~12 min): gateway vs raw ASGI and naive app, consumers -> var/bench/results.md
	$(PY) -m bench $(BENCH_ARGS)

faults: $(STAMP) services-up  ## fault-injection scenarios (~22 min, shipped defaults): every 202 reconciled with Kafka and the sinks
	$(PY) -m faults --run-dir var/faults $(FAULTS_ARGS)

# pip-tools in a virtualenv of its own (not the project's: its pins must not move the
# dev tools), on the Python of the image (3.11). Hashes of every file of each pinned
# version are kept, so the lock installs on linux x86_64 and aarch64 alike.
LOCK_TOOLS := .cache/lock-tools
lock:  ## regenerate requirements.lock (hash-pinned runtime dependencies and the otel extra, which the image installs)
	$(PYTHON) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/pip install -q 'pip-tools==7.6.2'
	$(LOCK_TOOLS)/bin/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe --extra otel \
		--no-emit-index-url --no-emit-find-links --output-file requirements.lock pyproject.toml

image:  ## build the container image with podman on a Debian-made base (deploy/local/image.sh)
	deploy/local/image.sh build

clean:  ## remove the virtualenv, caches and local service data (stop services first)
	-deploy/local/services.sh down
	rm -rf $(VENV) .cache var .pytest_cache .mypy_cache .ruff_cache .hypothesis
