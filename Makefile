# The two commands a new user needs (README): `make demo` and `make test`.
SHELL := /bin/bash
VENV  ?= $(CURDIR)/.venv
BIN   := $(VENV)/bin
export RADFLOW_VENV := $(VENV)

.PHONY: setup demo demo-site demo-down test test-fast lint clean help

help:
	@echo "make demo       set up, start the 'demo' site (5 CT studies, pipeline, a review), then a"
	@echo "                hub and a second site 'demo-b', and run a cross-site count"
	@echo "make demo-site  the single-site part only"
	@echo "make demo-down  stop the demo sites and the hub"
	@echo "make test       set up, then run the whole test suite (real Orthanc + Prefect)"
	@echo "make setup      install Debian packages (when missing) and the virtual environment"
	@echo "make lint       ruff over the whole repository (part of make test)"

setup:
	@scripts/setup.sh

demo: setup
	@scripts/demo.sh

demo-site: setup
	@RADFLOW_DEMO_FEDERATED=0 scripts/demo.sh

demo-down:
	@$(BIN)/radflow site down --site demo
	@$(BIN)/radflow site list --json | grep -q '"demo-b"' && $(BIN)/radflow site down --site demo-b || true
	@$(BIN)/radflow hub down

lint: setup
	@$(BIN)/ruff check .

# the suite runs in PYTEST_WORKERS processes (0: in this one), a module's tests in one of them:
# its module fixtures (a hub and three sites) start once; each process has its own home
PYTEST_WORKERS ?= 2

test: setup lint
	@$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: setup
	@$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
