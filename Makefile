# NeuroNova: two commands on a fresh machine.
#   make up    install what is missing, start the platform with demo data on loopback
#   make test  install what is missing, run the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EXTRAS := services,notebook,postgres,test
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)

.PHONY: up down status test test-fast bench deps system-deps python-deps clean

up: deps
	$(VENV)/bin/neuronova up

down:
	$(VENV)/bin/neuronova down

status:
	$(VENV)/bin/neuronova status

test: deps
	$(PY) -m pytest $(PYTEST_ARGS)

# Unit tests only (no processes started).
test-fast: deps
	$(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)

bench: deps
	scripts/install-system-deps.sh wrk
	$(PY) benchmarks/proxy_overhead.py

deps: system-deps python-deps

system-deps:
	@scripts/install-system-deps.sh

python-deps: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	@rm -f $(VENV)/.installed-*
	@touch $@

clean:
	rm -rf $(VENV) .pytest_cache
