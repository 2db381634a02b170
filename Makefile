# The two commands a new user needs (README): `make demo` and `make test`.
SHELL := /bin/bash
VENV  ?= $(CURDIR)/.venv
BIN   := $(VENV)/bin
export RADFLOW_VENV := $(VENV)

.PHONY: setup demo demo-down test test-fast lint clean help

help:
	@echo "make demo       set up, start the 'demo' site, synthesize and push 5 CT studies"
	@echo "make demo-down  stop the demo site"
	@echo "make test       set up, then run the whole test suite (real Orthanc + Prefect)"
	@echo "make setup      install Debian packages (when missing) and the virtual environment"
	@echo "make lint       ruff over the whole repository (part of make test)"

setup:
	@scripts/setup.sh

demo: setup
	@scripts/demo.sh

demo-down:
	@$(BIN)/radflow site down --site demo

lint: setup
	@$(BIN)/ruff check .

test: setup lint
	@$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	@$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
