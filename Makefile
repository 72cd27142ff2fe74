# Two commands a newcomer needs: `make run` and `make test`. Both set up what
# they need first (.venv with Python packages, node_modules with buf, the
# TypeScript client's packages, the Go client's modules and code generators).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BUF := node_modules/.bin/buf
TS_CLIENT := clients/typescript
DASHBOARD := dashboard
LIGHTHOUSE := bench/lighthouse
GO_CLIENT := clients/go
# protoc-gen-go and protoc-gen-go-grpc, at the versions $(GO_CLIENT)/go.mod pins.
GOBIN := $(CURDIR)/build/bin
# Go's official install puts it here; a shell that did not add it to PATH
# (CI's, cron's) still finds it.
export PATH := $(PATH):/usr/local/go/bin

.PHONY: run test setup tools chromium prometheus drill lint typecheck generate check-generated migration unit service e2e chaos fuzz bench

# Running needs Python only; buf (Node) is for linting the protos.
# A stack on your own machine: its webhooks may reach receivers on it too
# (a server refuses private addresses unless told otherwise).
run: $(VENV)/.installed
	HTK_WEBHOOK_ALLOW_PRIVATE=$${HTK_WEBHOOK_ALLOW_PRIVATE:-1} $(BIN)/htk run

test: setup lint typecheck check-generated
	$(BIN)/pytest

setup: tools chromium prometheus

# What building, linting and type checking need: not the browser or the
# Prometheus server, which only some tests run.
tools: $(VENV)/.installed $(BUF) $(TS_CLIENT)/node_modules/.installed $(DASHBOARD)/node_modules/.installed \
	$(GOBIN)/.installed

# The server, and the Python client that owns the `htk` command (the server
# adds `htk run` and `htk token` to it).
$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ./clients/python -e '.[dev]'
	touch $@

# `npm ci` rejects the lock file over the other platforms' optional buf binaries.
$(BUF): package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

# Installs the client's packages and builds it (dist/, by its prepare script).
$(TS_CLIENT)/node_modules/.installed: $(TS_CLIENT)/package.json $(TS_CLIENT)/package-lock.json
	npm ci --prefix $(TS_CLIENT) --no-audit --no-fund --loglevel=error
	touch $@

# esbuild and TypeScript, which build and check the dashboard (`make run`
# serves the built files committed in $(DASHBOARD)/dist, and needs no Node).
$(DASHBOARD)/node_modules/.installed: $(DASHBOARD)/package.json $(DASHBOARD)/package-lock.json
	npm ci --prefix $(DASHBOARD) --no-audit --no-fund --loglevel=error
	touch $@

# Debian's Chromium, for the dashboard's browser tests (Playwright drives it;
# its own browser download would need the internet). A machine without
# package lists gets them first.
chromium:
	@command -v chromium >/dev/null || apt-get install -y chromium || \
		{ apt-get update && apt-get install -y chromium; }

# Debian's Prometheus server, which the metrics test runs to scrape a stack
# and query a rate, as an operator's Prometheus would.
prometheus:
	@command -v prometheus >/dev/null || apt-get install -y --no-install-recommends prometheus || \
		{ apt-get update && apt-get install -y --no-install-recommends prometheus; }

# The code generators, and every module the Go client and its tests need.
$(GOBIN)/.installed: $(GO_CLIENT)/go.mod $(GO_CLIENT)/go.sum
	cd $(GO_CLIENT) && GOBIN=$(GOBIN) go install tool && go mod download
	touch $@

# The protos must not break the contract published on main (scripts/breaking.py);
# BREAKING_AGAINST=<git ref or folder> compares with another version instead.
lint: tools
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BUF) lint
	cd $(GO_CLIENT) && go vet ./...
	$(BIN)/python scripts/breaking.py $(if $(BREAKING_AGAINST),--against $(BREAKING_AGAINST))

typecheck: tools
	$(BIN)/mypy
	npm --prefix $(DASHBOARD) run --silent typecheck

# Regenerates gen/, the clients' code and the Envoy descriptor from protos/,
# the dashboard's built files from $(DASHBOARD)/src and the client, the
# configuration table in docs/operating.md from server/settings.py, and the
# tables of docs/api.md (RPCs and who may call them, errors, limits) from the protos.
generate: tools
	scripts/generate.sh
	node $(DASHBOARD)/build.mjs
	$(BIN)/python scripts/configuration_table.py docs/operating.md
	$(BIN)/python scripts/api_tables.py docs/api.md

# Fails when gen/, the clients' code or the Envoy descriptor is stale against
# protos/, the dashboard's built files against their sources, the configuration
# table in docs/operating.md against server/settings.py, or docs/api.md's tables
# against the protos.
check-generated: tools
	rm -rf build/generated && mkdir -p build/generated
	scripts/generate.sh build/generated
	diff -r -x __pycache__ gen build/generated/gen
	diff -r -x __pycache__ clients/python/src/htk build/generated/clients/python/src/htk
	diff -r $(TS_CLIENT)/src/gen build/generated/$(TS_CLIENT)/src/gen
	diff -r $(GO_CLIENT)/gen build/generated/$(GO_CLIENT)/gen
	cmp envoy/process_service.binpb build/generated/envoy/process_service.binpb
	cmp docs/openapi.json build/generated/docs/openapi.json
	cmp server/domain/declared.py build/generated/server/domain/declared.py
	node $(DASHBOARD)/build.mjs build/generated/$(DASHBOARD)/dist
	diff -r $(DASHBOARD)/dist build/generated/$(DASHBOARD)/dist
	cp docs/operating.md build/generated/docs/operating.md
	$(BIN)/python scripts/configuration_table.py build/generated/docs/operating.md
	diff docs/operating.md build/generated/docs/operating.md
	cp docs/api.md build/generated/docs/api.md
	$(BIN)/python scripts/api_tables.py build/generated/docs/api.md build/generated/envoy/process_service.binpb
	diff docs/api.md build/generated/docs/api.md
	@echo "generated code is current"

# A new migration, autogenerated from what the models changed:
# make migration NAME=add_watchers writes server/storage/migrations/versions/0004_add_watchers.py.
migration: tools
	@test -n "$(NAME)" || { echo "usage: make migration NAME=what_it_does" >&2; exit 2; }
	$(BIN)/python scripts/new_migration.py '$(NAME)'

unit: tools
	$(BIN)/pytest tests/unit

service: tools
	$(BIN)/pytest tests/service

e2e: setup
	$(BIN)/pytest tests/e2e

# Fault injection against the real stack (also part of `make test`).
chaos: setup
	$(BIN)/pytest tests/chaos

# Schemathesis and Hypothesis at full strength; `make test` runs fewer cases.
fuzz: setup
	HTK_FUZZ_EXAMPLES=1000 $(BIN)/pytest tests/fuzz

# The failover drill (bench/drill.py), not a test: etcd, Patroni with two
# PostgreSQL members, two htk instances, the primary killed twice; prints the
# four figures and writes them into docs/benchmarks.md. etcd (Debian's
# etcd-server, with apt-get, so as root) is installed when missing, as
# Chromium is for the browser tests; Patroni (PyPI) into a virtualenv of its
# own on Debian's Python, which PostgreSQL's OS user, who runs it, may read.
PATRONI_PYTHON ?= /usr/bin/python3
PATRONI_VENV := build/patroni
drill: setup $(PATRONI_VENV)/.installed
	@command -v etcd >/dev/null || apt-get install -y --no-install-recommends etcd-server || \
		{ apt-get update && apt-get install -y --no-install-recommends etcd-server; }
	$(BIN)/python -m bench.drill

$(PATRONI_VENV)/.installed:
	$(PATRONI_PYTHON) -m venv $(PATRONI_VENV)
	$(PATRONI_VENV)/bin/pip install --quiet 'patroni[etcd3,psycopg3]==4.1.5'
	touch $@

# Benchmarks, not tests: prints a table and writes docs/benchmarks.md.
# BENCH_PROCESSES=20000 make bench is the quick run; the default seeds 1M.
bench: setup $(LIGHTHOUSE)/node_modules/.installed
	$(BIN)/python -m bench

# Lighthouse, which the bench runs on the dashboard (12.2.3: 13 wants Node 22);
# apart from the dashboard's tools, so that building it does not fetch it.
$(LIGHTHOUSE)/node_modules/.installed: $(LIGHTHOUSE)/package.json $(LIGHTHOUSE)/package-lock.json
	npm ci --prefix $(LIGHTHOUSE) --no-audit --no-fund --loglevel=error
	touch $@
