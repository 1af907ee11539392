# Two commands matter: `make run` serves the API, `make test` proves it.
SHELL := /bin/bash
HOST ?= 127.0.0.1
PORT ?= 8000
PYTHON ?= python3

# Use uv from PATH; otherwise install it once into .tools/ (no root, no global changes).
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)

# The Kubernetes release the manifests must be valid for (kubernetes-validate ships the
# schemas of each release, so the check needs no network).
KUBERNETES_VERSION ?= 1.33.0
# kustomization.yaml is kustomize's own format, not a Kubernetes resource.
K8S_MANIFESTS := $(filter-out deploy/kubernetes/kustomization.yaml,$(wildcard deploy/kubernetes/*.yaml))

.PHONY: run test lint lint-deploy fmt install install-dev migrate openapi bench clean

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
	@$(MAKE) --no-print-directory lint-deploy

# Container and deployment files, checked without a Docker daemon or a cluster:
# hadolint on the Dockerfile, the Compose Specification schema (bundled with
# check-jsonschema) on compose.yaml, the Kubernetes OpenAPI schemas on the manifests.
lint-deploy: install-dev
	$(UV) run --frozen hadolint --config .hadolint.yaml Dockerfile
	$(UV) run --frozen check-jsonschema --builtin-schema vendor.compose-spec compose.yaml
	$(UV) run --frozen kubernetes-validate --strict --quiet \
		--kubernetes-version $(KUBERNETES_VERSION) $(K8S_MANIFESTS)

fmt: install-dev
	$(UV) run --frozen ruff check --fix src tests bench
	$(UV) run --frozen ruff format src tests bench

bench: install-dev
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(UV) run --frozen python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf .venv .tools .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov
