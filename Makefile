# records-service: every workflow in one place. `make run` and `make test` need nothing set up
# by hand: the local PostgreSQL (scripts/localpg.sh) lives in .pgdata/ on port 55432.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ROWS ?= 100000
BIN := target/release/records-service
LOCALPG := scripts/localpg.sh
WITH_DB := eval "$$($(LOCALPG) env)" &&

.PHONY: build run stop seed migrate test test-stack lint fmt bench bench-http bench-observability bench-syscalls db \
	run-server-local run-server-docker test-docker run-postgres-background \
	run-unit-tests run-integration-tests run-api-tests

build:
	cargo build --release

# The project's own PostgreSQL (installed with apt-get when no server binaries are found).
db:
	$(LOCALPG) start

migrate: build db
	$(WITH_DB) $(BIN) migrate

# Build, start PostgreSQL, migrate, seed ROWS (100,000) rows into an empty table, serve on
# 127.0.0.1:8000 in the foreground (Ctrl-C stops the service; `make stop` stops PostgreSQL).
run: build db
	$(WITH_DB) $(BIN) seed --rows $(ROWS) --if-empty
	$(WITH_DB) exec $(BIN) serve

stop:
	$(LOCALPG) stop

# Top the table up to ids 1..ROWS.
seed: build db
	$(WITH_DB) $(BIN) seed --rows $(ROWS)

# Every test: unit, integration and API. The tests start their own throwaway PostgreSQL
# (or use DATABASE_URL / POSTGRES_DB_* when set).
test:
	cargo test

# rustfmt and clippy; shellcheck on every shell script, found by name and shebang
# (scripts/lint-scripts.sh); ruff on every Python file (ruff.toml); then the crate's layout
# rules (scripts/check-layout.py). Needs shellcheck and ruff (checked first, before the build).
lint:
	@command -v shellcheck >/dev/null || { echo "lint: shellcheck is missing (Debian/Ubuntu: apt-get install shellcheck)" >&2; exit 1; }
	@command -v ruff >/dev/null || { echo "lint: ruff is missing (pip install ruff)" >&2; exit 1; }
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	scripts/lint-scripts.sh
	ruff check .
	python3 scripts/check-layout.py

fmt:
	cargo fmt --all

# The headline benchmark against xitca-web, axum and the original's stack (see benches/README.md).
bench: build db
	$(WITH_DB) $(BIN) migrate
	$(WITH_DB) scripts/bench.sh

# What observability costs, same run: metrics on (the default) against METRICS=off, and
# ACCESS_LOG=all. BASE_BIN=path adds another build (e.g. the previous commit's) as ours-base.
bench-observability: build db
	$(WITH_DB) $(BIN) migrate
	$(WITH_DB) SYSTEMS=ours,ours-nometrics,ours-access$${BASE_BIN:+,ours-base} scripts/bench.sh

# What access control costs, same run: AUTH_REQUIRED=off (the default) against
# AUTH_REQUIRED=all with a valid HS256 token on every request. BASE_BIN=path adds another build.
.PHONY: bench-auth
bench-auth: build db
	$(WITH_DB) $(BIN) migrate
	$(WITH_DB) SYSTEMS=ours,ours-auth$${BASE_BIN:+,ours-base} scripts/bench.sh

# System calls, context switches and CPU per request, ours against xitca-web (perf stat; root).
# BASE_BIN=path adds another build as ours-base.
bench-syscalls: build db
	$(WITH_DB) scripts/bench-syscalls.sh

# Our HTTP core against may_minihttp on a fixed response.
bench-http:
	cargo build --release --examples
	HTTP_NO_BUILD=1 scripts/bench-http.sh

# The original's target names.
run-server-local: run
run-postgres-background: db
run-server-docker:
	scripts/docker-up.sh
# The Docker deployment, end to end (needs root and a Docker engine, installed if missing).
test-docker:
	scripts/test-docker.sh
run-unit-tests:
	cargo test --lib --bins
run-integration-tests:
	cargo test --test pg
run-api-tests:
	cargo test --test api --test http_core

# The monitoring side (docker/monitoring/: Prometheus config, Grafana dashboard) against a real
# Prometheus scraping the service under wrk load (needs prometheus, promtool, wrk; Debian:
# apt-get install prometheus wrk). BIN=target/debug/records-service for a debug build.
.PHONY: test-monitoring
test-monitoring: seeded-100k
	$(WITH_DB) BIN=$(BIN) scripts/test-monitoring.sh

# The release binary's connection stacks: the routes' database requests stay within one 4 KiB
# page (STACK_DEBUG=1 peaks under wrk and curl: what a connection's stack keeps resident).
test-stack: seeded-100k
	$(WITH_DB) BIN=$(BIN) ROWS=100000 scripts/test-stack.sh

# The release binary and the local PostgreSQL, migrated, with ids 1..100,000 when it was empty.
.PHONY: seeded-100k
seeded-100k: build db
	$(WITH_DB) $(BIN) migrate
	$(WITH_DB) $(BIN) seed --rows 100000 --if-empty

# The browser console (static/) in headless Chromium: the forms, the live metrics panel, a 503
# without a database, metrics on METRICS_ADDR; saves docs/console.png. Needs the Debian packages
# chromium, chromium-driver and python3-selenium.
.PHONY: test-console
test-console: build db
	$(WITH_DB) BIN=$(BIN) python3 scripts/test-console.py

# The API contract, checked by an outside tool: schemathesis generates requests from
# /openapi.json and checks the real service's answers against it (scripts/contract.sh).
.PHONY: contract
contract: build db
	$(WITH_DB) $(BIN) migrate
	$(WITH_DB) BIN=$(BIN) scripts/contract.sh
