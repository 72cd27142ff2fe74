# Two commands a newcomer needs: `make run` and `make test`. Both set up what
# they need first (.venv with Python packages, node_modules with buf, the
# TypeScript client's packages, the Go client's modules and code generators).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BUF := node_modules/.bin/buf
TS_CLIENT := clients/typescript
GO_CLIENT := clients/go
# protoc-gen-go and protoc-gen-go-grpc, at the versions $(GO_CLIENT)/go.mod pins.
GOBIN := $(CURDIR)/build/bin
# Go's official install puts it here; a shell that did not add it to PATH
# (CI's, cron's) still finds it.
export PATH := $(PATH):/usr/local/go/bin

.PHONY: run test setup lint typecheck generate check-generated unit service e2e chaos fuzz bench

# Running needs Python only; buf (Node) is for linting the protos.
run: $(VENV)/.installed
	$(BIN)/htk run

test: setup lint typecheck check-generated
	$(BIN)/pytest

setup: $(VENV)/.installed $(BUF) $(TS_CLIENT)/node_modules/.installed $(GOBIN)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# `npm ci` rejects the lock file over the other platforms' optional buf binaries.
$(BUF): package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

# Installs the client's packages and builds it (dist/, by its prepare script).
$(TS_CLIENT)/node_modules/.installed: $(TS_CLIENT)/package.json $(TS_CLIENT)/package-lock.json
	npm ci --prefix $(TS_CLIENT) --no-audit --no-fund --loglevel=error
	touch $@

# The code generators, and every module the Go client and its tests need.
$(GOBIN)/.installed: $(GO_CLIENT)/go.mod $(GO_CLIENT)/go.sum
	cd $(GO_CLIENT) && GOBIN=$(GOBIN) go install tool && go mod download
	touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BUF) lint
	cd $(GO_CLIENT) && go vet ./...

typecheck: setup
	$(BIN)/mypy

# Regenerates gen/, the clients' code and the Envoy descriptor from protos/.
generate: setup
	scripts/generate.sh

# Fails when gen/, the clients' code or the Envoy descriptor is stale against protos/.
check-generated: setup
	rm -rf build/generated && mkdir -p build/generated
	scripts/generate.sh build/generated
	diff -r -x __pycache__ gen build/generated/gen
	diff -r $(TS_CLIENT)/src/gen build/generated/$(TS_CLIENT)/src/gen
	diff -r $(GO_CLIENT)/gen build/generated/$(GO_CLIENT)/gen
	cmp envoy/process_service.binpb build/generated/envoy/process_service.binpb
	cmp docs/openapi.json build/generated/docs/openapi.json
	@echo "generated code is current"

unit: setup
	$(BIN)/pytest tests/unit

service: setup
	$(BIN)/pytest tests/service

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
