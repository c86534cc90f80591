# ikedlab — the commands a newcomer needs. Each target does its own setup on a fresh Debian 12 machine.
PLATFORM ?= openbsd
NAME ?= default
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
IKEDLAB := $(VENV)/bin/ikedlab
# SHARD=i/n: the i-th of n disjoint parts of a suite (whole modules, cells, a catalogue case on a cell; lab/shard.py),
# its artifacts apart from the other shards'; SHARD_DURATIONS: earlier runs' results weigh the parts.
SHARD ?=
SHARD_DURATIONS ?=
SHARD_PLAN ?=
ARTIFACTS ?= $(if $(SHARD),artifacts/shard-$(subst /,-of-,$(SHARD)),artifacts)
SHARD_ARGS = $(if $(SHARD),--shard $(SHARD)$(if $(SHARD_DURATIONS), --shard-durations $(SHARD_DURATIONS))$(if \
	$(SHARD_PLAN), --shard-plan $(SHARD_PLAN)))
PYTEST_ARGS ?=
SCENARIO_ARGS ?=
# `make test` leaves out the scenarios of minutes (marker nightly); `make nightly` runs every one.
SCENARIO_MARKS ?= not nightly

.PHONY: setup host-setup lab-up lab-down status test test-fast test-scenarios test-faults test-installed test-fresh check-secrets test-nightly report nightly nightly-openbsd-current interop catalogue bench lint clean

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

# Every suite runs even when the first fails, and the HTML report is written either way; the exit status is
# the first failure's.
test: setup
	@rc=0; $(MAKE) --no-print-directory test-fast || rc=$$?; \
	$(MAKE) --no-print-directory test-scenarios || { s=$$?; [ $$rc -ne 0 ] || rc=$$s; }; \
	$(MAKE) --no-print-directory test-faults || { s=$$?; [ $$rc -ne 0 ] || rc=$$s; }; \
	$(MAKE) --no-print-directory report; \
	$(MAKE) --no-print-directory check-secrets || { s=$$?; [ $$rc -ne 0 ] || rc=$$s; }; exit $$rc

test-fast: setup
	$(PY) -m pytest tests -q --junitxml=$(ARTIFACTS)/junit-fast.xml $(SHARD_ARGS) $(PYTEST_ARGS)

test-scenarios: setup
	$(PY) -m pytest scenarios -v --platform linux --artifacts $(ARTIFACTS)/scenarios -m "$(SCENARIO_MARKS)" \
		--junitxml=$(ARTIFACTS)/junit-scenarios.xml $(SHARD_ARGS) $(PYTEST_ARGS) $(SCENARIO_ARGS)

test-faults: setup
	$(PY) -m pytest faults -v -m fault --junitxml=$(ARTIFACTS)/junit-faults.xml $(SHARD_ARGS) $(PYTEST_ARGS)

# ikedlab as a user installs it: the wheel in a fresh venv, from an empty folder, builds an image and brings a
# lab up (scripts/check-installed.sh says how far it got). Minutes: in `make nightly`.
test-installed: setup
	@bash scripts/check-installed.sh

# The README's first command on a fresh Debian 12 machine: a minimal root made with mmdebstrap, `make lab-up
# PLATFORM=linux` run in it as far as a root file system allows (no daemons), and how far it got. Minutes.
test-fresh:
	@bash scripts/test-fresh.sh

# No SA key the guests' kernels held and no PSK of the scenario run in artifacts/, the run's labs and
# snapshots or a bundle; nothing there readable by others (lab/leakcheck.py). After the scenarios.
check-secrets: setup
	$(PY) -m lab.leakcheck $(ARTIFACTS)

# artifacts/report.html: verdicts, durations, the lab's picture, versions, links to each scenario's evidence.
report: setup
	$(PY) -m lab.report $(ARTIFACTS)

# Nightly CI: cold images (rebuilt from the package registry), every suite, the interop matrix, the
# regression catalogue on every cell, the report.
# With SHARD=i/n one plan deals every suite's modules and cells (lab/shard.py) and this machine runs part i;
# `ikedlab report --merge` joins the parts (docs/nightly.md).
NIGHTLY_PLAN = $(or $(SHARD_PLAN),$(ARTIFACTS)/shard-plan.json)
nightly: setup
	$(IKEDLAB) image build --platform linux --rebuild
	$(if $(SHARD),$(if $(SHARD_PLAN),,$(PY) -m lab.nightly plan --shards $(SHARD) -o $(NIGHTLY_PLAN)$(if \
		$(SHARD_DURATIONS), --durations $(SHARD_DURATIONS))))
	@rc=0; export ARTIFACTS=$(ARTIFACTS) $(if $(SHARD),SHARD_PLAN=$(NIGHTLY_PLAN)); \
	$(MAKE) --no-print-directory test-fast || rc=$$?; \
	$(MAKE) --no-print-directory test-scenarios SCENARIO_MARKS= || { s=$$?; [ $$rc -ne 0 ] || rc=$$s; }; \
	$(MAKE) --no-print-directory test-faults || { s=$$?; [ $$rc -ne 0 ] || rc=$$s; }; \
	$(MAKE) --no-print-directory interop || { s=$$?; [ $$rc -ne 0 ] || rc=$$s; }; \
	$(MAKE) --no-print-directory nightly-openbsd-current || { s=$$?; [ $$rc -ne 0 ] || rc=$$s; }; \
	$(MAKE) --no-print-directory test-nightly || { s=$$?; [ $$rc -ne 0 ] || rc=$$s; }; \
	$(MAKE) --no-print-directory test-installed || { s=$$?; [ $$rc -ne 0 ] || rc=$$s; }; \
	$(MAKE) --no-print-directory test-fresh || { s=$$?; [ $$rc -ne 0 ] || rc=$$s; }; \
	$(MAKE) --no-print-directory catalogue || { s=$$?; [ $$rc -ne 0 ] || rc=$$s; }; \
	$(MAKE) --no-print-directory report; \
	$(MAKE) --no-print-directory check-secrets || { s=$$?; [ $$rc -ne 0 ] || rc=$$s; }; exit $$rc

# The nightly machinery against real labs (nightly/): two shards of test-scenarios merged = one whole run.
test-nightly: setup
	$(PY) -m pytest nightly -v --junitxml=$(ARTIFACTS)/junit-nightly.xml $(SHARD_ARGS) $(PYTEST_ARGS)

# OpenBSD -current, what iked's developers run: an image of the current snapshot (snapshots/amd64, verified
# with the next release's key, one image per build date), then every scenario on it. Where the media cannot
# be fetched (offline, no key for a newer snapshot) it says why in one line and is skipped, not failed.
nightly-openbsd-current: setup
	@if $(IKEDLAB) image build --platform openbsd --release snapshots; then \
		$(MAKE) --no-print-directory test-scenarios SCENARIO_MARKS= \
			SCENARIO_ARGS="--platform openbsd --release snapshots $(SCENARIO_ARGS) \
			--junitxml=$(ARTIFACTS)/junit-openbsd-current.xml --artifacts $(ARTIFACTS)/openbsd-current"; \
	else \
		echo "nightly: OpenBSD -current not tested: no snapshot image (the reason is the line above)"; \
	fi

BENCH ?=
bench: setup
	$(PY) -m lab.bench $(BENCH)

# Scenarios 1-5 over the interop matrix (lab/interop.yaml): iked 7.2 <-> 7.4, iked <-> strongSwan, ...
# One lab per cell, one cell at a time; reports in $(ARTIFACTS)/interop/<cell>/. Long: not part of `make test`.
INTEROP_ARGS ?=
interop: setup
	$(PY) -m lab.interop --out $(ARTIFACTS)/interop $(SHARD_ARGS) $(INTEROP_ARGS)

# The iked regression catalogue (scenarios/cases/, docs/catalogue.md): cases x cells, one lab per cell.
# CASES="psk transport" runs those cases on the default cell; CELLS="iked-7.2 iked-7.4" picks cells
# (lab/catalogue/cells.yaml). JUnit and evidence per cell in $(ARTIFACTS)/catalogue/<cell>/, the matrix in
# $(ARTIFACTS)/catalogue/matrix.txt and in the HTML report. Long: not part of `make test` (it runs four cases).
# SHARD=i/n runs the i-th of n parts of cases x cells (one case on one cell is the unit dealt).
CASES ?=
CELLS ?=
catalogue: setup
	@rc=0; $(PY) -m lab.catalogue.cells --out $(ARTIFACTS)/catalogue --cases "$(CASES)" --cells "$(CELLS)" \
		$(SHARD_ARGS) || rc=$$?; \
	$(MAKE) --no-print-directory report; exit $$rc

lint: setup
	$(VENV)/bin/ruff check lab tests scenarios faults nightly

clean:
	rm -rf $(VENV) $(ARTIFACTS) *.egg-info
