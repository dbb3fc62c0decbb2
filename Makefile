# NeuroNova: two commands on a fresh machine.
#   make up    install what is missing, start the platform with demo data on loopback
#   make test  install what is missing, run the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EXTRAS := services,notebook,deploy,postgres,ai,test
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)

.PHONY: up down status test test-fast bench bench-quick deps system-deps python-deps node-deps viewer clean

up: deps node-deps viewer
	$(VENV)/bin/neuronova up

down:
	$(VENV)/bin/neuronova down

status:
	$(VENV)/bin/neuronova status

test: deps node-deps viewer
	$(PY) -m pytest $(PYTEST_ARGS)

# Unit tests only (no processes started).
test-fast: deps
	$(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)

# Every runnable benchmark in benchmarks/ (tests/test_project.py checks that none is left
# out), each printing JSON with its baseline. About 45 minutes (the soak alone serves 2 million
# frame requests); `make bench-quick` (QUICK=1)
# runs each one short, as a smoke test, in a few minutes.
bench: deps viewer
	scripts/install-system-deps.sh wrk
	$(PY) benchmarks/proxy_overhead.py $(if $(QUICK),--duration 2 --warmup 1 --connections 8 --frames 32)
	$(PY) benchmarks/htj2k.py $(if $(QUICK),--frames 4 --repeat 1)
	$(PY) benchmarks/load_series.py $(if $(QUICK),--size small --repeats 1 --concurrency 8)
	$(PY) benchmarks/transcode.py $(if $(QUICK),--size small --repeat 1)
	$(PY) benchmarks/ingest.py $(if $(QUICK),--size small --repeat 1)
	$(PY) benchmarks/soak.py $(if $(QUICK),--requests 40000 --size small --cases 1)
	$(PY) benchmarks/patients.py $(if $(QUICK),--patients 30)
	$(PY) benchmarks/notebook_load.py $(if $(QUICK),--repeats 1)
	$(PY) benchmarks/dashboard.py $(if $(QUICK),--size small --repeats 1)
	$(PY) benchmarks/inference.py $(if $(QUICK),--size small --cases 1 --steps 20 --train-cases 2 --gate-thresholds-off)
	$(PY) benchmarks/frames.py $(if $(QUICK),--duration 1 --warmup 0 --rounds 1 --connections 8)

bench-quick:
	$(MAKE) bench QUICK=1

deps: system-deps python-deps

system-deps:
	@scripts/install-system-deps.sh

python-deps: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0  # the CPU build; before the `ai` extra asks for torch
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	@rm -f $(VENV)/.installed-*
	@touch $@

# The independent FHIR server the patient-chain tests also run against (Medplum's
# fhir-router, versions pinned in tests/fhir_server/package-lock.json); installed once.
FHIR_NODE := tests/fhir_server
# configurable-http-proxy for JupyterHub (hub/package-lock.json).
HUB_NODE := hub
node-deps: $(FHIR_NODE)/node_modules/.package-lock.json $(HUB_NODE)/node_modules/.package-lock.json

$(HUB_NODE)/node_modules/.package-lock.json: $(HUB_NODE)/package.json $(HUB_NODE)/package-lock.json
	@command -v npm >/dev/null || { echo 'error: npm is missing: install Debian npm (or nodejs from NodeSource, which brings it)' >&2; exit 1; }
	npm ci --prefix $(HUB_NODE) --no-audit --no-fund
	@touch $@

$(FHIR_NODE)/node_modules/.package-lock.json: $(FHIR_NODE)/package.json $(FHIR_NODE)/package-lock.json
	@command -v npm >/dev/null || { echo 'error: npm is missing: install Debian npm (or nodejs from NodeSource, which brings it)' >&2; exit 1; }
	npm ci --prefix $(FHIR_NODE) --no-audit --no-fund
	@touch $@

# OHIF's prebuilt viewer (npm @ohif/app's dist/, pinned in ohif/package-lock.json), re-based
# for /pacs-viewer/ into ohif/build/ (idempotent: nothing to do when it is done).
OHIF_NODE := ohif
viewer: $(OHIF_NODE)/node_modules/.package-lock.json python-deps
	$(PY) -m neuronova_lib.stack.ohif

$(OHIF_NODE)/node_modules/.package-lock.json: $(OHIF_NODE)/package.json $(OHIF_NODE)/package-lock.json
	@command -v npm >/dev/null || { echo 'error: npm is missing: install Debian npm (or nodejs from NodeSource, which brings it)' >&2; exit 1; }
	npm ci --prefix $(OHIF_NODE) --ignore-scripts --no-audit --no-fund
	@touch $@

clean:
	rm -rf $(VENV) .pytest_cache
