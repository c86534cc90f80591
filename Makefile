# ikedlab — the commands a newcomer needs. Each target does its own setup on a fresh Debian 12 machine.
PLATFORM ?= openbsd
NAME ?= default
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
IKEDLAB := $(VENV)/bin/ikedlab
ARTIFACTS ?= artifacts
PYTEST_ARGS ?=
SCENARIO_ARGS ?=

.PHONY: setup host-setup lab-up lab-down status test test-fast test-scenarios bench lint clean

setup: host-setup $(VENV)/.installed

host-setup:
	@bash scripts/setup-host.sh

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	@touch $@

lab-up: setup
	$(IKEDLAB) --name $(NAME) up --platform $(PLATFORM)

lab-down: setup
	$(IKEDLAB) --name $(NAME) down

status: setup
	$(IKEDLAB) --name $(NAME) status

test: setup test-fast test-scenarios

test-fast: setup
	$(PY) -m pytest tests -q --junitxml=$(ARTIFACTS)/junit-fast.xml $(PYTEST_ARGS)

test-scenarios: setup
	$(PY) -m pytest scenarios -v --platform linux --artifacts $(ARTIFACTS)/scenarios \
		--junitxml=$(ARTIFACTS)/junit-scenarios.xml $(PYTEST_ARGS) $(SCENARIO_ARGS)

bench: setup
	$(PY) -m lab.bench

lint: setup
	$(VENV)/bin/ruff check lab tests scenarios

clean:
	rm -rf $(VENV) $(ARTIFACTS) *.egg-info
