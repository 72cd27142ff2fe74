# Two commands a newcomer needs: `make run` and `make test`. Both set up what
# they need first (.venv with Python packages, node_modules with buf).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BUF := node_modules/.bin/buf

.PHONY: run test setup lint typecheck generate check-generated unit e2e chaos fuzz bench

# Running needs Python only; buf (Node) is for linting the protos.
run: $(VENV)/.installed
	$(BIN)/htk run

test: setup lint typecheck check-generated
	$(BIN)/pytest

setup: $(VENV)/.installed $(BUF)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# `npm ci` rejects the lock file over the other platforms' optional buf binaries.
$(BUF): package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BUF) lint

typecheck: setup
	$(BIN)/mypy

# Regenerates gen/ and the Envoy descriptor from protos/, and the README's
# configuration table from server/settings.py.
generate: setup
	scripts/generate.sh
	$(BIN)/python scripts/configuration_table.py README.md

# Fails when gen/ or the Envoy descriptor is stale against protos/, or the
# README's configuration table against server/settings.py.
check-generated: setup
	rm -rf build/generated && mkdir -p build/generated
	scripts/generate.sh build/generated
	diff -r -x __pycache__ gen build/generated/gen
	cmp envoy/process_service.binpb build/generated/envoy/process_service.binpb
	cmp docs/openapi.json build/generated/docs/openapi.json
	cp README.md build/generated/README.md
	$(BIN)/python scripts/configuration_table.py build/generated/README.md
	diff README.md build/generated/README.md
	@echo "generated code is current"

unit: setup
	$(BIN)/pytest tests/unit

e2e: setup
	$(BIN)/pytest tests/e2e

# Fault injection against the real stack (also part of `make test`).
chaos: setup
	$(BIN)/pytest tests/chaos

# Schemathesis and Hypothesis at full strength; `make test` runs fewer cases.
fuzz: setup
	HTK_FUZZ_EXAMPLES=1000 $(BIN)/pytest tests/fuzz

# Benchmarks, not tests: prints a table and writes docs/benchmarks.md.
# BENCH_PROCESSES=20000 make bench is the quick run; the default seeds 1M.
bench: setup
	$(BIN)/python -m bench
