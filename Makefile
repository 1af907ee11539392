# Two commands matter: `make run` serves the API, `make test` proves it.
SHELL := /bin/bash
HOST ?= 127.0.0.1
PORT ?= 8000
PYTHON ?= python3

# Use uv from PATH; otherwise install it once into .tools/ (no root, no global changes).
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)

.PHONY: run test lint fmt install install-dev migrate openapi bench clean

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv

UV_TOOL := $(if $(filter .tools/bin/uv,$(UV)),.tools/bin/uv)

# `install` is the runtime only (what `make run` needs); `install-dev` adds the dev group
# (test and lint tools). `--inexact` keeps whatever else is installed, so `make run` after
# `make test` does not uninstall the test tools.
install: $(UV_TOOL) .venv/.synced-runtime

install-dev: $(UV_TOOL) .venv/.synced-dev

.venv/.synced-runtime: pyproject.toml uv.lock
	$(UV) sync --frozen --no-dev --inexact
	@touch $@

.venv/.synced-dev: pyproject.toml uv.lock
	$(UV) sync --frozen
	@touch $@ .venv/.synced-runtime

run: install
	$(UV) run --frozen --no-sync taskmanager serve --host $(HOST) --port $(PORT)

migrate: install
	$(UV) run --frozen --no-sync taskmanager migrate

openapi: install
	$(UV) run --frozen --no-sync taskmanager openapi

test: install-dev
	$(UV) run --frozen pytest --cov --cov-report=term $(PYTEST_ARGS)

lint: install-dev
	$(UV) run --frozen ruff check src tests bench
	$(UV) run --frozen ruff format --check src tests bench
	$(UV) run --frozen mypy
	$(UV) run --frozen lint-imports

fmt: install-dev
	$(UV) run --frozen ruff check --fix src tests bench
	$(UV) run --frozen ruff format src tests bench

bench: install-dev
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(UV) run --frozen python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf .venv .tools .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov
