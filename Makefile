# Development tasks.  Everything installs into the checkout: .venv/ (Python) and .node/ (dynalite).
#
#   make test                      pytest against moto, then against dynalite
#   make test PYTEST_ARGS='-k ttl' extra pytest arguments
#   DYNAMODB_ENDPOINT_URL=http://127.0.0.1:8000 make test   one run against that endpoint
#   make test-browser              the example apps in headless Chromium (installs `chromium`)
#   make example [APP=counter] [ARGS="--port 3100 --moto-port 8100"]   only the examples' packages
#   make lint | make bench [QUICK=1] | make clean
#   make soak [SOAK_REQUESTS=2000] [SOAK_SEED=2]   fault soak + long model/fuzz runs, moto then dynalite

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
EXAMPLES_STAMP := $(VENV)/.installed-examples
NODE_DIR := .node
NODE_STAMP := $(NODE_DIR)/.installed
DYNALITE_VERSION := ^3
APP ?= counter
ARGS ?=
PYTEST_ARGS ?=
CHROMIUM ?= /usr/bin/chromium
SOAK_REQUESTS ?= 2000
SOAK_SEED ?= 2

export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv node test test-browser lint example bench clean soak

# `make venv`: everything (tests, linters, bench, examples); `make example` needs only the
# examples' packages, so it installs only those unless everything is installed already.
venv: $(VENV_STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

$(VENV_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e '.[test,examples,bench,lint,fast]'
	touch $@ $(EXAMPLES_STAMP)

$(EXAMPLES_STAMP): pyproject.toml | $(PY)
	[ $(VENV_STAMP) -nt pyproject.toml ] || $(PY) -m pip install -e '.[examples,fast]'
	touch $@

node: $(NODE_STAMP)

$(NODE_STAMP):
	npm install --prefix $(NODE_DIR) --no-audit --no-fund 'dynalite@$(DYNALITE_VERSION)'
	touch $@

test: venv node
	@if [ -n "$$DYNAMODB_ENDPOINT_URL" ]; then \
		echo "== pytest against $$DYNAMODB_ENDPOINT_URL =="; \
		$(PY) -m pytest -q $(PYTEST_ARGS); \
	else \
		rc=0; \
		echo "== pytest against moto =="; \
		DYNAMO_TEST_SERVER=moto $(PY) -m pytest -q $(PYTEST_ARGS) || rc=1; \
		echo "== pytest against dynalite =="; \
		DYNAMO_TEST_SERVER=dynalite $(PY) -m pytest -q $(PYTEST_ARGS) || rc=1; \
		exit $$rc; \
	fi

# The fault soak (tests/soak.py) at SOAK_REQUESTS per server and transport, printing each report,
# and the model-based and fuzz tests with the large hypothesis profile.
soak: venv node
	@rc=0; for server in moto dynalite; do \
		echo "== soak against $$server =="; \
		DYNAMO_TEST_SERVER=$$server SOAK_REQUESTS=$(SOAK_REQUESTS) SOAK_SEED=$(SOAK_SEED) \
		HYPOTHESIS_PROFILE=soak $(PY) -m pytest -q -s -p no:cacheprovider \
			tests/test_soak.py tests/test_model.py tests/test_fuzz.py $(PYTEST_ARGS) || rc=1; \
	done; exit $$rc

# Headless Chromium (the Debian package) driven over the DevTools protocol, against one moto
# server; screenshots land in tests/browser/screenshots/.
test-browser: venv
	@if [ ! -x "$(CHROMIUM)" ]; then \
		echo "== installing chromium (Debian package) =="; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update && apt-get install -y chromium </dev/null; \
	fi
	@echo "== browser tests (chromium, moto) =="
	CHROMIUM=$(CHROMIUM) DYNAMO_TEST_SERVER=moto $(PY) -m pytest -q tests/browser $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict asgi_dynamo_session examples

example: $(EXAMPLES_STAMP)
	$(PY) -m examples.serve $(APP) $(ARGS)

bench: venv node
	$(PY) -m benchmarks $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) $(NODE_DIR) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
