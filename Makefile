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

# The protos must not break the contract published on main (scripts/breaking.py);
# BREAKING_AGAINST=<git ref or folder> compares with another version instead.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BUF) lint
	$(BIN)/python scripts/breaking.py $(if $(BREAKING_AGAINST),--against $(BREAKING_AGAINST))

typecheck: setup
	$(BIN)/mypy

# Regenerates gen/ and the Envoy descriptor from protos/.
generate: setup
	scripts/generate.sh

# Fails when gen/ or the Envoy descriptor is stale against protos/.
check-generated: setup
	rm -rf build/generated && mkdir -p build/generated
	scripts/generate.sh build/generated
	diff -r -x __pycache__ gen build/generated/gen
	cmp envoy/process_service.binpb build/generated/envoy/process_service.binpb
	cmp docs/openapi.json build/generated/docs/openapi.json
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
